"""The projected LSTM of ELMo (LSTMP), with optional cell and projection clipping.

One layer, one direction (PAPER.md, "Contextual layers"; Sak et al. 2014 for the projection)::

    i, f, g, o = split(W_ih x_t + W_hh h_{t-1} + b)        # PyTorch's gate order
    c_t = sigmoid(f) * c_{t-1} + sigmoid(i) * tanh(g)      # clipped to +-cell_clip
    h_t = W_hr (sigmoid(o) * tanh(c_t))                    # clipped to +-proj_clip

The parameters are laid out as ``torch.nn.LSTM(proj_size=...)`` lays them out, with one bias
instead of two (the published models have one). Without clipping the layer runs PyTorch's fused
kernel (cuDNN on GPU); with clipping it runs the recurrence above step by step. Both paths compute
the same function, which a test checks.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

# PyTorch falls back from oneDNN to its own CPU kernel for projected LSTMs and says so on every call
warnings.filterwarnings("ignore", message="LSTM with projections is not supported with oneDNN")


class LSTMPLayer(nn.Module):
    """One direction of one LSTMP layer over (B, T, X) inputs.

    Args:
        input_size: X.
        hidden_size: H, the cell size.
        proj_size: P, the output (and recurrent state) size.
        cell_clip: clip the cell state to +-this value (None: no clipping).
        proj_clip: clip the projected output to +-this value (None: no clipping).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        proj_size: int,
        cell_clip: float | None = None,
        proj_clip: float | None = None,
    ) -> None:
        super().__init__()
        self.input_size, self.hidden_size, self.proj_size = input_size, hidden_size, proj_size
        self.cell_clip, self.proj_clip = cell_clip, proj_clip
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(4 * hidden_size, proj_size))
        self.bias = nn.Parameter(torch.empty(4 * hidden_size))
        self.weight_hr = nn.Parameter(torch.empty(proj_size, hidden_size))
        # the fused kernel wants a second bias; ours is always zero and not a parameter
        self.register_buffer("_zero_bias", torch.zeros(4 * hidden_size), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = self.hidden_size**-0.5
        for w in (self.weight_ih, self.weight_hh, self.weight_hr):
            nn.init.uniform_(w, -bound, bound)
        nn.init.zeros_(self.bias)
        with torch.no_grad():  # forget-gate bias 1.0 (bilm-tf adds it at run time; we store it)
            self.bias[self.hidden_size : 2 * self.hidden_size] = 1.0

    @property
    def clipped(self) -> bool:
        return self.cell_clip is not None or self.proj_clip is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (B, T, X). Returns: (B, T, P), zero initial state."""
        if self.clipped:
            return self._recurrence(x)
        return self._fused(x)

    def _fused(self, x: torch.Tensor) -> torch.Tensor:
        B = x.shape[0]
        h0 = x.new_zeros(1, B, self.proj_size)  # (1, B, P)
        c0 = x.new_zeros(1, B, self.hidden_size)  # (1, B, H)
        params = [self.weight_ih, self.weight_hh, self.bias, self._zero_bias.to(x.dtype), self.weight_hr]
        if x.dtype != self.weight_ih.dtype:  # autocast does not reach torch.lstm's flat weights
            params = [p.to(x.dtype) for p in params]
        out, _, _ = torch.lstm(x, (h0, c0), params, True, 1, 0.0, self.training, False, True)
        return out  # (B, T, P)

    def _recurrence(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        H = self.hidden_size
        xw = torch.nn.functional.linear(x, self.weight_ih, self.bias)  # (B, T, 4H), all steps at once
        h = x.new_zeros(B, self.proj_size)  # (B, P)
        c = x.new_zeros(B, H)  # (B, H)
        outputs = []
        for t in range(T):
            gates = xw[:, t] + torch.nn.functional.linear(h, self.weight_hh)  # (B, 4H)
            i, f, g, o = gates.chunk(4, dim=-1)  # 4 x (B, H)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)  # (B, H)
            if self.cell_clip is not None:
                c = c.clamp(-self.cell_clip, self.cell_clip)
            h = torch.nn.functional.linear(torch.sigmoid(o) * torch.tanh(c), self.weight_hr)  # (B, P)
            if self.proj_clip is not None:
                h = h.clamp(-self.proj_clip, self.proj_clip)
            outputs.append(h)
        return torch.stack(outputs, dim=1)  # (B, T, P)
