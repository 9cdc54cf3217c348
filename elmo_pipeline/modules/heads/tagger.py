"""BiLSTM-CRF sequence tagger (Lample et al. 2016), the NER head of Peters et al. (2018).

h_t = BiLSTM(dropout(x))_t        stacked, ``hidden_size`` per direction
emit_t = W [dropout(h_t); ELMo_out_t] + b       tag scores (ELMo at the output only if configured)
loss = -log p(y | x) under a CRF constrained to valid BIOUL sequences; prediction = Viterbi
"""

from __future__ import annotations

import torch
from torch import nn

from elmo_pipeline.modules.crf import ConditionalRandomField, bioul_allowed_transitions
from elmo_pipeline.modules.heads.base import HeadOutput, add_output_elmo
from elmo_pipeline.modules.heads.encoders import BiLSTMEncoder

IGNORE_INDEX = -100


class CrfTagger(nn.Module):
    """BiLSTM encoder + linear tag scores + CRF.

    Args:
        input_dim: size of the token vectors.
        labels: the tag set (BIOUL, ``O`` first).
        output_elmo_dim: size of ELMo concatenated to the encoder's output (0: none).
        hidden_size: LSTM units per direction (200 in the paper's setup).
        num_layers: stacked BiLSTM layers (2 in the paper's setup).
        dropout: on the inputs, between layers and on the encoder's output (0.5).
        constrain: forbid invalid BIOUL transitions in the CRF.
    """

    num_inputs = 1

    def __init__(
        self,
        input_dim: int,
        labels: list[str],
        output_elmo_dim: int = 0,
        hidden_size: int = 200,
        num_layers: int = 2,
        dropout: float = 0.5,
        constrain: bool = True,
    ) -> None:
        super().__init__()
        self.labels = list(labels)
        self.dropout = nn.Dropout(dropout)
        self.encoder = BiLSTMEncoder(input_dim, hidden_size, num_layers, dropout)
        self.tag_projection = nn.Linear(self.encoder.output_dim + output_elmo_dim, len(labels))
        allowed = bioul_allowed_transitions(self.labels) if constrain else None
        self.crf = ConditionalRandomField(len(labels), allowed)

    def forward(
        self,
        inputs: list[torch.Tensor],
        masks: list[torch.Tensor],
        labels: torch.Tensor | None = None,
        output_elmo: list[torch.Tensor] | None = None,
    ) -> HeadOutput:
        """Shapes: B batch, T tokens, D input, K tags. inputs [(B, T, D)], masks [(B, T)], labels (B, T)."""
        mask = masks[0]  # (B, T)
        h = self.dropout(self.encoder(self.dropout(inputs[0]), mask))  # (B, T, 2H)
        h = add_output_elmo(h, output_elmo)  # (B, T, 2H [+ E])
        emissions = self.tag_projection(h).float()  # (B, T, K); the CRF works in float32, also under bf16 autocast
        loss = None
        if labels is not None:
            gold = labels.masked_fill(~mask, 0)  # (B, T)
            loss = -self.crf(emissions, gold, mask).mean()
        return HeadOutput(emissions, loss)

    def decode(self, output: HeadOutput, masks: list[torch.Tensor]) -> torch.Tensor:
        """Viterbi: (B, T) tag ids, never a forbidden BIOUL transition."""
        return self.crf.viterbi(output.logits, masks[0])[0]
