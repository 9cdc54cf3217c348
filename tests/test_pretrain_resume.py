"""Pretraining checkpoints resume mid-epoch without repeating or skipping data."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from tiny_models import pretrain_config, quiet_trainer, shuffled_lm_data

from elmo_pipeline.data.lm_datamodule import LMDataModule
from elmo_pipeline.models.config import BiLMConfig
from elmo_pipeline.modules.lstm import bf16_supported
from elmo_pipeline.systems.pretrain import PretrainSystem

# bf16 training is refused where the CPU has no native bf16 matrix multiplies (test_bf16_is_refused_...)
needs_bf16 = pytest.mark.skipif(not bf16_supported(torch.device("cpu")), reason="this CPU has no native bf16 matmul")


class RecordBatches(Callback):
    """Records the first word id of every sentence of every training batch, in order."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, ...]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.seen.append(tuple(batch["forward_targets"][:, 0].tolist()))


def _corpus(tmp_path, n=120):
    path = tmp_path / "corpus.txt"
    path.write_text("".join(f"w{i} is sentence number {i % 7} .\n" for i in range(n)))
    return str(path)


def _fit(
    tmp_path,
    corpus,
    recorder,
    ckpt_dir,
    max_steps=-1,
    ckpt_path=None,
    world_size_devices=1,
    bilm=None,
    system_kwargs=None,
    precision="32-true",
):
    L.seed_everything(0)
    dm = shuffled_lm_data(corpus, tmp_path)
    config = pretrain_config(**(bilm or {}))
    kwargs = {"optimizer": "adam", "lr": 1e-3, **(system_kwargs or {})}
    system = PretrainSystem(config, vocab_size=dm.vocab_size, **kwargs)
    checkpoint = ModelCheckpoint(dirpath=ckpt_dir, every_n_train_steps=1, save_last=True, save_top_k=0)
    trainer = quiet_trainer(
        tmp_path,
        enable_checkpointing=True,
        max_epochs=1,
        max_steps=max_steps,
        devices=1,
        precision=precision,
        callbacks=[recorder, checkpoint],
    )
    trainer.fit(system, datamodule=dm, ckpt_path=ckpt_path)
    return system


@pytest.mark.parametrize("stop_after", [1, 5, 11])
def test_resume_mid_epoch_sees_each_batch_once(tmp_path, stop_after):
    corpus = _corpus(tmp_path)
    reference = RecordBatches()
    full = _fit(tmp_path, corpus, reference, tmp_path / "ref")
    assert len(reference.seen) == 30  # 120 sentences / batch 4: the epoch is complete
    assert sorted(i for batch in reference.seen for i in batch) == sorted(set(i for b in reference.seen for i in b))

    first, second = RecordBatches(), RecordBatches()
    _fit(tmp_path, corpus, first, tmp_path / "run", max_steps=stop_after)
    assert len(first.seen) == stop_after
    resumed = _fit(tmp_path, corpus, second, tmp_path / "run", ckpt_path=str(tmp_path / "run" / "last.ckpt"))
    assert first.seen + second.seen == reference.seen  # same batches, same order, none repeated or skipped
    # and the weights end where the uninterrupted run ended
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, msg=f"{name} differs after resuming")


def _bf16_trainer(tmp_path, **kwargs) -> L.Trainer:
    """A quiet CPU trainer in bf16 autocast, without logs or checkpoints."""
    return quiet_trainer(tmp_path, precision="bf16-mixed", **kwargs)


@needs_bf16
def test_bf16_mixed_precision_trains(tmp_path):
    """The GPU path's bf16 autocast, exercised on CPU: the step runs and the loss stays finite."""
    corpus = _corpus(tmp_path, n=24)
    dm = LMDataModule(sources=[corpus], vocab_path=str(tmp_path / "vocab.txt"), batch_size=4, max_tokens=10)
    for clip in (3.0, None):  # clipped and unclipped: both run the fast backend's bf16 products
        config = pretrain_config(cell_clip=clip, proj_clip=clip)
        system = PretrainSystem(config, vocab_size=dm.vocab_size, optimizer="adam", lr=1e-3)
        trainer = _bf16_trainer(tmp_path, max_steps=3)
        trainer.fit(system, datamodule=dm)
        assert torch.isfinite(trainer.callback_metrics["train/loss"])
        assert system.bilm.forward_layers[0].weight_ih.dtype == torch.float32  # master weights stay fp32


FAST_RECIPES = {
    # the one-hour recipe's options: adaptive softmax, AdamW, warm-up then a decay over a known horizon
    "adaptive-adamw-linear": dict(
        bilm={"softmax": "adaptive", "adaptive_cutoffs": [8, 20]},
        system_kwargs={"optimizer": "adamw", "warmup_steps": 3, "lr_schedule": "linear", "schedule_steps": 25},
    ),
    # cosine decay, bf16 autocast, the plain (non-fast) path
    "bf16-cosine-plain": dict(
        bilm={"softmax": "adaptive", "adaptive_cutoffs": [8, 20], "fast": False},
        system_kwargs={"warmup_steps": 2, "lr_schedule": "cosine", "min_lr_ratio": 0.1, "schedule_steps": 30},
        precision="bf16-mixed",
    ),
    "bf16-sampled-fast": dict(precision="bf16-mixed"),  # the sampled softmax draws from the restored RNG
    # the one-hour recipe in bf16: adaptive softmax, the fast recurrence's bf16 backend, dropout
    "bf16-adaptive-fast": dict(
        bilm={"softmax": "adaptive", "adaptive_cutoffs": [8, 20], "dropout": 0.1},
        system_kwargs={"warmup_steps": 3, "lr_schedule": "linear", "schedule_steps": 25},
        precision="bf16-mixed",
    ),
}


