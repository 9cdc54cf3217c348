"""Pretraining stops with an error naming the step, on a NaN loss, a loss spike, a non-finite gradient
norm or a non-finite validation perplexity, before the update, and exports nothing; under fp16 a step
that the GradScaler skips (its scaled gradients overflowed) is not a divergence."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.plugins import MixedPrecision
from tiny_models import quiet_trainer
from torch.utils.data import DataLoader

from elmo_pipeline.data.lm import make_batch
from elmo_pipeline.errors import TrainingDiverged
from elmo_pipeline.models import BiLMConfig
from elmo_pipeline.systems import divergence
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


def fit(
    tmp_path,
    tiny_config: BiLMConfig,
    callback: Poison,
    val_batches: int = 0,
    _keep=None,
    plugins: list | None = None,
    **system_kwargs,
) -> tuple[PretrainSystem, L.Trainer]:
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
    trainer = quiet_trainer(
        tmp_path,
        max_steps=20,
        gradient_clip_val=10.0,
        callbacks=[callback] + ([_keep] if _keep else []),
        val_check_interval=5 if val_batches else None,
        num_sanity_val_steps=0,
        plugins=plugins,
    )
    trainer.fit(
        system,
        train_dataloaders=DataLoader([batch] * 20, batch_size=None),
        val_dataloaders=DataLoader([batch] * val_batches, batch_size=None) if val_batches else None,
    )
    return system, trainer


def diverges(tmp_path, tiny_config, poison: Poison, message: str, **kwargs) -> PretrainSystem:
    """Fit, expect TrainingDiverged naming ``message``; nothing exported. Returns the system."""
    system = None

    class Keep(L.Callback):
        def on_fit_start(self, trainer, pl_module) -> None:
            nonlocal system
            system = pl_module

    with pytest.raises(TrainingDiverged, match=message):
        fit(tmp_path, tiny_config, poison, **kwargs, _keep=Keep())
    assert not (tmp_path / "export").exists()  # a diverged run exports nothing
    return system


def finite(system: PretrainSystem, skip: str = "") -> bool:
    return all(torch.isfinite(p).all() for name, p in system.bilm.named_parameters() if name != skip)


def test_nan_loss_stops_with_the_step(tmp_path, tiny_config) -> None:
    def nan_bias(system):
        with torch.no_grad():
            system.bilm.softmax.bias[0] = float("nan")

    system = diverges(tmp_path, tiny_config, poison := Poison(3, nan_bias), "the loss is nan at global step 3")
    assert system.global_step == 3  # no later step ran
    assert untouched_since(poison, system) and finite(system, skip="softmax.bias")


def test_loss_spike_stops_when_enabled(tmp_path, tiny_config) -> None:
    def blow_up(system):
        with torch.no_grad():
            system.bilm.softmax.weight.mul_(200.0)

    poison = Poison(8, blow_up)
    system = diverges(tmp_path, tiny_config, poison, r"spiked.*global step 8", spike_factor=3.0, spike_window=5)
    assert system.global_step == 8 and untouched_since(poison, system)

    # off by default: the same spike trains on
    system, trainer = fit(tmp_path, tiny_config, poison := Poison(8, blow_up))
    assert trainer.global_step == 20 and not untouched_since(poison, system)


def test_non_finite_gradient_is_not_applied(tmp_path, tiny_config) -> None:
    def explode(system):
        system.bilm.softmax.bias.register_hook(lambda grad: grad * float("inf"))

    system = diverges(
        tmp_path, tiny_config, poison := Poison(2, explode), "gradient norm is (inf|nan) at global step 2"
    )
    assert system.global_step == 2  # its gradients were dropped: no update
    assert untouched_since(poison, system) and finite(system)


def test_non_finite_validation_perplexity_stops(tmp_path, tiny_config) -> None:
    """A finite training loss can hide a blown-up model; validation in fp32 with the full softmax shows it."""

    class BlowUpAtValidation(Poison):
        def on_validation_start(self, trainer, pl_module) -> None:
            with torch.no_grad():
                pl_module.bilm.softmax.weight.mul_(1e30)

    diverges(
        tmp_path,
        tiny_config,
        BlowUpAtValidation(-1, None),
        "validation perplexity is (inf|nan) at global step 5",
        val_batches=1,
    )


def fp16(init_scale: float = 2.0**16) -> list[MixedPrecision]:
    """``--trainer.precision 16-mixed`` with a real GradScaler, on the CPU (autocast runs fp16 there too)."""
    return [MixedPrecision("16-mixed", "cpu", torch.amp.GradScaler("cpu", init_scale=init_scale))]


def test_fp16_overflow_is_skipped_by_the_scaler_not_a_divergence(tmp_path, tiny_config) -> None:
    """A too-high loss scale overflows the first steps' gradients (fp16's normal start): training goes on."""
    plugins = fp16(init_scale=2.0**30)
    system, trainer = fit(tmp_path, tiny_config, Poison(-1, None), plugins=plugins)
    scale = plugins[0].scaler.get_scale()
    assert trainer.global_step == 20 and system.health_stop is None and finite(system)
    assert scale < 2.0**30  # the scaler skipped the overflowing steps, halving its scale each time
    assert (tmp_path / "export" / "weights.pt").is_file()


def test_fp16_skipped_steps_are_not_applied(tmp_path, tiny_config) -> None:
    """Non-finite gradients for three steps under a scaler: those updates are skipped, then training goes on."""
    hooks = []

    def explode(system):
        hooks.append(system.bilm.softmax.bias.register_hook(lambda grad: grad * float("inf")))

    class Heal(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if batch_idx == 5:
                hooks.pop().remove()
                self.weights = {k: v.clone() for k, v in pl_module.bilm.state_dict().items()}

    heal = Heal()
    poison = Poison(2, explode)
    plugins = fp16()
    system, trainer = fit(tmp_path, tiny_config, poison, plugins=plugins, _keep=heal)
    assert trainer.global_step == 20 and system.health_stop is None and finite(system)
    for name, weight in poison.weights.items():  # steps 2, 3, 4 changed nothing
        torch.testing.assert_close(heal.weights[name], weight, rtol=0, atol=0, msg=name)
    assert plugins[0].scaler.get_scale() == 2.0**13  # halved three times


def test_fp16_a_non_finite_loss_still_stops(tmp_path, tiny_config) -> None:
    def nan_bias(system):
        with torch.no_grad():
            system.bilm.softmax.bias[0] = float("nan")

    system = diverges(
        tmp_path, tiny_config, poison := Poison(3, nan_bias), "the loss is nan at global step 3", plugins=fp16()
    )
    assert system.global_step == 3 and untouched_since(poison, system)


def test_fp16_overflow_that_never_ends_stops(tmp_path, tiny_config, monkeypatch) -> None:
    """Gradients non-finite at every scale: after the bounded number of skips in a row, a divergence."""
    monkeypatch.setattr(divergence, "MAX_SCALER_SKIPS", 3)

    def explode(system):
        system.bilm.softmax.bias.register_hook(lambda grad: grad * float("inf"))

    message = r"gradient norm is (inf|nan) after fp16's GradScaler skipped 3 steps in a row .* at global step 5"
    system = diverges(tmp_path, tiny_config, poison := Poison(2, explode), message, plugins=fp16())
    assert untouched_since(poison, system) and finite(system)
