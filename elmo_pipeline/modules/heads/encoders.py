"""Pieces the heads share: a masked BiLSTM, a masked softmax, masked pooling."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


class BiLSTMEncoder(nn.Module):
    """A bidirectional LSTM that never lets padding reach a real token (packed sequences).

    Args:
        input_dim: size of the inputs.
        hidden_size: units per direction; the output has ``2 * hidden_size``.
        num_layers: stacked layers.
        dropout: between stacked layers.
    """

    def __init__(self, input_dim: int, hidden_size: int, num_layers: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        self.lstm = nn.LSTM(
            input_dim,
            hidden_size,
            num_layers=num_layers,
            bidirectional=True,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.output_dim = 2 * hidden_size

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Args: x (B, T, D), mask (B, T) left-aligned. Returns (B, T, 2H), zero at padding."""
        lengths = mask.sum(dim=1).clamp(min=1).cpu()  # (B,)
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])  # (B, T, 2H)
        return out * mask.unsqueeze(-1)


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """softmax over ``dim`` where ``mask`` (broadcastable to ``scores``) is True; 0 elsewhere (float32)."""
    scores = scores.float()
    scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return torch.softmax(scores, dim=dim) * mask


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over T of (B, T, D) at real tokens. Returns (B, D)."""
    keep = mask.unsqueeze(-1).to(x.dtype)  # (B, T, 1)
    return (x * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1.0)  # (B, D)


def masked_max(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Max over T of (B, T, D) at real tokens. Returns (B, D)."""
    return x.masked_fill(~mask.unsqueeze(-1), torch.finfo(x.dtype).min).amax(dim=1)  # (B, D)
