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

    With ``dedup`` (the default) the CNN runs once per *distinct* token of the input and the
    result is gathered back to every occurrence; gradients flow back through the gather (they sum
    over a token's occurrences, exactly as the per-occurrence computation's do). A batch of
    running text holds each frequent word many times: 64 sentences of 40 Wikipedia tokens have
    about 970 distinct tokens among 2,560. It runs on the CPU only: on a GPU ``torch.unique``'s
    data-dependent size would make the host wait for the device at every batch, and the CNN is cheap
    there.

    Args:
        num_chars: rows of the character embedding (262: 261 ids + the zero row).
        char_dim: character embedding size.
        filters: ``[[width, count], ...]`` of the convolutions.
        num_highway: highway layers after the CNN.
        output_dim: size of the projection (the biLM's P).
        activation: ``relu`` (ELMo) or ``tanh``.
        dedup: encode each distinct token once, on the CPU (False: every position, the plain path).
    """

    def __init__(
        self,
        num_chars: int,
        char_dim: int,
        filters: list[list[int]],
        num_highway: int,
        output_dim: int,
        activation: str = "relu",
        dedup: bool = True,
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
        self.dedup = dedup

    def forward(self, chars: torch.Tensor) -> torch.Tensor:
        """Args: chars (B, T, C) int. Returns: (B, T, P)."""
        B, T, C = chars.shape
        flat = chars.reshape(B * T, C)  # (B*T, C)
        if not self.dedup or flat.device.type != "cpu":
            return self.encode(flat).reshape(B, T, -1)  # (B, T, P)
        distinct, occurrence = torch.unique(flat, dim=0, return_inverse=True)  # (U, C), (B*T,)
        return self.encode(distinct)[occurrence].reshape(B, T, -1)  # (B, T, P)

    def encode(self, chars: torch.Tensor) -> torch.Tensor:
        """Args: chars (N, C) int, one token a row. Returns: (N, P)."""
        x = self.embedding(chars).transpose(1, 2)  # (N, D, C)
        # max over positions, then the activation (they commute for monotone activations)
        pooled = [self.activation(conv(x).amax(dim=-1)) for conv in self.convs]  # [(N, count)]
        h = self.highway(torch.cat(pooled, dim=-1))  # (N, F)
        return self.projection(h)  # (N, P)
