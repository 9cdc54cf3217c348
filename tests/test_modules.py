"""Modules against independent computations: LSTMP, highway, character CNN, LM softmax."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from elmo_pipeline.modules.char_cnn import CharCNNEncoder
from elmo_pipeline.modules.highway import Highway
from elmo_pipeline.modules.lstm import LSTMPLayer
from elmo_pipeline.modules.softmax import DEFAULT_LOGITS_BUDGET_BYTES, LMSoftmax
from elmo_pipeline.text import NUM_CHARS, batch_to_char_ids


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def numpy_params(module: nn.Module) -> dict[str, np.ndarray]:
    return {name: p.detach().double().numpy() for name, p in module.named_parameters()}


# ----------------------------------------------------------------------------- LSTMP


def lstmp_reference(
    x: np.ndarray, p: dict[str, np.ndarray], cell_clip: float | None, proj_clip: float | None
) -> tuple[np.ndarray, int, int]:
    """The LSTMP recurrence written out step by step in float64, gate order i, f, g, o.

    Returns the (B, T, P) outputs and how many cell / projection entries the clipping changed.
    """
    B, T, _ = x.shape
    H = p["weight_hr"].shape[1]
    h = np.zeros((B, p["weight_hr"].shape[0]))
    c = np.zeros((B, H))
    cell_clipped = proj_clipped = 0
    outputs = []
    for t in range(T):
        z = x[:, t] @ p["weight_ih"].T + h @ p["weight_hh"].T + p["bias"]  # (B, 4H)
        i = sigmoid(z[:, 0:H])
        f = sigmoid(z[:, H : 2 * H])
        g = np.tanh(z[:, 2 * H : 3 * H])
        o = sigmoid(z[:, 3 * H : 4 * H])
        c = f * c + i * g
        if cell_clip is not None:
            cell_clipped += int((np.abs(c) > cell_clip).sum())
            c = np.clip(c, -cell_clip, cell_clip)
        h = (o * np.tanh(c)) @ p["weight_hr"].T  # (B, P)
        if proj_clip is not None:
            proj_clipped += int((np.abs(h) > proj_clip).sum())
            h = np.clip(h, -proj_clip, proj_clip)
        outputs.append(h)
    return np.stack(outputs, axis=1), cell_clipped, proj_clipped


def randomised_lstmp(cell_clip: float | None, proj_clip: float | None) -> LSTMPLayer:
    layer = LSTMPLayer(input_size=5, hidden_size=7, proj_size=4, cell_clip=cell_clip, proj_clip=proj_clip)
    with torch.no_grad():  # larger weights than the init, so that cells saturate and clipping bites
        for p in layer.parameters():
            p.normal_(0.0, 0.8)
    return layer


def test_clipped_lstmp_equals_equations() -> None:
    layer = randomised_lstmp(cell_clip=0.5, proj_clip=0.4)
    assert layer.clipped
    x = torch.randn(3, 6, 5) * 2.0
    out = layer(x).detach().double().numpy()
    expected, cell_clipped, proj_clipped = lstmp_reference(x.double().numpy(), numpy_params(layer), 0.5, 0.4)
    # clipping really happened, but not everywhere (otherwise the outputs would be trivially +-clip)
    assert cell_clipped > 0 and proj_clipped > 0
    assert np.mean(np.abs(expected) < 0.4 - 1e-6) > 0.2
    np.testing.assert_allclose(out, expected, atol=1e-5, rtol=1e-5)
    unclipped, _, _ = lstmp_reference(x.double().numpy(), numpy_params(layer), None, None)
    assert np.abs(unclipped - expected).max() > 0.1  # the clip values matter for these inputs


def test_unclipped_lstmp_equals_equations() -> None:
    layer = randomised_lstmp(cell_clip=None, proj_clip=None)
    assert not layer.clipped
    x = torch.randn(3, 6, 5)
    expected, _, _ = lstmp_reference(x.double().numpy(), numpy_params(layer), None, None)
    np.testing.assert_allclose(layer(x).detach().double().numpy(), expected, atol=1e-5, rtol=1e-5)


def test_fused_path_equals_recurrence_path() -> None:
    fused = randomised_lstmp(cell_clip=None, proj_clip=None)
    stepwise = randomised_lstmp(cell_clip=1e9, proj_clip=1e9)  # clip values that never bite
    stepwise.load_state_dict(fused.state_dict())
    assert not fused.clipped and stepwise.clipped
    x1 = torch.randn(2, 9, 5, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_(True)
    y1, y2 = fused(x1), stepwise(x2)
    torch.testing.assert_close(y1, y2, atol=1e-5, rtol=1e-5)
    weights = torch.randn_like(y1)
    (y1 * weights).sum().backward()
    (y2 * weights).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, atol=1e-5, rtol=1e-5)
    for (name, p1), p2 in zip(fused.named_parameters(), stepwise.parameters(), strict=True):
        torch.testing.assert_close(p1.grad, p2.grad, atol=1e-5, rtol=1e-5, msg=name)


def test_lstmp_init_forget_bias_is_one() -> None:
    layer = LSTMPLayer(3, 5, 2)
    assert torch.equal(layer.bias[5:10], torch.ones(5))
    assert torch.equal(layer.bias[:5], torch.zeros(5)) and torch.equal(layer.bias[10:], torch.zeros(10))


# ----------------------------------------------------------------------------- highway


def test_highway_equals_formula() -> None:
    highway = Highway(dim=6, num_layers=2)
    assert torch.equal(highway.gate[0].bias, torch.full((6,), -2.0))  # starts mostly carrying
    with torch.no_grad():
        for p in highway.parameters():
            p.normal_()
    x = torch.randn(4, 6)
    p = numpy_params(highway)
    y = x.double().numpy()
    for k in range(2):
        t = sigmoid(y @ p[f"gate.{k}.weight"].T + p[f"gate.{k}.bias"])
        transformed = np.maximum(y @ p[f"transform.{k}.weight"].T + p[f"transform.{k}.bias"], 0.0)
        y = t * transformed + (1.0 - t) * y
    np.testing.assert_allclose(highway(x).detach().double().numpy(), y, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- character CNN


def tiny_encoder() -> CharCNNEncoder:
    return CharCNNEncoder(NUM_CHARS, char_dim=4, filters=[[1, 3], [2, 5], [3, 4]], num_highway=1, output_dim=6)


def test_char_cnn_shape() -> None:
    encoder = tiny_encoder()
    chars = batch_to_char_ids([["a", "bc", "def"], ["g"]])  # (2, 3, 50)
    assert encoder(chars).shape == (2, 3, 6)
    assert torch.all(encoder.embedding.weight[0] == 0)  # the "no token" id has a zero embedding


def test_char_cnn_padded_row_does_not_affect_other_tokens() -> None:
    encoder = tiny_encoder()
    alone = encoder(batch_to_char_ids([["the", "cat"]]))  # (1, 2, P)
    padded = batch_to_char_ids([["the", "cat", "x"], ["dog"]])  # (2, 3, C)
    padded[0, 2] = 0  # an all-zero row in the middle of the batch
    out = encoder(padded)
    torch.testing.assert_close(out[0, :2], alone[0], atol=1e-6, rtol=0)
    other = padded.clone()
    other[0, 2] = batch_to_char_ids([["zebra"]])[0, 0]
    torch.testing.assert_close(encoder(other)[0, :2], out[0, :2], atol=1e-6, rtol=0)
    assert not torch.allclose(encoder(other)[0, 2], out[0, 2])


def test_char_cnn_rejects_unknown_activation() -> None:
    with pytest.raises(ValueError, match="activation"):
        CharCNNEncoder(NUM_CHARS, 4, [[1, 3]], 1, 6, activation="gelu")


# ----------------------------------------------------------------------------- LM softmax


def test_full_nll_equals_cross_entropy() -> None:
    softmax = LMSoftmax(input_dim=8, vocab_size=30, logits_budget_bytes=3 * 4 * 30)  # chunks of 3 rows, one partial
    assert softmax.chunk_rows == 3
    with torch.no_grad():
        softmax.bias.normal_()
    h = torch.randn(10, 8)
    targets = torch.randint(0, 30, (10,))
    logits = h @ softmax.weight.T + softmax.bias
    expected = nn.functional.cross_entropy(logits, targets, reduction="none")
    torch.testing.assert_close(softmax.full_nll(h, targets), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(softmax.log_probs(h).gather(1, targets[:, None])[:, 0], -expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("budget", [0, 1, 4 * 30, 4 * 30 * 4 - 1, 4 * 30 * 7, 2**28])
def test_full_nll_is_the_same_for_every_logits_budget(budget: int) -> None:
    torch.manual_seed(0)
    softmax = LMSoftmax(input_dim=8, vocab_size=30, logits_budget_bytes=budget)
    assert softmax.chunk_rows == max(1, budget // (4 * 30))  # 0, 1 and 120 bytes: one row at a time
    h, targets = torch.randn(13, 8), torch.randint(0, 30, (13,))  # (N, P), (N,)
    unchunked = nn.functional.cross_entropy(h @ softmax.weight.T + softmax.bias, targets, reduction="none")  # (N,)
    torch.testing.assert_close(softmax.full_nll(h, targets), unchunked, atol=1e-6, rtol=1e-6)
    assert softmax.full_nll(h[:0], targets[:0]).shape == (0,)


def test_default_logits_budget_bounds_a_large_vocabulary() -> None:
    softmax = LMSoftmax(input_dim=4, vocab_size=793_471)  # the Original biLM's vocabulary
    assert softmax.chunk_rows == 84 and softmax.chunk_rows * 793_471 * 4 <= DEFAULT_LOGITS_BUDGET_BYTES


def test_log_q_is_log_uniform_and_normalised() -> None:
    V = 50
    softmax = LMSoftmax(8, V)
    log_q = softmax.log_q(torch.arange(V)).double()
    assert math.isclose(log_q.exp().sum().item(), 1.0, abs_tol=1e-5)
    for k in (0, 1, 17, V - 1):
        assert math.isclose(log_q[k].item(), math.log(math.log((k + 2) / (k + 1)) / math.log(V + 1)), abs_tol=1e-5)
    assert torch.all(log_q[1:] < log_q[:-1])  # frequency-sorted: id 0 is the most likely


def test_sample_frequencies_follow_q() -> None:
    V = 50
    softmax = LMSoftmax(8, V, num_samples=V)
    generator = torch.Generator().manual_seed(1)
    draws = torch.cat([softmax.sample(generator) for _ in range(400)])  # 20,000 ids
    assert draws.min() >= 0 and draws.max() < V
    freq = torch.bincount(draws, minlength=V).double() / draws.numel()
    q = softmax.log_q(torch.arange(V)).double().exp()
    # standard error of freq[0] (q ~ 0.18) is ~0.003; a uniform sampler would be off by 0.16
    assert (freq - q).abs().max() < 0.015
    assert 0.5 * (freq - q).abs().sum() < 0.05  # total variation distance


def reference_sampled_nll(
    softmax: LMSoftmax,
    h: torch.Tensor,
    targets: torch.Tensor,
    samples: torch.Tensor,
    correct_negatives: bool = True,
    correct_true: bool = False,
    mask_hits: bool = True,
) -> torch.Tensor:
    """Sampled-softmax NLL written out, with switches for the variants a bug would produce."""
    S = samples.numel()
    true = (h * softmax.weight[targets]).sum(-1) + softmax.bias[targets]  # (N,)
    neg = h @ softmax.weight[samples].T + softmax.bias[samples]  # (N, S)
    if correct_negatives:
        neg = neg - (softmax.log_q(samples) + math.log(S))
    if correct_true:
        true = true - (softmax.log_q(targets) + math.log(S))
    if mask_hits:
        neg = neg.masked_fill(samples[None, :] == targets[:, None], float("-inf"))
    return torch.logsumexp(torch.cat([true[:, None], neg], dim=1), dim=1) - true  # (N,)


def zipfian_softmax_problem(V: int = 1000, P: int = 8, N: int = 32):
    """A softmax whose scores follow the vocabulary's frequency order, as a trained LM's do."""
    softmax = LMSoftmax(P, V, num_samples=V)
    with torch.no_grad():
        softmax.bias.copy_(softmax.log_q(torch.arange(V)))
    h = torch.randn(N, P)
    targets = torch.randint(0, V, (N,))
    return softmax, h, targets


@torch.no_grad()
def test_sampled_estimator_variants_reference() -> None:
    """With many samples, the corrected estimator approaches the full loss; wrong corrections do not.

    This checks the reference formulas (and the tolerance used below): only the estimator that
    corrects the negatives by -log(S q), masks accidental hits and leaves the true logit as it is
    converges to the full NLL.
    """
    softmax, h, targets = zipfian_softmax_problem()
    full = softmax.full_nll(h, targets).mean().item()
    draws = [softmax.sample() for _ in range(10)]

    def mean_loss(**variant: bool) -> float:
        return float(np.mean([reference_sampled_nll(softmax, h, targets, s, **variant).mean().item() for s in draws]))

    assert abs(mean_loss() - full) < 0.05
    assert abs(mean_loss(correct_negatives=False) - full) > 1.0  # dropping -log(S q): far off
    assert abs(mean_loss(correct_true=True) - full) > 0.5  # also correcting the true logit: far off


@torch.no_grad()
def test_sampled_nll_follows_tensorflow_convention(monkeypatch) -> None:
    """The sampled loss is TF's ``sampled_softmax_loss`` (bilm-tf's objective): every candidate, the
    target included, is corrected by -log(S q); it is a training objective, and it is *not* the
    importance-sampling estimate of the full loss (the reference test above shows the difference)."""
    softmax, h, targets = zipfian_softmax_problem()
    samples = softmax.sample()
    monkeypatch.setattr(softmax, "sample", lambda generator=None: samples)
    ours = softmax.sampled_nll(h, targets)
    torch.testing.assert_close(ours, reference_sampled_nll(softmax, h, targets, samples, correct_true=True))
    assert not torch.allclose(ours, reference_sampled_nll(softmax, h, targets, samples, correct_true=False))


@torch.no_grad()
def test_sampled_nll_masks_accidental_hits(monkeypatch) -> None:
    V = 8
    softmax = LMSoftmax(4, V, num_samples=3)
    target = 2
    h = torch.randn(1, 4)
    targets = torch.tensor([target])
    softmax.weight[target] = 3.0 * h[0]  # the target is well predicted: an unmasked hit would weigh a lot
    softmax.bias[5] = -1e4  # id 5 is "dead": its logit contributes nothing to any sum

    def with_samples(ids: list[int]) -> float:
        monkeypatch.setattr(softmax, "sample", lambda generator=None: torch.tensor(ids))
        return softmax.sampled_nll(h, targets).item()

    hit = with_samples([0, target, 7])  # the target was drawn as a negative
    dead = with_samples([0, 5, 7])  # the same draw with the hit replaced by nothing
    assert math.isclose(hit, dead, abs_tol=1e-5)
    # an implementation that forgot the mask would differ, whichever correction it applies to the true logit
    samples = torch.tensor([0, target, 7])
    for correct_true in (False, True):
        unmasked = reference_sampled_nll(softmax, h, targets, samples, correct_true=correct_true, mask_hits=False)
        masked = reference_sampled_nll(softmax, h, targets, samples, correct_true=correct_true, mask_hits=True)
        assert unmasked.item() - masked.item() > 0.1


def test_softmax_rejects_tiny_vocab() -> None:
    with pytest.raises(ValueError, match="vocab_size"):
        LMSoftmax(8, 3)
