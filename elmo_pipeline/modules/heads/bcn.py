"""The biattentive classification network (McCann et al. 2017, Sec. 5), the SST-5 head of Peters et al. (2018).

    x'   = ReLU(W_pre dropout(x))                        pre-encoding feed-forward
    X    = BiLSTM_enc(x')                                (B, T, 2H)
    A    = X X^T,  A_x = softmax over keys               biattention of the text with itself
    C    = A_x X                                         context summaries
    Y    = BiLSTM_int([X; X - C; X * C])  [; ELMo_out]   integrator
    pool = [max(Y); min(Y); mean(Y); softmax(v^T Y) Y]   pooled over tokens
    logits = FF(dropout(pool))
McCann et al. end with a maxout network; a ReLU feed-forward layer here keeps the head small.
"""

from __future__ import annotations

import torch
from torch import nn

from elmo_pipeline.modules.heads.base import HeadOutput, add_output_elmo, class_output
from elmo_pipeline.modules.heads.encoders import BiLSTMEncoder, masked_max, masked_mean, masked_softmax


class BiattentiveClassifier(nn.Module):
    """BCN for single-text classification (with one input, the biattention attends the text to itself).

    Args:
        input_dim: size of the token vectors.
        labels: the class labels.
        output_elmo_dim: size of ELMo concatenated to the integrator's output (0: none).
        pre_encode_dim: size of the pre-encoding feed-forward layer (300 in the paper's setup).
        hidden_size: encoder LSTM units per direction (300).
        integrator_size: integrator LSTM units per direction (300).
        output_hidden: hidden size of the output feed-forward layer.
        dropout: on the inputs, the integrator's input and the pooled vector.
    """

    num_inputs = 1

    def __init__(
        self,
        input_dim: int,
        labels: list[str],
        output_elmo_dim: int = 0,
        pre_encode_dim: int = 300,
        hidden_size: int = 300,
        integrator_size: int = 300,
        output_hidden: int = 300,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.pre_encode = nn.Linear(input_dim, pre_encode_dim)
        self.encoder = BiLSTMEncoder(pre_encode_dim, hidden_size)
        self.integrator = BiLSTMEncoder(3 * self.encoder.output_dim, integrator_size)
        pooled_dim = self.integrator.output_dim + output_elmo_dim
        self.self_attention = nn.Linear(pooled_dim, 1)
        self.output = nn.Sequential(
            nn.Linear(4 * pooled_dim, output_hidden),
            nn.ReLU(),
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
        """Shapes: B batch, T tokens, D input. inputs [(B, T, D)], masks [(B, T)], labels (B,)."""
        mask = masks[0]  # (B, T)
        x = torch.relu(self.pre_encode(self.dropout(inputs[0])))  # (B, T, F)
        X = self.encoder(x, mask)  # (B, T, 2H)
        affinity = X @ X.transpose(1, 2)  # (B, T, T)
        attention = masked_softmax(affinity, mask.unsqueeze(1))  # (B, T, T) over keys
        context = attention @ X  # (B, T, 2H)
        Y = self.integrator(self.dropout(torch.cat([X, X - context, X * context], dim=-1)), mask)  # (B, T, 2I)
        Y = add_output_elmo(Y, output_elmo)  # (B, T, 2I [+ E])
        weights = masked_softmax(self.self_attention(Y).squeeze(-1), mask)  # (B, T)
        self_pooled = (weights.unsqueeze(-1) * Y).sum(dim=1)  # (B, 2I)
        min_pooled = -masked_max(-Y, mask)  # (B, 2I)
        pooled = torch.cat([masked_max(Y, mask), min_pooled, masked_mean(Y, mask), self_pooled], dim=-1)  # (B, 8I)
        logits = self.output(self.dropout(pooled))  # (B, K)
        return class_output(logits, labels)

    def decode(self, output: HeadOutput, masks: list[torch.Tensor]) -> torch.Tensor:
        return output.logits.argmax(dim=-1)  # (B,)
