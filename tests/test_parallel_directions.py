"""The two directions of a biLM layer side by side (``parallel_directions``), and the TorchScript loops.

Side by side must be the same computation as one direction after the other: the same loss and the
same gradients to the last bit (each direction's numbers do not depend on which thread runs them),
in fp32 and bf16, with dropout, with and without skip connections, over 1 to 3 layers. The tests
pin torch to 2 threads, so that the side-by-side path runs on any machine, and check that it ran.
"""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest
import torch
from tiny_models import tiny_config

from elmo_pipeline.models import BiLM
from elmo_pipeline.modules import lstm


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def _loss_and_grads(config, precision, chars, forward_targets, backward_targets):
    torch.manual_seed(0)
    model = BiLM(config).train()
    torch.manual_seed(1)  # the dropout masks
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        loss = model(chars, forward_targets, backward_targets).loss
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def _batch(vocab_size: int, lengths: list[int]):
    generator = torch.Generator().manual_seed(2)
    B, T = len(lengths), max(lengths)
    chars = torch.randint(1, 200, (B, T, 50), generator=generator)
    forward_targets = torch.randint(0, vocab_size, (B, T), generator=generator)
    backward_targets = torch.randint(0, vocab_size, (B, T), generator=generator)
    for row, n in enumerate(lengths):
        chars[row, n:] = 0
        forward_targets[row, n:] = -1
        backward_targets[row, n:] = -1
    return chars, forward_targets, backward_targets


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("layers,skips", [(1, True), (2, True), (2, False), (3, True)])
def test_side_by_side_equals_one_after_the_other_to_the_bit(two_threads, monkeypatch, precision, layers, skips):
    if precision == "bf16" and not lstm.bf16_supported(torch.device("cpu")):
        pytest.skip("no native bf16 on this CPU")
    config = tiny_config(
        vocab_size=40,
        softmax="adaptive",
        adaptive_cutoffs=[10, 20],
        num_layers=layers,
        use_skip_connections=skips,
        dropout=0.2,
    )
    batch = _batch(40, [7, 5, 1, 3])
    serial = _loss_and_grads(replace(config, parallel_directions=False), precision, *batch)

    threads = []
    side_by_side = lstm._side_by_side

    def spy(first, second):
        def named(call):
            def run():
                threads.append(threading.current_thread().name)
                return call()

            return run

        return side_by_side(named(first), named(second))

    monkeypatch.setattr(lstm, "_side_by_side", spy)
    parallel = _loss_and_grads(replace(config, parallel_directions=True), precision, *batch)

    # forward and backward, each depth: two calls each, on the pool's two threads, not the caller's
    assert len(threads) == 2 * 2 * layers
    assert set(threads) <= {f"lstmp-direction_{i}" for i in range(2)}
    assert torch.equal(serial[0], parallel[0])
    assert serial[1].keys() == parallel[1].keys()
    for name, grad in serial[1].items():
        assert torch.equal(grad, parallel[1][name]), name
    assert any(name.startswith("backward_layers") for name in serial[1])  # both directions have gradients


def test_the_pool_runs_on_half_the_threads_and_leaves_the_callers_alone(two_threads):
    T, B, X, H, P = 3, 2, 4, 4, 3
    inputs = [torch.randn(T, B, X), torch.randn(4 * H, X), torch.randn(4 * H), torch.randn(4 * H, P), torch.randn(P, H)]

    def probe():
        assert not torch.is_grad_enabled()  # the workers compute without autograd
        lstm.lstmp_forward(*inputs, 3.0, 3.0, torch.float32)  # TorchScript re-reads torch's thread count
        return threading.current_thread().name, torch.get_num_threads()

    (name_a, threads_a), (name_b, threads_b) = lstm._side_by_side(probe, probe)
    assert {name_a, name_b} <= {"lstmp-direction_0", "lstmp-direction_1"}
    assert threads_a == threads_b == 1
    assert torch.get_num_threads() == 2
    assert torch.is_grad_enabled()


def test_a_workers_error_reaches_the_caller(two_threads):
    def fails():
        raise ValueError("shape mismatch in direction 2")

    with pytest.raises(ValueError, match="direction 2"):
        lstm._side_by_side(lambda: 1, fails)


def test_off_by_default_and_one_after_the_other_where_side_by_side_cannot_run(monkeypatch):
    calls = []
    monkeypatch.setattr(lstm, "_side_by_side", lambda a, b: calls.append(1) or (a(), b()))
    batch = _batch(40, [4, 2])
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # one thread: nothing to share
        BiLM(tiny_config(vocab_size=40, parallel_directions=True))(*batch).loss.backward()
        torch.set_num_threads(2)
        for overrides in (
            dict(cell="lstm"),  # not an LSTMP layer
            dict(fast=False),  # the reference loop
            dict(cell_clip=None, proj_clip=None),  # the fused kernel
        ):
            BiLM(tiny_config(vocab_size=40, parallel_directions=True, **overrides))(*batch).loss.backward()
        assert calls == []
        BiLM(tiny_config(vocab_size=40))(*batch).loss.backward()  # off by default
        assert calls == []
        BiLM(tiny_config(vocab_size=40, parallel_directions=True))(*batch).loss.backward()  # and where it applies
    finally:
        torch.set_num_threads(before)
    assert len(calls) == 4  # forward and backward of each of the 2 depths


def test_the_scripted_loops_equal_their_python(two_threads):
    """The TorchScript forward and backward loops compute what their Python source computes."""
    torch.manual_seed(3)
    T, B, X, H, P = 6, 3, 5, 4, 3
    inputs = [torch.randn(T, B, X), torch.randn(4 * H, X), torch.randn(4 * H), torch.randn(4 * H, P), torch.randn(P, H)]
    grad_h = torch.randn(T, B, P)
    results = {}
    for scripted in (True, False):
        run = lstm._scripted if scripted else (lambda function: function)
        original = lstm._scripted
        lstm._scripted = run
        try:
            h, saved = lstm.lstmp_forward(*inputs, 0.5, 0.4, torch.float32)
            grads = lstm.lstmp_backward(saved, 0.5, 0.4, grad_h)
        finally:
            lstm._scripted = original
        results[scripted] = (h, grads)
    assert torch.equal(results[True][0], results[False][0])
    for a, b in zip(results[True][1], results[False][1], strict=True):
        assert torch.allclose(a, b, rtol=0, atol=1e-6)
