"""ELMo's context-independent token encoder: character CNN -> highway -> projection (PAPER.md)."""

from __future__ import annotations

import torch
from torch import nn

from elmo_pipeline.modules.highway import Highway


class CharCNNEncoder(nn.Module):
    """Maps (B, T, C) shifted character ids to (B, T, P) token vectors.

    Each token's characters are embedded, convolved with filters of several widths, max-pooled over
    the character positions, passed through the activation, ``num_highway`` highway layers and a
    linear projection. An all-zero character row (a padded position) is a valid input; its output is
    masked by the callers.

    Args:
        num_chars: rows of the character embedding (262: 261 ids + the zero row).
        char_dim: character embedding size.
        filters: ``[[width, count], ...]`` of the convolutions.
        num_highway: highway layers after the CNN.
        output_dim: size of the projection (the biLM's P).
        activation: ``relu`` (ELMo) or ``tanh``.
    """

    def __init__(
        self,
        num_chars: int,
        char_dim: int,
        filters: list[list[int]],
        num_highway: int,
        output_dim: int,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        if activation not in ("relu", "tanh"):
            raise ValueError(
                f"char_cnn: activation must be 'relu' or 'tanh', got {activation!r} (--model.bilm.activation)"
            )
        self.activation = torch.relu if activation == "relu" else torch.tanh
        self.embedding = nn.Embedding(num_chars, char_dim, padding_idx=0)
        self.convs = nn.ModuleList(nn.Conv1d(char_dim, count, kernel_size=width) for width, count in filters)
        num_filters = sum(count for _, count in filters)
        self.highway = Highway(num_filters, num_highway)
        self.projection = nn.Linear(num_filters, output_dim)

    def forward(self, chars: torch.Tensor) -> torch.Tensor:
        """Args: chars (B, T, C) int. Returns: (B, T, P)."""
        B, T, C = chars.shape
        x = self.embedding(chars.reshape(B * T, C)).transpose(1, 2)  # (B*T, D, C)
        # max over positions, then the activation (they commute for monotone activations)
        pooled = [self.activation(conv(x).amax(dim=-1)) for conv in self.convs]  # [(B*T, count)]
        h = self.highway(torch.cat(pooled, dim=-1))  # (B*T, F)
        return self.projection(h).reshape(B, T, -1)  # (B, T, P)
