"""Highway layers (Srivastava et al. 2015), as used after ELMo's character CNN."""

from __future__ import annotations

import torch
from torch import nn


class Highway(nn.Module):
    """``y = t * relu(W_H x + b_H) + (1 - t) * x`` with the transform gate ``t = sigmoid(W_T x + b_T)``.

    bilm-tf calls ``t`` the "carry" gate (``W_carry``), although it multiplies the transform; the
    weight reader in ``interop`` maps the names. ``b_T`` starts at -2 so that a fresh layer mostly
    carries its input through, as in bilm-tf.

    Args:
        dim: input and output size.
        num_layers: how many highway layers are stacked.
    """

    def __init__(self, dim: int, num_layers: int) -> None:
        super().__init__()
        self.transform = nn.ModuleList(nn.Linear(dim, dim) for _ in range(num_layers))
        self.gate = nn.ModuleList(nn.Linear(dim, dim) for _ in range(num_layers))
        for gate in self.gate:
            nn.init.constant_(gate.bias, -2.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for transform, gate in zip(self.transform, self.gate, strict=True):
            t = torch.sigmoid(gate(x))  # (..., D)
            x = t * torch.relu(transform(x)) + (1.0 - t) * x  # (..., D)
        return x
