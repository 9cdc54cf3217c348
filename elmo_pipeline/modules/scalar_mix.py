"""The ELMo scalar mix (Peters et al. 2018, Eq. 1; PAPER.md, "ELMo for a downstream task").

    ELMo_k = gamma * sum_j softmax(w)_j * h_{k,j}

``w`` starts at 0 (an average of the layers) and ``gamma`` at 1 (or ``initial_gamma``). With
``layer_norm`` every layer is first normalised with ONE mean and ONE variance over all its unmasked
elements (not per token), as in the paper and AllenNLP. The L2 penalty ``lambda * ||w||^2``
(lambda = 0.001 in the paper) pulls the weights towards an average; the task adds
:meth:`ScalarMix.penalty` to its loss.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class ScalarMix(nn.Module):
    """A learned, softmax-normalised weighted sum of L same-shaped layers, scaled by ``gamma``.

    Args:
        num_layers: L, how many tensors are mixed (the biLM's layers, token layer included).
        layer_norm: normalise each layer (one mean and variance over its unmasked elements) before mixing.
        initial_weights: the L initial values of ``w`` (default all 0: an average of the layers).
        trainable: learn ``w`` and ``gamma``; False keeps both fixed at their initial values (e.g. the
            plain average with the default weights).
        l2_coefficient: lambda of the L2 penalty on ``w`` returned by :meth:`penalty` (0: no penalty).
        initial_gamma: the initial ``gamma`` (1 in the paper; smaller keeps a strong but untrained mix from
            drowning what it is concatenated to).
        eps: added to the variance in the layer normalisation.
    """

    def __init__(
        self,
        num_layers: int,
        layer_norm: bool = False,
        initial_weights: list[float] | None = None,
        trainable: bool = True,
        l2_coefficient: float = 0.0,
        initial_gamma: float = 1.0,
        eps: float = 1e-12,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"ScalarMix: num_layers must be at least 1, got {num_layers}")
        if initial_weights is None:
            initial_weights = [0.0] * num_layers
        if len(initial_weights) != num_layers:
            raise ValueError(
                f"ScalarMix: got {len(initial_weights)} initial weights for {num_layers} layers "
                "(scalar_mix initial_weights must have one value per biLM layer, token layer included)"
            )
        if l2_coefficient < 0:
            raise ValueError(f"ScalarMix: l2_coefficient must be >= 0, got {l2_coefficient}")
        self.num_layers = num_layers
        self.layer_norm = layer_norm
        self.l2_coefficient = l2_coefficient
        self.eps = eps
        self.weights = nn.Parameter(torch.tensor(initial_weights, dtype=torch.float32), requires_grad=trainable)  # (L,)
        self.gamma = nn.Parameter(torch.tensor(float(initial_gamma)), requires_grad=trainable)  # ()
        self.gamma_init = float(initial_gamma)

    def extra_repr(self) -> str:
        return (
            f"num_layers={self.num_layers}, layer_norm={self.layer_norm}, "
            f"trainable={self.weights.requires_grad}, l2_coefficient={self.l2_coefficient}"
        )

    def normalized_weights(self) -> torch.Tensor:
        """``softmax(w)``, the L layer weights that sum to 1."""
        return torch.softmax(self.weights, dim=0)  # (L,)

    def penalty(self) -> torch.Tensor:
        """``l2_coefficient * ||w||^2``, the regulariser a task adds to its loss (0 when the mix is fixed)."""
        if not self.weights.requires_grad:
            return self.weights.new_zeros(())
        return self.l2_coefficient * self.weights.pow(2).sum()  # ()

    def forward(self, layers: Sequence[torch.Tensor], mask: torch.Tensor | None = None) -> torch.Tensor:
        """Mix the layers.

        Shapes: B batch, T tokens, D features (any leading shape works without layer normalisation).

        Args:
            layers: L tensors of the same shape, e.g. (B, T, D).
            mask: (B, T) bool, True at real tokens; used only by the layer normalisation (None: every
                element counts).

        Returns:
            (B, T, D), the mix.
        """
        if len(layers) != self.num_layers:
            raise ValueError(
                f"ScalarMix: got {len(layers)} layers but the mix was built for {self.num_layers}; "
                "build it with num_layers equal to the biLM's layer count (LSTM layers + 1)"
            )
        weights = self.normalized_weights()  # (L,)
        mixed = None
        for weight, layer in zip(weights, layers, strict=True):
            if self.layer_norm:
                layer = self._normalize(layer, mask)  # (B, T, D)
            term = weight.to(layer.dtype) * layer  # (B, T, D)
            mixed = term if mixed is None else mixed + term
        return self.gamma.to(mixed.dtype) * mixed  # (B, T, D)

    def _normalize(self, layer: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """``(h - mean) / sqrt(var + eps)`` with one mean and variance over the unmasked elements of ``layer``."""
        stats = layer.float()  # statistics in float32 even for half-precision inputs
        if mask is None:
            mean = stats.mean()  # ()
            variance = (stats - mean).pow(2).mean()  # ()
        else:
            if mask.shape != layer.shape[:-1]:
                raise ValueError(
                    f"ScalarMix: mask of shape {tuple(mask.shape)} does not fit a layer of {tuple(layer.shape)}"
                )
            keep = mask.unsqueeze(-1).to(stats.dtype)  # (B, T, 1)
            count = (keep.sum() * layer.shape[-1]).clamp(min=1.0)  # () unmasked elements
            mean = (stats * keep).sum() / count  # ()
            variance = ((stats - mean) * keep).pow(2).sum() / count  # ()
        return ((stats - mean) / torch.sqrt(variance + self.eps)).to(layer.dtype)  # (B, T, D)
