"""What every head shares: its output type, the :class:`Head` interface and the steps every head takes the same way
(the heads import this)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F


@dataclass
class HeadOutput:
    """What a head returns.

    Attributes:
        logits: (B, K) class scores, or (B, T, K) tag scores.
        loss: the task loss (mean over the batch) when labels were given.
    """

    logits: torch.Tensor
    loss: torch.Tensor | None = None


@runtime_checkable
class Head(Protocol):
    """The interface of every head.

    Attributes:
        num_inputs: texts per example: 1, or 2 for (premise, hypothesis).
    """

    num_inputs: int

    def forward(
        self,
        inputs: list[torch.Tensor],
        masks: list[torch.Tensor],
        labels: torch.Tensor | None = None,
        output_elmo: list[torch.Tensor] | None = None,
    ) -> HeadOutput:
        """Args: ``num_inputs`` tensors (B, T_i, D) and masks (B, T_i); labels (B,) or (B, T) (-100 at
        padding); ELMo at the output, ``num_inputs`` tensors (B, T_i, E), when the head uses it."""
        ...

    def decode(self, output: HeadOutput, masks: list[torch.Tensor]) -> torch.Tensor:
        """Predictions: (B,) class ids, or (B, T) tag ids (0 at padding)."""
        ...


def add_output_elmo(x: torch.Tensor, output_elmo: list[torch.Tensor] | None, index: int = 0) -> torch.Tensor:
    """ELMo at the head's output place (Peters et al. 2018, Sec. 3.3): ``[x; ELMo_out]`` for text ``index``.

    Args:
        x: (B, T, D), the head's vectors of that text.
        output_elmo: the ELMo vectors of every text, (B, T_i, E) each, or None (x is returned as it is).
        index: which text x belongs to.

    Returns:
        (B, T, D + E), or x.
    """
    if output_elmo is None:
        return x
    return torch.cat([x, output_elmo[index]], dim=-1)  # (B, T, D + E)


def class_output(logits: torch.Tensor, labels: torch.Tensor | None) -> HeadOutput:
    """A classifier's output: logits (B, K) and, given labels (B,), their mean cross-entropy.

    Both in float32, also under bf16 autocast.
    """
    logits = logits.float()
    return HeadOutput(logits, F.cross_entropy(logits, labels) if labels is not None else None)
