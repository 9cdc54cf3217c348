"""ESIM, the enhanced sequential inference model (Chen et al. 2017), the SNLI head of Peters et al. (2018).

    a = BiLSTM_enc(dropout(premise)) [; ELMo_out],  b = BiLSTM_enc(dropout(hypothesis)) [; ELMo_out]
    e_ij = a_i . b_j;   a~ = softmax_j(e) b,   b~ = softmax_i(e)^T a            soft alignment
    m_a = ReLU(W [a; a~; a - a~; a * a~]),  m_b likewise                      enhancement + projection
    v_a = BiLSTM_inf(dropout(m_a)),  v_b likewise                            inference composition
    logits = MLP(dropout([mean(v_a); max(v_a); mean(v_b); max(v_b)]))          tanh hidden layer
ELMo at the output goes where Peters et al. put it for SNLI: beside the output of the first biRNN.
"""

from __future__ import annotations

import torch
from torch import nn

from elmo_pipeline.modules.heads.base import HeadOutput, add_output_elmo, class_output
from elmo_pipeline.modules.heads.encoders import BiLSTMEncoder, masked_max, masked_mean, masked_softmax


class ESIM(nn.Module):
    """ESIM over a (premise, hypothesis) pair.

    Args:
        input_dim: size of the token vectors.
        labels: the class labels.
        output_elmo_dim: size of ELMo concatenated to the encoder's output (0: none).
        hidden_size: encoder LSTM units per direction (300 in the paper's setup).
        projection_dim: size of the projection of the enhanced vectors (300).
        inference_size: inference LSTM units per direction (300).
        output_hidden: hidden size of the output MLP (300).
        dropout: on the inputs, the inference input and the pooled vector (0.5).
    """

    num_inputs = 2

    def __init__(
        self,
        input_dim: int,
        labels: list[str],
        output_elmo_dim: int = 0,
        hidden_size: int = 300,
        projection_dim: int = 300,
        inference_size: int = 300,
        output_hidden: int = 300,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.encoder = BiLSTMEncoder(input_dim, hidden_size)
        encoded = self.encoder.output_dim + output_elmo_dim
        self.projection = nn.Linear(4 * encoded, projection_dim)
        self.inference = BiLSTMEncoder(projection_dim, inference_size)
        self.output = nn.Sequential(
            nn.Linear(4 * self.inference.output_dim, output_hidden),
            nn.Tanh(),
            nn.Dropout(dropout),
            nn.Linear(output_hidden, len(labels)),
        )

    def forward(
        self,
        inputs: list[torch.Tensor],
        masks: list[torch.Tensor],
        labels: torch.Tensor | None = None,
        output_elmo: list[torch.Tensor] | None = None,
    ) -> HeadOutput:
        """Shapes: B batch, Ta/Tb premise/hypothesis tokens, D input. inputs [(B, Ta, D), (B, Tb, D)]."""
        mask_a, mask_b = masks
        a = add_output_elmo(self.encoder(self.dropout(inputs[0]), mask_a), output_elmo, 0)  # (B, Ta, 2H [+ E])
        b = add_output_elmo(self.encoder(self.dropout(inputs[1]), mask_b), output_elmo, 1)  # (B, Tb, 2H [+ E])
        similarity = a @ b.transpose(1, 2)  # (B, Ta, Tb)
        a_aligned = masked_softmax(similarity, mask_b.unsqueeze(1)) @ b  # (B, Ta, E')
        b_aligned = masked_softmax(similarity.transpose(1, 2), mask_a.unsqueeze(1)) @ a  # (B, Tb, E')
        m_a = torch.relu(self.projection(torch.cat([a, a_aligned, a - a_aligned, a * a_aligned], dim=-1)))  # (B, Ta, P)
        m_b = torch.relu(self.projection(torch.cat([b, b_aligned, b - b_aligned, b * b_aligned], dim=-1)))  # (B, Tb, P)
        v_a = self.inference(self.dropout(m_a), mask_a)  # (B, Ta, 2I)
        v_b = self.inference(self.dropout(m_b), mask_b)  # (B, Tb, 2I)
        pooled = torch.cat(
            [masked_mean(v_a, mask_a), masked_max(v_a, mask_a), masked_mean(v_b, mask_b), masked_max(v_b, mask_b)],
            dim=-1,
        )  # (B, 8I)
        logits = self.output(self.dropout(pooled))  # (B, K)
        return class_output(logits, labels)

    def decode(self, output: HeadOutput, masks: list[torch.Tensor]) -> torch.Tensor:
        return output.logits.argmax(dim=-1)  # (B,)
