"""Pretraining stops, naming the step, on a NaN loss, a loss spike or a non-finite gradient norm."""

from __future__ import annotations

import json
import logging

import lightning as L
import torch
from torch.utils.data import DataLoader

from elmo_pipeline.data.lm import make_batch
from elmo_pipeline.models import BiLMConfig
from elmo_pipeline.systems.pretrain import PretrainSystem
from elmo_pipeline.text import Vocabulary

SENTENCES = ["the cat sat on the mat .".split(), "a dog ran far away from the big red barn".split()]


class Poison(L.Callback):
    """Runs ``action(system)`` just before the batch ``at`` is trained on and keeps the weights then."""

    def __init__(self, at: int, action) -> None:
        self.at, self.action = at, action
        self.weights: dict[str, torch.Tensor] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.at:
            self.action(pl_module)
            self.weights = {k: v.clone() for k, v in pl_module.bilm.state_dict().items()}


def untouched_since(poison: Poison, system: PretrainSystem) -> bool:
    """The weights are those of the moment the batch was poisoned: nothing was trained on it."""
    state = system.bilm.state_dict()
    return all(torch.allclose(v, poison.weights[k], rtol=0, atol=0, equal_nan=True) for k, v in state.items())


def fit(tmp_path, tiny_config: BiLMConfig, callback: Poison, **system_kwargs) -> tuple[PretrainSystem, L.Trainer]:
    vocab = Vocabulary.build(SENTENCES)
    batch = make_batch(SENTENCES, vocab)
    system = PretrainSystem(
        tiny_config,
        vocab_size=len(vocab),
        optimizer="adam",
        lr=0.01,
        export_dir=str(tmp_path / "export"),
        **system_kwargs,
    )
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=20,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        gradient_clip_val=10.0,
        callbacks=[callback],
        default_root_dir=tmp_path,
    )
    trainer.fit(system, train_dataloaders=DataLoader([batch] * 20, batch_size=None))
    return system, trainer


def finite(system: PretrainSystem, skip: str = "") -> bool:
    return all(torch.isfinite(p).all() for name, p in system.bilm.named_parameters() if name != skip)


def test_nan_loss_stops_with_the_step(tmp_path, tiny_config, caplog) -> None:
    def nan_bias(system):
        with torch.no_grad():
            system.bilm.softmax.bias[0] = float("nan")

    with caplog.at_level(logging.WARNING, logger="elmo_pipeline.systems.pretrain"):
        system, trainer = fit(tmp_path, tiny_config, poison := Poison(3, nan_bias))
    # Lightning counts the skipped step (its optimizer call found no gradients); no later step ran
    assert trainer.global_step == 4
    assert any("loss is nan at global step 3" in r.getMessage() for r in caplog.records), caplog.text
    assert untouched_since(poison, system) and finite(system, skip="softmax.bias")
    metrics = json.loads((tmp_path / "export" / "metrics.json").read_text())
    assert metrics["stopped_early"] == "the loss is nan at global step 3"


def test_loss_spike_stops_when_enabled(tmp_path, tiny_config, caplog) -> None:
    def blow_up(system):
        with torch.no_grad():
            system.bilm.softmax.weight.mul_(200.0)

    with caplog.at_level(logging.WARNING, logger="elmo_pipeline.systems.pretrain"):
        system, trainer = fit(tmp_path, tiny_config, poison := Poison(8, blow_up), spike_factor=3.0, spike_window=5)
    assert trainer.global_step == 9 and untouched_since(poison, system)
    assert any("spiked" in r.getMessage() and "global step 8" in r.getMessage() for r in caplog.records), caplog.text

    # off by default: the same spike trains on
    system, trainer = fit(tmp_path, tiny_config, poison := Poison(8, blow_up))
    assert trainer.global_step == 20 and not untouched_since(poison, system)


def test_non_finite_gradient_is_not_applied(tmp_path, tiny_config, caplog) -> None:
    def explode(system):
        system.bilm.softmax.bias.register_hook(lambda grad: grad * float("inf"))

    with caplog.at_level(logging.WARNING, logger="elmo_pipeline.systems.pretrain"):
        system, trainer = fit(tmp_path, tiny_config, poison := Poison(2, explode))
    assert trainer.global_step == 3  # the step ran with its gradients dropped, then training stopped
    assert untouched_since(poison, system) and finite(system)
    assert any("gradient norm is" in r.getMessage() for r in caplog.records), caplog.text
