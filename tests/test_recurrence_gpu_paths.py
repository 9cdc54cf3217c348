"""The recurrence's GPU paths, run on the CPU against the reference: the compiled recurrence (what
``torch.compile(mode="reduce-overhead")`` runs on a GPU, here with inductor's CPU code) and the rule
that picks the fused kernel (cuDNN on a GPU) for unclipped layers."""

from __future__ import annotations

import pytest
import torch

from elmo_pipeline.modules import lstm
from elmo_pipeline.modules.lstm import COMPILE_STEPS, LSTMPLayer


def _grads(layer: LSTMPLayer, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    h = layer(x)
    weights = torch.linspace(-1, 1, h.numel(), dtype=h.dtype).view_as(h)  # a loss that weighs every output
    return h.detach(), list(torch.autograd.grad((h * weights).sum(), [x, *layer.parameters()]))


def test_the_compiled_recurrence_is_the_reference(monkeypatch):
    """Forward and every gradient, clipped, at lengths that pad (3, 9) and one that does not (8)."""
    torch.manual_seed(0)
    reference = LSTMPLayer(8, 16, 8, cell_clip=0.3, proj_clip=0.1, fast=False).double()
    compiled = LSTMPLayer(8, 16, 8, cell_clip=0.3, proj_clip=0.1, compiled=True).double()
    compiled.load_state_dict(reference.state_dict())
    calls = []
    recurrence = lstm.compiled_recurrence("cpu")
    monkeypatch.setattr(lstm, "compiled_recurrence", lambda kind: calls.append(kind) or recurrence)
    for T in (3, COMPILE_STEPS, 9):
        x = (3 * torch.randn(4, T, 8, dtype=torch.float64)).requires_grad_()
        h_ref, g_ref = _grads(reference, x)
        h, g = _grads(compiled, x)
        assert h.shape == (4, T, 8)
        assert (h_ref.abs() >= 0.1 - 1e-12).any() and (h_ref.abs() < 0.1 - 1e-3).any()  # some clipped, some not
        torch.testing.assert_close(h, h_ref, rtol=0, atol=1e-12)
        for a, b in zip(g, g_ref, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    assert calls == ["cpu"] * 3  # it ran the compiled recurrence each time


@pytest.mark.parametrize("clipped", [True, False])
def test_compiled_layers_leave_unclipped_full_precision_to_the_fused_kernel(monkeypatch, clipped):
    used = []
    monkeypatch.setattr(LSTMPLayer, "_fused", lambda self, x: used.append("fused") or x[..., :4])
    monkeypatch.setattr(LSTMPLayer, "_compiled", lambda self, x: used.append("compiled") or x[..., :4])
    clip = 3.0 if clipped else None
    LSTMPLayer(4, 8, 4, cell_clip=clip, proj_clip=clip, compiled=True)(torch.randn(2, 3, 4))
    assert used == ["compiled" if clipped else "fused"]


def test_flattening_is_for_cudnn_only():
    """On the CPU the weights stay where they are (the CPU kernel wants no flat buffer); moving the
    layer (which flattens on a GPU) keeps it working."""
    layer = LSTMPLayer(4, 8, 4)
    before = [p.data_ptr() for p in layer.parameters()]
    layer.flatten_parameters()
    assert [p.data_ptr() for p in layer.parameters()] == before
    x = torch.randn(2, 3, 4)
    torch.testing.assert_close(layer.double().float()(x), layer(x))


def test_a_biLM_with_the_compiled_recurrence_is_the_reference():
    """``compile_recurrence`` end to end: both directions, two layers with the skip connection, padding."""
    from tiny_models import tiny_bilm

    from elmo_pipeline.text.chars import batch_to_char_ids

    reference = tiny_bilm(fast=False, vocab_size=0).double()
    compiled = tiny_bilm(compile_recurrence=True, vocab_size=0).double()
    compiled.load_state_dict(reference.state_dict())
    chars = batch_to_char_ids([["<S>", "a", "cat", "sat", "</S>"], ["<S>", "dogs", "</S>"]])  # (2, 5, 50)
    for layer in compiled.forward_layers:
        assert layer.compiled
    out_ref, out = reference(chars), compiled(chars)
    for a, b in zip(out.activations, out_ref.activations, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_the_compiled_output_survives_the_next_replay(monkeypatch):
    """A CUDA graph writes each replay's output into the same memory. Stand-in: a recurrence that returns
    one shared buffer per shape. Under no_grad (validation, embed), layer 1's output must survive layer
    2's call, so the compiled layer hands back its own copy."""
    from tiny_models import tiny_bilm

    from elmo_pipeline.text.chars import batch_to_char_ids

    buffers: dict[torch.Size, torch.Tensor] = {}
    calls = []

    def replayed(x, *weights):
        calls.append(x.shape)
        out = lstm.lstmp_recurrence(x, *weights)
        return buffers.setdefault(out.shape, torch.empty_like(out)).copy_(out)

    monkeypatch.setattr(lstm, "compiled_recurrence", lambda kind: replayed)
    reference = tiny_bilm(fast=False, vocab_size=0)
    compiled = tiny_bilm(compile_recurrence=True, vocab_size=0)
    compiled.load_state_dict(reference.state_dict())
    chars = batch_to_char_ids([["<S>", "a", "cat", "sat", "</S>"], ["<S>", "dogs", "</S>"]])  # (2, 5, 50)
    with torch.no_grad():
        out_ref, out = reference(chars), compiled(chars)
    assert len(calls) == 4  # 2 layers x 2 directions, each through the stand-in
    for a, b in zip(out.activations, out_ref.activations, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
