"""The fast training step computes what the plain one computes: outputs and gradients.

The plain path (autograd over the equations written out) is the reference; the fast path is the
hand-written clipped LSTMP backward, the character CNN over distinct tokens, and the adaptive
softmax, which is checked against a brute-force computation of its own equations.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from elmo_pipeline.models.bilm import BiLM
from elmo_pipeline.models.config import BiLMConfig
from elmo_pipeline.modules.char_cnn import CharCNNEncoder
from elmo_pipeline.modules.lstm import LSTMPFunction, LSTMPLayer
from elmo_pipeline.modules.softmax import AdaptiveLMSoftmax
from elmo_pipeline.systems.pretrain import PretrainSystem


def _layer(cell_clip, proj_clip, scale=3.0, seed=0) -> LSTMPLayer:
    torch.manual_seed(seed)
    layer = LSTMPLayer(5, 12, 4, cell_clip, proj_clip).double()
    with torch.no_grad():  # large weights, so that both clips bite
        for p in layer.parameters():
            p.uniform_(-scale / 2, scale / 2)
    return layer


def _grads(layer: LSTMPLayer, x: torch.Tensor, weights: torch.Tensor) -> list[torch.Tensor]:
    x = x.detach().clone().requires_grad_(True)
    y = layer(x)
    return [y, *torch.autograd.grad((y * weights).sum(), [x, *layer.parameters()])]


@pytest.mark.parametrize("clips", [(0.6, 0.4), (0.6, None), (None, 0.4), (3.0, 3.0)])
def test_fast_clipped_lstmp_equals_plain(clips):
    layer = _layer(*clips)
    x = torch.randn(3, 7, 5, dtype=torch.float64)
    weights = torch.randn(3, 7, 4, dtype=torch.float64)
    layer.fast = False
    plain = _grads(layer, x, weights)
    layer.fast = True
    fast = _grads(layer, x, weights)
    if clips[1] is not None and clips[1] < 1:
        assert (plain[0].abs() >= clips[1]).any(), "the projection clip must bite in this test"
    for name, a, b in zip(["output", "x", "weight_ih", "weight_hh", "bias", "weight_hr"], plain, fast, strict=True):
        torch.testing.assert_close(b, a, atol=1e-12, rtol=1e-10, msg=name)


def test_fast_clipped_lstmp_gradcheck():
    torch.manual_seed(1)
    x = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)  # (T, B, X)
    weight_ih = torch.randn(8, 3, dtype=torch.float64, requires_grad=True)  # (4H, X), H = 2
    bias = torch.randn(8, dtype=torch.float64, requires_grad=True)
    weight_hh = torch.randn(8, 3, dtype=torch.float64, requires_grad=True)
    weight_hr = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)

    def run(x, weight_ih, bias, weight_hh, weight_hr):
        return LSTMPFunction.apply(x, weight_ih, bias, weight_hh, weight_hr, 0.7, 0.5, torch.float64)

    assert torch.autograd.gradcheck(run, (x, weight_ih, bias, weight_hh, weight_hr))


def test_fast_lstmp_in_bf16_autocast_is_close_to_float32():
    torch.manual_seed(0)
    layer = LSTMPLayer(16, 32, 16, 3.0, 3.0)
    x = torch.randn(4, 9, 16)
    reference = layer(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = layer(x)
    assert mixed.shape == reference.shape
    assert (mixed.float() - reference).abs().max() < 0.05  # bf16 matrix multiplies, float32 state


def test_dedup_char_cnn_equals_plain():
    torch.manual_seed(0)
    encoder = CharCNNEncoder(262, 6, [[1, 4], [2, 5], [3, 6]], 1, 7).double()
    words = torch.randint(1, 262, (5, 50))
    words[:, 10:] = 261  # padding characters, as real tokens have
    chars = words[torch.randint(0, 5, (3, 8))]  # (3, 8, 50): 24 tokens, at most 5 distinct
    chars[2, 6:] = 0  # padded positions
    outputs, grads = [], []
    weights = torch.randn(3, 8, 7, dtype=torch.float64)
    for dedup in (False, True):
        encoder.dedup = dedup
        encoder.zero_grad()
        y = encoder(chars)
        (y * weights).sum().backward()
        outputs.append(y.detach())
        grads.append([p.grad.clone() for p in encoder.parameters()])
    torch.testing.assert_close(outputs[1], outputs[0], atol=1e-12, rtol=1e-12)
    for (name, _), a, b in zip(encoder.named_parameters(), grads[0], grads[1], strict=True):
        torch.testing.assert_close(b, a, atol=1e-12, rtol=1e-10, msg=name)


def test_fast_bilm_equals_plain_bilm():
    config = BiLMConfig.preset(
        "tiny", vocab_size=30, cell_dim=12, projection_dim=6, filters=[[1, 4], [2, 4]], dropout=0.0, softmax="full"
    )
    torch.manual_seed(0)
    plain = BiLM(dataclasses.replace(config, fast=False)).double()
    fast = BiLM(config).double()
    fast.load_state_dict(plain.state_dict())
    words = torch.randint(1, 262, (6, 50))
    chars = words[torch.randint(0, 6, (2, 9))]
    chars[1, 7:] = 0
    targets = torch.randint(0, 30, (2, 9))
    targets[1, 7:] = -1
    outs = []
    for model in (plain, fast):
        out = model(chars, targets, targets)
        out.loss.backward()
        outs.append(out)
    torch.testing.assert_close(outs[1].loss, outs[0].loss)
    for a, b in zip(outs[0].activations, outs[1].activations, strict=True):
        torch.testing.assert_close(b, a)
    for (name, p), q in zip(plain.named_parameters(), fast.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, atol=1e-12, rtol=1e-9, msg=name)


# ----------------------------------------------------------------------------- adaptive softmax


def _adaptive(seed=0) -> AdaptiveLMSoftmax:
    torch.manual_seed(seed)
    softmax = AdaptiveLMSoftmax(8, 40, cutoffs=[5, 17], div_value=2.0).double()
    with torch.no_grad():
        for p in softmax.parameters():
            p.normal_()
    return softmax


def _brute_force_log_probs(softmax: AdaptiveLMSoftmax, h: torch.Tensor) -> torch.Tensor:
    """log p(w | h) for every word, from the equations, one word at a time."""
    head = softmax.head(h)  # (N, 5 + 2)
    head_lp = head - torch.logsumexp(head, dim=-1, keepdim=True)
    tails = [tail(h) for tail in softmax.tails]  # [(N, 12), (N, 23)]
    tails_lp = [t - torch.logsumexp(t, dim=-1, keepdim=True) for t in tails]
    columns = []
    for w in range(40):
        if w < 5:
            columns.append(head_lp[:, w])
        elif w < 17:
            columns.append(head_lp[:, 5] + tails_lp[0][:, w - 5])
        else:
            columns.append(head_lp[:, 6] + tails_lp[1][:, w - 17])
    return torch.stack(columns, dim=1)  # (N, 40)


def test_adaptive_softmax_probabilities_sum_to_one():
    softmax = _adaptive()
    log_probs = softmax.log_probs(torch.randn(6, 8, dtype=torch.float64))
    assert log_probs.shape == (6, 40)
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(6, dtype=torch.float64))


def test_adaptive_softmax_nll_matches_brute_force():
    softmax = _adaptive()
    h = torch.randn(30, 8, dtype=torch.float64)
    targets = torch.cat([torch.arange(40), torch.randint(0, 40, (0,))])[:30]  # head and both tails
    targets = torch.tensor([0, 4, 5, 16, 17, 39, *torch.randint(0, 40, (24,)).tolist()])
    expected = -_brute_force_log_probs(softmax, h).gather(1, targets.unsqueeze(1)).squeeze(1)
    torch.testing.assert_close(softmax.full_nll(h, targets), expected)
    torch.testing.assert_close(softmax.log_probs(h), _brute_force_log_probs(softmax, h))


def test_adaptive_softmax_gradients_reach_every_parameter():
    softmax = _adaptive()
    h = torch.randn(12, 8, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([0, 3, 5, 9, 16, 17, 25, 39, 1, 2, 30, 6])
    softmax.full_nll(h, targets).mean().backward()
    for name, p in softmax.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert h.grad.abs().sum() > 0


def test_adaptive_softmax_rejects_bad_cutoffs():
    with pytest.raises(ValueError, match="adaptive_cutoffs"):
        AdaptiveLMSoftmax(8, 40, cutoffs=[20, 10])
    with pytest.raises(ValueError, match="adaptive_cutoffs"):
        AdaptiveLMSoftmax(8, 40, cutoffs=[5, 39])


def test_bilm_with_adaptive_softmax_trains_and_evaluates_exactly():
    config = BiLMConfig.preset(
        "tiny", vocab_size=40, cell_dim=12, projection_dim=8, filters=[[1, 4]], softmax="adaptive",
        adaptive_cutoffs=[5, 17], dropout=0.0,
    )  # fmt: skip
    torch.manual_seed(0)
    bilm = BiLM(config).double()
    chars = torch.randint(1, 262, (2, 6, 50))
    targets = torch.randint(0, 40, (2, 6))
    out = bilm(chars, targets, targets)
    top = out.activations[-1][..., :8].reshape(-1, 8)  # (N, P) forward top layer
    expected = -bilm.softmax.log_probs(top).gather(1, targets.reshape(-1, 1)).mean()
    torch.testing.assert_close(out.forward_loss, expected)
    bilm.train()
    assert bilm(chars, targets, targets).loss.requires_grad  # exact in training too: no sampling


# ----------------------------------------------------------------------------- learning-rate schedule


def _system(**kwargs) -> PretrainSystem:
    config = BiLMConfig.preset("tiny", cell_dim=8, projection_dim=4, filters=[[1, 2]], num_samples=4)
    return PretrainSystem(config, vocab_size=10, **kwargs)


def test_lr_schedule_warmup_then_decay_to_the_horizon():
    linear = _system(warmup_steps=10, lr_schedule="linear", schedule_steps=110, min_lr_ratio=0.1)
    assert linear.schedule.factor(0) == pytest.approx(0.1)
    assert linear.schedule.factor(9) == pytest.approx(1.0)
    assert linear.schedule.factor(10) == pytest.approx(1.0)
    assert linear.schedule.factor(60) == pytest.approx(0.55)
    assert linear.schedule.factor(110) == pytest.approx(0.1)
    assert linear.schedule.factor(500) == pytest.approx(0.1)  # past the horizon: stays at the floor
    cosine = _system(warmup_steps=0, lr_schedule="cosine", schedule_steps=100, min_lr_ratio=0.0)
    assert cosine.schedule.factor(0) == pytest.approx(1.0)
    assert cosine.schedule.factor(50) == pytest.approx(0.5)
    assert cosine.schedule.factor(25) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert cosine.schedule.factor(100) == pytest.approx(0.0, abs=1e-12)
    constant = _system(warmup_steps=4)
    assert [constant.schedule.factor(s) for s in (0, 3, 50)] == pytest.approx([0.25, 1.0, 1.0])


def test_lr_horizon_travels_in_the_checkpoint():
    system = _system(lr_schedule="linear")
    system.schedule.horizon = 1234  # fixed from the time budget during the run
    checkpoint: dict = {}
    system.on_save_checkpoint(checkpoint)
    restored = _system(lr_schedule="linear")
    assert restored.schedule.horizon is None
    restored.on_load_checkpoint(checkpoint)
    assert restored.schedule.horizon == 1234


def test_a_time_budget_horizon_follows_the_step_rate_and_keeps_the_lr_continuous(monkeypatch):
    import time
    from types import SimpleNamespace

    from lightning.pytorch.callbacks import Timer

    class Budget(Timer):
        left = 100.0

        def time_remaining(self, stage="train"):
            return self.left

    budget = Budget(duration="00:00:03:20")
    logged: dict = {}
    strategy = SimpleNamespace(broadcast=lambda value, src=0: value)
    trainer = SimpleNamespace(max_steps=-1, callbacks=[budget], global_step=60, strategy=strategy)
    monkeypatch.setattr(PretrainSystem, "trainer", property(lambda self: trainer))
    system = _system(lr_schedule="linear", warmup_steps=20, min_lr_ratio=0.05)
    monkeypatch.setattr(system, "log", lambda name, value, **kw: logged.__setitem__(name, value))
    system.schedule.horizon = 520  # first estimate, at the end of warm-up
    before = system.schedule.factor(300)
    # the run slowed down: 290 steps in 100 s since step 10 (2.9 steps/s), 50 s left
    trainer.global_step, budget.left = 300, 50.0
    system._attempt_start = (time.monotonic() - 100.0, 10)
    system.follow_the_time_budget()
    assert system.schedule.horizon == pytest.approx(300 + 0.93 * 50 * 2.9, abs=2)
    assert system.schedule.horizon < 520 and logged["train/lr_horizon"] == system.schedule.horizon
    assert system.schedule.factor(300) == pytest.approx(before)  # continuous at the re-estimate
    assert system.schedule.factor(system.schedule.horizon) == pytest.approx(0.05)  # the floor at the new horizon
    assert system.schedule.factor(system.schedule.horizon + 50) == pytest.approx(0.05)
    middle = (300 + system.schedule.horizon) // 2
    assert system.schedule.factor(middle) == pytest.approx((before + 0.05) / 2, abs=0.01)
    # horizon and anchor travel in the checkpoint
    checkpoint: dict = {}
    system.on_save_checkpoint(checkpoint)
    restored = _system(lr_schedule="linear", warmup_steps=20, min_lr_ratio=0.05)
    restored.on_load_checkpoint(checkpoint)
    assert [restored.schedule.factor(s) for s in (300, middle, 400)] == [
        system.schedule.factor(s) for s in (300, middle, 400)
    ]


def test_a_step_budget_is_not_re_estimated(monkeypatch):
    from types import SimpleNamespace

    trainer = SimpleNamespace(max_steps=400, callbacks=[], global_step=250)
    monkeypatch.setattr(PretrainSystem, "trainer", property(lambda self: trainer))
    assert not _system(lr_schedule="linear")._follows_time_budget()
    trainer.max_steps = -1
    assert _system(lr_schedule="linear")._follows_time_budget()
    assert not _system(lr_schedule="linear", schedule_steps=77)._follows_time_budget()
    assert not _system(lr_schedule="constant")._follows_time_budget()


def test_unknown_softmax_is_a_clear_error():
    with pytest.raises(ValueError, match="--model.bilm.softmax"):
        BiLMConfig.preset("tiny", softmax="hierarchical")


# ----------------------------------------------------------------------------- bench


def test_bench_runs_the_variants_interleaved_on_real_batches(tmp_path, capsys):
    import json

    from elmo_pipeline.commands import bench

    out = tmp_path / "bench.json"
    argv = ["--preset", "tiny", "--batch-size", "4", "--steps", "2", "--warmup", "1", "--threads", "1"]
    assert bench.main([*argv, "--variants", "plain,fast,fast-bf16", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    for name in ("plain", "fast", "fast-bf16"):
        assert f"| {name} |" in printed
    assert "ratio" in printed and "target" in printed
    results = json.loads(out.read_text())
    assert set(results["matmul_gflops"]) == {"fp32", "bf16"}
    assert results["recurrence_matmul"]["ratio"] > 0
    assert results["variants"]["plain"]["speedup"] == 1.0
    assert results["variants"]["fast"]["gflop_per_step"] < results["variants"]["plain"]["gflop_per_step"]  # dedup
    assert 0 < results["batches"]["distinct_fraction"] < 1  # real text repeats tokens
    # the same initial weights and batches: the fast step's losses are the plain step's, bf16's close to them
    assert len(results["variants"]["fast"]["losses"]) == 3
    assert results["variants"]["fast"]["max_relative_loss_gap"] < 1e-4
    assert results["variants"]["fast-bf16"]["max_relative_loss_gap"] < 0.02


def test_lr_horizon_from_the_time_budget(monkeypatch):
    import time
    from types import SimpleNamespace

    from lightning.pytorch.callbacks import Timer

    class HalfDone(Timer):
        def time_remaining(self, stage="train"):
            return 100.0  # seconds left of max_time

    system = _system(lr_schedule="linear", warmup_steps=20)
    trainer = SimpleNamespace(max_steps=-1, callbacks=[HalfDone(duration="00:00:03:20")], global_step=60)
    monkeypatch.setattr(PretrainSystem, "trainer", property(lambda self: trainer))
    system._attempt_start = (time.monotonic() - 10.0, 10)  # 50 steps in 10 s since step 10: 5 steps/s
    assert system.schedule_horizon() == pytest.approx(60 + 0.93 * 100 * 5, abs=3)
    trainer.max_steps = 400  # a step budget wins over the time budget
    assert system.schedule_horizon() == 400
    assert _system(lr_schedule="linear", schedule_steps=77).schedule_horizon() == 77
