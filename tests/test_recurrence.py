"""Every runner of the LSTMP recurrence equals BiLM.forward's reference, over the whole option matrix.

The reference is :meth:`BiLM.forward` with ``fast=False``: the equations of ``lstmp_cell`` under
autograd, in float32. The runners are the ones the package ships:

- training's fast path (:class:`LSTMPFunction`, or the fused kernel when unclipped), forward and gradients;
- the streaming runner of ``embed`` and the activation cache, chunked and unchunked;
- the portable TorchScript/ONNX embedder (eager here; tests/test_portable.py scripts and exports it);
- the seq2seq target LM, one step at a time.

Options: skip connections on and off; 1, 2 and 3 layers; clipped and unclipped; fp32 and bf16;
sentences from empty (``<S> </S>`` only) and one token up to 9 tokens in one batch.

Tolerances: 1e-5 absolute in fp32. In bf16 the matrix multiplies round their inputs to 8 bits of
mantissa (relative error 2^-9 each) while the cell state stays float32; the errors add up over
layers and steps. The bound: every value within **4% of the sentence's largest activation** of the
fp32 reference (measured: at most 2.2%, on weights of order 1 that make the recurrence sensitive).
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
import torch
from tiny_models import tiny_bilm

from elmo_pipeline.data.lm import make_batch
from elmo_pipeline.models import BiLM
from elmo_pipeline.models.elmo import bilm_layers
from elmo_pipeline.models.portable import PortableEmbedder
from elmo_pipeline.models.streaming import StreamingBiLM
from elmo_pipeline.models.target_lm import TargetLM
from elmo_pipeline.text.chars import BOS_TOKEN, batch_to_char_ids
from elmo_pipeline.text.vocab import Vocabulary

WORDS = "the a cat sat on mat dog ran far away , .".split()
SENTENCES = [[], ["cat"], "the cat sat on the mat .".split(), "a dog ran far away , the cat sat".split(), ["dog", "."]]
BF16_BOUND = 0.04  # relative to the largest activation
FP32_BOUND = 1e-5  # absolute

MATRIX = list(
    itertools.product(
        [True, False],  # skip connections
        [1, 2, 3],  # layers
        [(0.5, 0.4), (None, None)],  # clips (small, so that they bind on random weights) or none
    )
)


def make_bilm(skip: bool, layers: int, clips: tuple[float | None, float | None]) -> BiLM:
    bilm = tiny_bilm(
        0,
        filters=[[1, 4], [2, 8]],
        num_layers=layers,
        cell_clip=clips[0],
        proj_clip=clips[1],
        use_skip_connections=skip,
        vocab_size=len(WORDS) + 3,
        fast=False,
    )
    with torch.no_grad():  # weights of order 1, so that the clips bind and the layers differ visibly
        for layer in [*bilm.forward_layers, *bilm.backward_layers]:
            for p in layer.parameters():
                p.uniform_(-1.0, 1.0)
    return bilm


def fast_copy(bilm: BiLM) -> BiLM:
    fast = BiLM(replace(bilm.config, fast=True)).eval()
    fast.load_state_dict(bilm.state_dict())
    return fast


def reference_layers(bilm: BiLM, sentences=SENTENCES) -> list[np.ndarray]:
    """Each sentence's layers (L + 1, n + 2, 2P) from BiLM.forward, boundaries kept."""
    with torch.no_grad():
        layers, mask = bilm_layers(bilm, sentences, keep_sentence_boundaries=True)
    stacked = torch.stack(layers, dim=1).numpy()  # (B, L+1, T, 2P)
    return [value[:, :n] for value, n in zip(stacked, mask.sum(dim=1).tolist(), strict=True)]


def assert_layers_close(got: list[np.ndarray], want: list[np.ndarray], precision: str) -> None:
    for sentence, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g.shape == w.shape, sentence
        assert not np.isnan(g).any(), sentence
        error = np.abs(g - w).max()
        bound = BF16_BOUND * np.abs(w).max() if precision == "bf16" else FP32_BOUND
        assert error <= bound, f"sentence {sentence}: max |error| {error:.3g} > {bound}"


def autocast(precision: str):
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")


def matrix_id(case) -> str:
    skip, layers, clips = case
    return f"{'skip' if skip else 'noskip'}-L{layers}-{'clipped' if clips[0] else 'unclipped'}"


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("case", MATRIX, ids=matrix_id)
def test_training_fast_path_equals_the_reference(case, precision):
    bilm = make_bilm(*case)
    want = reference_layers(bilm)
    with autocast(precision):
        got = [layers.astype(np.float32) for layers in reference_layers(fast_copy(bilm))]
    assert_layers_close(got, want, precision)


