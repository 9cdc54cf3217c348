"""Task heads: plain modules behind one small interface, chosen in YAML (``--model.head``).

A head receives the embedded inputs (the baseline token vectors, with ELMo concatenated at the
input when it is used), their masks, optionally the labels and the ELMo vectors for its output
place, and returns logits (and the loss when labels are given). Every head is built as
``Head(input_dim, labels, output_elmo_dim, **its own options)``:

    CrfTagger                 NER: BiLSTM-CRF with BIOUL constraints (Lample et al. 2016; Peters et al. 2018)
    BiattentiveClassifier     SST-5: the biattentive classification network (McCann et al. 2017)
    ESIM                      SNLI: enhanced sequential inference model (Chen et al. 2017)
"""

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


from elmo_pipeline.modules.heads.bcn import BiattentiveClassifier  # noqa: E402
from elmo_pipeline.modules.heads.esim import ESIM  # noqa: E402
from elmo_pipeline.modules.heads.tagger import CrfTagger  # noqa: E402

__all__ = ["ESIM", "BiattentiveClassifier", "CrfTagger", "Head", "HeadOutput"]