@pytest.mark.parametrize(
    "recipe", [pytest.param(r, marks=needs_bf16) if r.startswith("bf16") else r for r in sorted(FAST_RECIPES)]
)
def test_resume_is_exact_with_the_fast_recipes(tmp_path, recipe):
    options = FAST_RECIPES[recipe]
    corpus = _corpus(tmp_path)
    full = _fit(tmp_path, corpus, RecordBatches(), tmp_path / "ref", max_steps=20, **options)
    _fit(tmp_path, corpus, RecordBatches(), tmp_path / "run", max_steps=7, **options)
    resumed = _fit(
        tmp_path,
        corpus,
        RecordBatches(),
        tmp_path / "run",
        max_steps=20,
        ckpt_path=str(tmp_path / "run" / "last.ckpt"),
        **options,
    )
    assert resumed.global_step == full.global_step == 20
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, msg=f"{name} differs after resuming ({recipe})")


@needs_bf16
def test_bf16_fast_adaptive_training_lowers_the_loss(tmp_path):
    """The one-hour recipe's step (fast path, adaptive softmax, Adam, bf16 autocast) learns."""
    corpus = _corpus(tmp_path, n=40)
    dm = LMDataModule(sources=[corpus], vocab_path=str(tmp_path / "vocab.txt"), batch_size=8, max_tokens=10)
    config = BiLMConfig.preset(
        "tiny", cell_dim=32, projection_dim=16, filters=[[1, 8], [2, 8]], softmax="adaptive", adaptive_cutoffs=[8, 20]
    )
    L.seed_everything(0)
    system = PretrainSystem(config, vocab_size=dm.vocab_size, optimizer="adam", lr=1e-2)
    losses = []

    class Losses(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            losses.append(float(outputs["loss"]))

    trainer = _bf16_trainer(tmp_path, max_steps=40, max_epochs=20, callbacks=[Losses()])
    trainer.fit(system, datamodule=dm)
    assert len(losses) == 40 and all(math.isfinite(x) for x in losses)
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5  # the exact (adaptive) loss falls
    assert system.bilm.softmax.head.weight.dtype == torch.float32  # master weights stay fp32


def test_bf16_is_refused_where_the_processor_lacks_it(tmp_path, monkeypatch):
    from elmo_pipeline.errors import UserError
    from elmo_pipeline.modules import lstm

    monkeypatch.setattr(lstm, "bf16_supported", lambda device: False)
    corpus = _corpus(tmp_path, n=24)
    with pytest.raises(UserError, match="needs native bf16 matrix multiplies.*--trainer.precision 32-true"):
        _fit(tmp_path, corpus, RecordBatches(), tmp_path / "ckpt", max_steps=2, precision="bf16-mixed")


def _fit_with_validation(tmp_path, ckpt_dir, ckpt_path=None):
    """20 steps with dropout, validation every 5 steps, a checkpoint after every step and at every validation."""
    corpus = _corpus(tmp_path, n=200)
    val = tmp_path / "valid.txt"
    val.write_text("".join(f"w{i} is number {i % 5} .\n" for i in range(20)))
    L.seed_everything(0)
    dm = shuffled_lm_data(corpus, tmp_path, val_sources=[str(val)])
    config = pretrain_config()
    system = PretrainSystem(config, vocab_size=dm.vocab_size, optimizer="adam", lr=1e-3)
    every_step = ModelCheckpoint(dirpath=ckpt_dir, filename="every-{step}", every_n_train_steps=1, save_top_k=-1)
    at_validation = ModelCheckpoint(dirpath=ckpt_dir, filename="val-{step}", monitor="val/ppl", save_top_k=-1)
    trainer = quiet_trainer(
        tmp_path,
        enable_checkpointing=True,
        max_epochs=1,
        max_steps=20,
        val_check_interval=5,
        num_sanity_val_steps=0,
        callbacks=[every_step, at_validation],
    )
    trainer.fit(system, datamodule=dm, ckpt_path=ckpt_path)
    return system


def test_resume_is_exact_from_any_checkpoint_with_validation(tmp_path):
    """Killed (kill -9 or Ctrl-C) after any checkpoint, the resumed run ends with the same weights.

    Each checkpoint of one uninterrupted run is where a killed run would resume from: one taken on
    a training step before that step's validation (step 10), one between validations (step 7), and
    the one written when validation ends (step 15). Validation creates a DataLoader iterator, which
    draws from the global RNG; dropout and the sampled softmax must not see that draw.
    """
    reference = _fit_with_validation(tmp_path, tmp_path / "ref")
    assert reference.global_step == 20
    for name in ("every-step=7", "every-step=10", "val-step=15"):
        ckpt = tmp_path / "ref" / f"{name}.ckpt"
        resumed = _fit_with_validation(tmp_path, tmp_path / f"resumed-{name}", ckpt_path=str(ckpt))
        assert resumed.global_step == 20
        for (key, a), b in zip(reference.state_dict().items(), resumed.state_dict().values()):
            assert torch.equal(a, b), f"{key} differs after resuming from {ckpt.name}"
