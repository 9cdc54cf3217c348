"""ScalarMix against a hand-written numpy mix (PAPER.md, Eq. 1)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from elmo_pipeline.modules.scalar_mix import ScalarMix


def _layers(seed: int = 0, num_layers: int = 3, shape: tuple[int, ...] = (2, 4, 5)) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(loc=j, scale=1 + j, size=shape).astype(np.float32) for j in range(num_layers)]


def _softmax(w: np.ndarray) -> np.ndarray:
    e = np.exp(w - w.max())
    return e / e.sum()


def _set(mix: ScalarMix, weights: list[float], gamma: float) -> None:
    with torch.no_grad():
        mix.weights.copy_(torch.tensor(weights))
        mix.gamma.fill_(gamma)


def test_initial_mix_is_the_plain_average():
    layers = _layers()
    mix = ScalarMix(3)
    assert torch.equal(mix.weights.detach(), torch.zeros(3)) and mix.gamma.item() == 1.0
    out = mix([torch.from_numpy(h) for h in layers])
    np.testing.assert_allclose(out.detach().numpy(), sum(layers) / 3, rtol=1e-6, atol=1e-6)


def test_mix_matches_hand_computation():
    layers = _layers(seed=1)
    w, gamma = np.array([0.3, -1.2, 2.0]), 0.7
    mix = ScalarMix(3)
    _set(mix, w.tolist(), gamma)
    s = _softmax(w)
    expected = gamma * (s[0] * layers[0] + s[1] * layers[1] + s[2] * layers[2])
    out = mix([torch.from_numpy(h) for h in layers])
    np.testing.assert_allclose(out.detach().numpy(), expected, rtol=1e-5, atol=1e-6)


def test_layer_norm_uses_one_mean_and_variance_over_unmasked_elements():
    layers = _layers(seed=2)
    mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=bool)
    w, gamma = np.array([1.0, 0.0, -0.5]), 1.5
    mix = ScalarMix(3, layer_norm=True)
    _set(mix, w.tolist(), gamma)
    s = _softmax(w)
    expected = np.zeros_like(layers[0], dtype=np.float64)
    for j, h in enumerate(layers):
        real = h[mask]  # (n_real, D): every unmasked element of the layer, all tokens together
        mean, var = real.mean(), real.var()
        expected += s[j] * (h - mean) / np.sqrt(var + 1e-12)
    expected *= gamma
    out = mix([torch.from_numpy(h) for h in layers], torch.from_numpy(mask))
    np.testing.assert_allclose(out.detach().numpy(), expected, rtol=1e-5, atol=1e-5)
    # not per token: a token's normalised vector does not have zero mean on its own
    assert abs(float(out.detach()[0, 0].mean())) > 1e-3


def test_layer_norm_without_mask_counts_every_element():
    layers = _layers(seed=3, num_layers=2)
    mix = ScalarMix(2, layer_norm=True)
    out = mix([torch.from_numpy(h) for h in layers]).detach().numpy()
    expected = sum(0.5 * (h - h.mean()) / np.sqrt(h.var() + 1e-12) for h in layers)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_fixed_weights_are_not_trained_and_not_penalised():
    mix = ScalarMix(3, initial_weights=[0.0, 1.0, 2.0], trainable=False, l2_coefficient=0.1)
    assert not mix.weights.requires_grad and not mix.gamma.requires_grad
    assert float(mix.penalty()) == 0.0
    layers = [torch.from_numpy(h) for h in _layers(seed=4)]
    out = mix(layers)
    s = _softmax(np.array([0.0, 1.0, 2.0]))
    expected = sum(s[j] * layers[j].numpy() for j in range(3))
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_l2_penalty_and_gradients():
    mix = ScalarMix(3, l2_coefficient=0.001)
    _set(mix, [1.0, -2.0, 0.5], 1.0)
    penalty = mix.penalty()
    assert penalty.item() == pytest.approx(0.001 * (1.0 + 4.0 + 0.25))
    layers = [torch.from_numpy(h) for h in _layers(seed=5)]
    (mix(layers).sum() + penalty).backward()
    assert mix.weights.grad is not None and mix.gamma.grad is not None
    assert torch.all(mix.weights.grad != 0)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="2 initial weights for 3 layers"):
        ScalarMix(3, initial_weights=[0.0, 0.0])
    mix = ScalarMix(3)
    with pytest.raises(ValueError, match="got 2 layers but the mix was built for 3"):
        mix([torch.zeros(1, 2, 3)] * 2)