@pytest.mark.parametrize("case", MATRIX, ids=matrix_id)
def test_training_fast_path_gradients_equal_the_reference(case):
    bilm = make_bilm(*case)
    fast = fast_copy(bilm)
    chars = batch_to_char_ids(SENTENCES, add_boundaries=True)  # (B, T, C)
    weights = torch.randn(chars.shape[0], chars.shape[1], 2 * bilm.config.projection_dim)
    grads = []
    for model in (bilm, fast):
        model.zero_grad()
        activations = model(chars).activations
        sum((a * weights).sum() for a in activations).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and any("forward_layers" in n for n in grads[0])
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], atol=1e-4, rtol=1e-4, msg=name)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("chunk_tokens", [1, 7, 10_000], ids=["chunk1", "chunk7", "unchunked"])
@pytest.mark.parametrize("case", MATRIX, ids=matrix_id)
def test_streaming_runner_equals_the_reference(case, chunk_tokens, precision):
    bilm = make_bilm(*case)
    runner = StreamingBiLM(bilm, precision=precision, chunk_tokens=chunk_tokens)
    sinks = [np.full((bilm.config.num_layers + 1, len(s) + 2, 16), np.nan, dtype=np.float32) for s in SENTENCES]
    runner.run(SENTENCES, sinks, keep_sentence_boundaries=True)
    assert_layers_close(sinks, reference_layers(bilm), precision)


@pytest.mark.parametrize("case", MATRIX, ids=matrix_id)
def test_portable_embedder_equals_the_reference(case):
    bilm = make_bilm(*case)
    chars = batch_to_char_ids(SENTENCES, add_boundaries=True)  # (B, T, C)
    with torch.no_grad():
        layers, mask = PortableEmbedder(bilm)(chars)  # (L+1, B, T, 2P)
    lengths = mask.sum(dim=1).tolist()
    got = [layers[:, b, :n].numpy() for b, n in enumerate(lengths)]
    assert_layers_close(got, reference_layers(bilm), "fp32")


@pytest.mark.parametrize("case", MATRIX, ids=matrix_id)
def test_target_lm_steps_equal_the_reference(case):
    """The target LM's one-step runner, fed a sentence word by word, against BiLM.forward's top forward layer."""
    bilm = make_bilm(*case)
    vocab = Vocabulary.from_counts(Counter(WORDS))
    targets = [BOS_TOKEN, *WORDS]  # the decoder's words; it starts from <S>, as BiLM.forward does
    lm = TargetLM(bilm, vocab, targets)
    sentence = "the cat sat on the mat . a dog".split()
    with torch.no_grad():
        layers, _ = bilm_layers(bilm, [sentence], keep_sentence_boundaries=True)
        top = layers[-1][0, :-1, : bilm.config.projection_dim]  # (n + 1, P): <S> and the words, forward half
        want = lm._log_probs(top)  # (n + 1, V)
        state = lm.initial_state(1)
        for t, word in enumerate([BOS_TOKEN, *sentence]):
            got, state = lm.step(torch.tensor([targets.index(word)]), state)
            torch.testing.assert_close(got[0], want[t], atol=FP32_BOUND, rtol=FP32_BOUND)


def test_skip_connections_change_the_layers():
    """The matrix above would pass trivially if the runners ignored the switch; the layers must differ."""
    with_skip = reference_layers(make_bilm(True, 2, (0.5, 0.4)))
    without = reference_layers(make_bilm(False, 2, (0.5, 0.4)))
    assert max(np.abs(a[2] - b[2]).max() for a, b in zip(with_skip, without, strict=True)) > 0.1


BF16_GRADIENT_BOUND = 0.05  # relative (Frobenius) error of each parameter gradient; measured: at most 2.1%


def test_bf16_gradients_match_fp32():
    """The bf16 training path's gradients, parameter by parameter, against fp32's, on one LM batch."""
    bilm = tiny_bilm(  # the adaptive softmax is exact: it draws no samples whatever num_samples says
        0,
        filters=[[1, 8], [2, 8], [3, 16]],
        projection_dim=16,
        cell_dim=64,
        dropout=0.0,
        softmax="adaptive",
        adaptive_cutoffs=[4, 8],
        vocab_size=len(WORDS) + 3,
    ).train()
    vocab = Vocabulary.from_counts(Counter(WORDS))
    batch = make_batch([s for s in SENTENCES if s] * 3, vocab)
    grads = {}
    for precision in ("fp32", "bf16"):
        bilm.zero_grad()
        with autocast(precision):
            loss = bilm(batch["chars"], batch["forward_targets"], batch["backward_targets"]).loss
        loss.backward()
        grads[precision] = {n: p.grad.clone() for n, p in bilm.named_parameters() if p.grad is not None}
    assert grads["fp32"].keys() == grads["bf16"].keys() and len(grads["fp32"]) > 10
    for name, reference in grads["fp32"].items():
        if reference.norm() == 0:
            continue
        error = (grads["bf16"][name] - reference).norm() / reference.norm()
        assert error < BF16_GRADIENT_BOUND, f"{name}: relative gradient error {error:.3g}"
        assert grads["bf16"][name].dtype == torch.float32  # fp32 master weights, fp32 gradients
