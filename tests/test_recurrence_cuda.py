"""The recurrence on a CUDA GPU against the CPU reference: every path a GPU user runs (the fast
backend, cuDNN's fused kernel for unclipped layers, the compiled recurrence with CUDA graphs), in
fp32 and under bf16 autocast, the flattened cuDNN weights, and the streaming runner of `embed`.

Marked ``gpu``: the default run skips them; ``python -m pytest -m gpu`` runs them on a machine with
one (``benchmarks/gpu_check.sh`` does, as its first part).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from tiny_models import tiny_bilm

from elmo_pipeline.models.elmo import bilm_layers
from elmo_pipeline.models.streaming import StreamingBiLM
from elmo_pipeline.modules.lstm import LSTMPLayer

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.skipif(
        os.environ.get("TORCH_ALLOW_TF32_CUBLAS_OVERRIDE") == "1",
        reason="TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1 forces TF32 products, so fp32 cannot be compared as fp32",
    ),
]

PATHS = {"reference": dict(fast=False), "fast": dict(fast=True), "compiled": dict(compiled=True)}
SENTENCES = [["the", "cat", "sat", "on", "the", "mat", "."], ["dogs", "ran"], ["naïve", "café", "très", "far"]]


@pytest.fixture(autouse=True)
def _no_tf32():
    """fp32 products in full fp32 (TF32 would round them to 10 mantissa bits), so fp32 is compared as fp32."""
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def _outputs_and_grads(layer: LSTMPLayer, x: torch.Tensor) -> list[torch.Tensor]:
    x = x.detach().clone().requires_grad_()
    h = layer(x)
    weights = torch.linspace(-1, 1, h.numel(), device=h.device).view_as(h)  # a loss that weighs every output
    grads = torch.autograd.grad((h.float() * weights).sum(), [x, *layer.parameters()])
    return [t.detach().float().cpu() for t in (h, *grads)]


def _layer(path: str, clipped: bool) -> tuple[LSTMPLayer, LSTMPLayer]:
    """The CPU reference and the same weights on the GPU, run by ``path``."""
    clip = dict(cell_clip=0.3, proj_clip=0.1) if clipped else {}
    reference = LSTMPLayer(8, 32, 16, fast=False, **clip)
    gpu = LSTMPLayer(8, 32, 16, **clip, **PATHS[path])
    gpu.load_state_dict(reference.state_dict())
    return reference, gpu.cuda()


@pytest.mark.parametrize("clipped", [True, False], ids=["clipped", "unclipped"])
@pytest.mark.parametrize("path", list(PATHS))
def test_every_path_in_fp32_is_the_cpu_reference(path, clipped):
    """Forward and every gradient, at a length the compiled recurrence pads (5 to 8). Unclipped, the fast
    and compiled layers hand over to cuDNN's fused kernel."""
    reference, gpu = _layer(path, clipped)
    x = 3 * torch.randn(4, 5, 8)  # (B, T, X)
    want = _outputs_and_grads(reference, x)
    got = _outputs_and_grads(gpu, x.cuda())
    if clipped:
        assert (want[0].abs() >= 0.1 - 1e-6).any() and (want[0].abs() < 0.1 - 1e-3).any()  # the clip binds
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize("clipped", [True, False], ids=["clipped", "unclipped"])
@pytest.mark.parametrize("path", list(PATHS))
def test_every_path_under_bf16_autocast_stays_near_fp32(path, clipped):
    """Under bf16 autocast, forward and gradients stay within 3% of the fp32 reference (relative norm).

    That bound shows bf16's rounding and catches a wrong result, but not a cell state kept in bf16."""
    reference, gpu = _layer(path, clipped)
    x = 3 * torch.randn(4, 5, 8)  # (B, T, X)
    want = _outputs_and_grads(reference, x)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        got = _outputs_and_grads(gpu, x.cuda())
    for a, b in zip(got, want, strict=True):
        assert torch.isfinite(a).all()
        assert (a - b).norm() <= 3e-2 * b.norm() + 1e-6, f"relative error {((a - b).norm() / b.norm()).item():.3g}"


def test_cudnn_weights_are_flattened_and_still_trained():
    """On the GPU an unclipped layer's weights are views into one cuDNN buffer; an optimiser step through
    the fused kernel updates them as the CPU reference's step does, and they save as plain tensors."""
    reference, gpu = _layer("fast", clipped=False)
    storages = {p.untyped_storage().data_ptr() for p in gpu.parameters()}
    assert len(storages) == 1, "the weights are not in one flat buffer"
    x = torch.randn(4, 5, 8)  # (B, T, X)
    for layer, inputs in ((reference, x), (gpu, x.cuda())):
        optimizer = torch.optim.SGD(layer.parameters(), lr=0.5)
        layer(inputs).square().sum().backward()
        optimizer.step()
    for name, value in gpu.state_dict().items():
        torch.testing.assert_close(value.cpu(), reference.state_dict()[name], rtol=1e-4, atol=2e-5, msg=name)
    torch.testing.assert_close(gpu(x.cuda()).cpu(), reference(x), rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize("compiled", [False, True], ids=["fast", "compiled"])
def test_a_biLM_on_the_gpu_is_the_cpu_biLM(compiled):
    """Every layer of a 2-layer clipped biLM with skip connections, padded rows included."""
    cpu = tiny_bilm(vocab_size=0, cell_clip=0.5, proj_clip=0.4)
    gpu = tiny_bilm(vocab_size=0, cell_clip=0.5, proj_clip=0.4, compile_recurrence=compiled).cuda()
    with torch.no_grad():
        want, mask = bilm_layers(cpu, SENTENCES)
        got, gpu_mask = bilm_layers(gpu, SENTENCES)
    assert torch.equal(gpu_mask.cpu(), mask)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_streaming_runner_on_the_gpu_is_bilm_forward(precision):
    """`embed`'s runner, chunked so that the state carries across chunks, with its asynchronous copies."""
    bilm = tiny_bilm(vocab_size=0, cell_clip=0.5, proj_clip=0.4).cuda()
    with torch.no_grad():
        layers, mask = bilm_layers(bilm, SENTENCES)
    want = torch.stack(layers, dim=1).cpu().numpy()  # (B, L+1, T, 2P)
    runner = StreamingBiLM(bilm, precision=precision, chunk_tokens=4)
    sinks = [np.full((runner.num_layers + 1, len(s), 2 * runner.P), np.nan, dtype=np.float32) for s in SENTENCES]
    runner.run(SENTENCES, sinks, layers="all")
    tolerance = dict(rtol=1e-4, atol=2e-5) if precision == "fp32" else dict(rtol=0.05, atol=0.02)
    for got, w, n in zip(sinks, want, mask.sum(dim=1).tolist(), strict=True):
        assert not np.isnan(got).any()
        np.testing.assert_allclose(got, w[:, :n], **tolerance)
