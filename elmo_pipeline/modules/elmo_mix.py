"""The task side of ELMo: one learned scalar mix per place the task uses it, with dropout and masking.

    ELMo_k^(place) = dropout( gamma^(place) * sum_j softmax(w^(place))_j * h_{k,j} ) * mask_k

The paper mixes the biLM's L + 1 layers once for the task encoder's input and, for some tasks, once
more for its output (PAPER.md, "ELMo for a downstream task"). This module is the one place that does
it: :class:`~elmo_pipeline.models.elmo.Elmo` and the finetuning system both hold one, so the code
that the tests check against a hand computation is the code that makes the results table.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from elmo_pipeline.modules.scalar_mix import ScalarMix


class ElmoMix(nn.ModuleList):
    """N named scalar mixes of the same layers, each followed by dropout and zeroed at padding.

    It is the list of its :class:`ScalarMix` es (``mix[0]``, ``for m in mix``), so their parameters
    are named ``<attribute>.<i>.weights`` and ``<attribute>.<i>.gamma``; :attr:`names` says which is which.

    Args:
        num_layers: L + 1, the biLM's layers (token layer included).
        names: one mix per name: the places of a task (``input``, ``output``) or ``0`` .. ``N-1``.
        dropout: dropout on the mixed representations while training: one value for every mix, or one per name
            (0 where the consumer drops its input out itself: ELMo should be dropped out once, not twice).
        layer_norm: normalise each layer before mixing (one mean and variance over the unmasked elements).
        fixed_weights: fixed, non-trainable ``w`` (one per layer; gamma stays 1); default: trainable
            weights starting at 0 (an average).
        l2_coefficient: lambda of the L2 penalty on every mix's ``w`` (:meth:`penalty`; 0.001 in the paper).
        initial_gamma: the initial ``gamma`` of every mix, or one per name.
    """

    def __init__(
        self,
        num_layers: int,
        names: Sequence[str],
        dropout: float | Sequence[float] = 0.5,
        layer_norm: bool = False,
        fixed_weights: list[float] | None = None,
        l2_coefficient: float = 0.0,
        initial_gamma: float | Sequence[float] = 1.0,
    ) -> None:
        if not names:
            raise ValueError("ElmoMix: needs at least one mix (names)")
        dropouts = _per_name(dropout, names, "dropout")
        gammas = _per_name(initial_gamma, names, "initial_gamma")
        super().__init__(
            ScalarMix(
                num_layers,
                layer_norm=layer_norm,
                initial_weights=fixed_weights,
                trainable=fixed_weights is None,
                l2_coefficient=l2_coefficient,
                initial_gamma=gamma,
            )
            for gamma in gammas
        )
        for p in dropouts:
            if not 0.0 <= p < 1.0:
                raise ValueError(f"ElmoMix: dropout must be in [0, 1), got {p}")
        self.num_layers = num_layers
        self._names = [str(name) for name in names]
        self.dropouts = dropouts

    @property
    def names(self) -> list[str]:
        return list(self._names)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # checkpoints written before ElmoMix keyed the mixes by name (``mixes.input.weights``)
        for index, name in enumerate(self._names):
            for key in [k for k in state_dict if k.startswith(f"{prefix}{name}.")]:
                state_dict[f"{prefix}{index}." + key[len(f"{prefix}{name}.") :]] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"names={self._names}, dropout={self.dropouts}"

    def __getitem__(self, key: int | str | slice):  # also by name: mix["input"]
        if isinstance(key, str):
            return super().__getitem__(self._names.index(key))
        return super().__getitem__(key)

    def forward(self, layers: Sequence[torch.Tensor], mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Mix the layers once per name.

        Shapes: B batch, T tokens, L + 1 layers, P projection.

        Args:
            layers: L + 1 tensors (B, T, 2P).
            mask: (B, T) bool.

        Returns:
            name -> (B, T, 2P), zero at padded positions.
        """
        if len(layers) != self.num_layers:
            raise ValueError(f"ElmoMix: got {len(layers)} layers but the biLM has {self.num_layers} (LSTM layers + 1)")
        keep = mask.unsqueeze(-1)  # (B, T, 1)
        return {
            name: F.dropout(mix(layers, mask), p, self.training) * keep  # (B, T, 2P)
            for name, mix, p in zip(self._names, self, self.dropouts, strict=True)
        }

    def penalty(self) -> torch.Tensor:
        """Sum of every mix's L2 penalty on ``w``; the task adds it to its loss."""
        return sum((mix.penalty() for mix in self), start=self[0].weights.new_zeros(()))

    @torch.no_grad()
    def weights(self) -> dict[str, dict[str, list[float] | float]]:
        """softmax(w) (token layer first) and gamma of each mix: what each place reads from the biLM."""
        return {
            name: {"softmax_w": mix.normalized_weights().tolist(), "gamma": mix.gamma.item()}
            for name, mix in zip(self._names, self, strict=True)
        }


def _per_name(value: float | Sequence[float], names: Sequence[str], what: str) -> list[float]:
    if isinstance(value, int | float):
        return [float(value)] * len(names)
    values = [float(v) for v in value]
    if len(values) != len(names):
        raise ValueError(f"ElmoMix: {len(values)} values of {what} for {len(names)} mixes ({list(names)})")
    return values
