"""What every head shares: its output type and the :class:`Head` interface (the heads import this)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch


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
