"""Recurrent cells of the biLM, chosen by name (``BiLMConfig.cell``): the LSTM and its variants.

Every cell is one layer in one direction, maps (B, T, X) inputs to (B, T, H) outputs and starts
from a zero state. Notation: ``[h, x]`` is the concatenation of the previous output and the input,
``W [h, x] = W_hh h + W_ih x`` (the two blocks are stored as ``weight_hh`` and ``weight_ih``), σ is
the logistic sigmoid, ``*`` the element-wise product.

``lstm``  (Hochreiter & Schmidhuber 1997, with the forget gate of Gers et al. 2000)::

    f, i, o = σ(W_{f,i,o} [h, x] + b_{f,i,o})
    C~      = tanh(W_C [h, x] + b_C)
    C       = f * C_prev + i * C~
    h       = o * tanh(C)                                 params 4H(H + X) + 4H

``coupled`` input and forget gates (CIFG; Greff et al. 2017): ``i = 1 - f``::

    C = f * C_prev + (1 - f) * C~                         params 3H(H + X) + 3H

``peephole`` connections (Gers & Schmidhuber 2000; Greff et al. 2017): f and i see ``C_prev``,
o sees the new ``C``, through diagonal weights p::

    f = σ(W_f [h, x] + p_f * C_prev + b_f),  i = σ(W_i [h, x] + p_i * C_prev + b_i)
    o = σ(W_o [h, x] + p_o * C + b_o)                     params 4H(H + X) + 4H + 3H

``gru`` (Cho et al. 2014) in the form of cuDNN and ``torch.nn.GRU``: the reset gate multiplies the
recurrent product ``W_hn h + b_hn`` rather than h itself (Cho et al. write ``W_n (r * h)``),
which is what lets it run as one fused kernel::

    r = σ(W_r [h, x] + b_r),  z = σ(W_z [h, x] + b_z)
    n = tanh(W_in x + b_n + r * (W_hn h + b_hn))
    h = (1 - z) * n + z * h_prev                          params 3H(H + X) + 3H + H

``layernorm_lstm`` (Ba et al. 2016, "Layer normalization", LSTM section): the input and the
recurrent pre-activations are normalised separately, each gate over its own H units, and so is
the cell before the output non-linearity; ``LN(a; g, b) = (g / σ_a) * (a - μ_a) + b``::

    f, i, o, C~ pre-activations = LN(W_hh h; g_hh) + LN(W_ih x; g_ih) + b
    C = σ(f) * C_prev + σ(i) * tanh(C~)
    h = σ(o) * tanh(LN(C; g_C, b_C))                      params 4H(H + X) + 4H + 8H + 2H

(the two gate normalisations have gains only: their biases would duplicate b.)

``lstmp`` is ELMo's projected, clipped LSTM (:class:`elmo_pipeline.modules.lstm.LSTMPLayer`).

Speed: ``lstm`` and ``gru`` (and unclipped ``lstmp``) run PyTorch's fused kernels (``torch.lstm``,
``torch.gru``; cuDNN on GPU). The others precompute ``W_ih x`` for all steps in one matrix
multiply and run the rest step by step in Python. On this project's CPU machine neither
``torch.jit.script`` nor ``torch.compile`` of the step made that loop faster (docs/lstm_lab.md has
the measurements), so the loop stays plain, readable torch.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from elmo_pipeline.modules.lstm import LSTMPLayer

LN_EPS = 1e-5


def _uniform_init(module: nn.Module, hidden_size: int) -> None:
    """PyTorch's RNN initialisation: every parameter U(-1/sqrt(H), 1/sqrt(H)); biases then zero."""
    bound = hidden_size**-0.5
    for name, p in module.named_parameters():
        if name.startswith("weight") or name.startswith("peep"):
            nn.init.uniform_(p, -bound, bound)
        else:
            nn.init.zeros_(p)


def _cast(params: list[torch.Tensor], dtype: torch.dtype) -> list[torch.Tensor]:
    # autocast does not reach the fused kernels' flat weights
    return [p.to(dtype) for p in params] if params[0].dtype != dtype else params


class _GatedLayer(nn.Module):
    """What every cell shares: ``W_ih`` (G*H, X), ``W_hh`` (G*H, H), one bias per gate, and the step loop.

    A cell sets ``gates`` (G) and ``forget_gate`` (the index of f in its gate order, or None),
    registers its own extra parameters after ``super().__init__`` and then calls
    ``reset_parameters``, so the initialisation draws in the order the parameters were declared.
    Its equations are its ``step``; a cell with a fused kernel overrides ``forward`` instead.

    Args:
        input_size: X.
        hidden_size: H, the state and output size.
    """

    gates: int
    forget_gate: int | None = None

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.weight_ih = nn.Parameter(torch.empty(self.gates * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(self.gates * hidden_size, hidden_size))
        self.bias = nn.Parameter(torch.empty(self.gates * hidden_size))

    def reset_parameters(self) -> None:
        _uniform_init(self, self.hidden_size)
        if self.forget_gate is not None:
            H, k = self.hidden_size, self.forget_gate
            with torch.no_grad():  # forget-gate bias 1.0, as the biLM's LSTMP
                self.bias[k * H : (k + 1) * H] = 1.0

    def input_gates(self, x: torch.Tensor) -> torch.Tensor:
        """``W_ih x + b`` for all steps in one matrix multiply: (B, T, X) -> (B, T, G*H)."""
        return F.linear(x, self.weight_ih, self.bias)  # (B, T, G*H)

    def step(self, xw: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One time step: this step's input gates ``xw`` (B, G*H) and the state h, c (B, H) -> the new h, c."""
        raise NotImplementedError(f"{type(self).__name__} runs a fused kernel, not steps")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (B, T, X). Returns: (B, T, H), zero initial state."""
        B, T, _ = x.shape
        xw = self.input_gates(x)  # (B, T, G*H), all steps at once
        h = x.new_zeros(B, self.hidden_size)  # (B, H)
        c = x.new_zeros(B, self.hidden_size)  # (B, H)
        outputs = []
        for t in range(T):
            h, c = self.step(xw[:, t], h, c)  # (B, H), (B, H)
            outputs.append(h)
        return torch.stack(outputs, dim=1)  # (B, T, H)


class LSTMLayer(_GatedLayer):
    """The LSTM, one bias per gate, run by PyTorch's fused kernel (gate order i, f, g, o)."""

    gates, forget_gate = 4, 1

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__(input_size, hidden_size)
        # the fused kernel wants a second bias; ours is always zero and not a parameter
        self.register_buffer("_zero_bias", torch.zeros(4 * hidden_size), persistent=False)
        self.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (B, T, X). Returns: (B, T, H), zero initial state."""
        h0 = x.new_zeros(1, x.shape[0], self.hidden_size)  # (1, B, H)
        params = _cast([self.weight_ih, self.weight_hh, self.bias, self._zero_bias], x.dtype)
        out, _, _ = torch.lstm(x, (h0, h0), params, True, 1, 0.0, self.training, False, True)
        return out  # (B, T, H)


class GRULayer(_GatedLayer):
    """The GRU in cuDNN's form, run by PyTorch's fused kernel (gate order r, z, n).

    Of the two biases of ``torch.nn.GRU`` only ``b_hn`` is not redundant (it sits inside ``r * (...)``),
    so the layer keeps one bias per gate plus ``bias_hn``.
    """

    gates = 3

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__(input_size, hidden_size)
        self.bias_hn = nn.Parameter(torch.empty(hidden_size))
        self.register_buffer("_zero_bias", torch.zeros(2 * hidden_size), persistent=False)
        self.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (B, T, X). Returns: (B, T, H), zero initial state."""
        h0 = x.new_zeros(1, x.shape[0], self.hidden_size)  # (1, B, H)
        bias_hh = torch.cat([self._zero_bias, self.bias_hn])  # (3H,): zero for r and z, b_hn for n
        params = _cast([self.weight_ih, self.weight_hh, self.bias, bias_hh], x.dtype)
        out, _ = torch.gru(x, h0, params, True, 1, 0.0, self.training, False, True)
        return out  # (B, T, H)


class CoupledLSTMLayer(_GatedLayer):
    """LSTM with coupled input and forget gates, ``i = 1 - f`` (gate order f, g, o)."""

    gates, forget_gate = 3, 0

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__(input_size, hidden_size)
        self.reset_parameters()

    def step(self, xw: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f, g, o = (xw + F.linear(h, self.weight_hh)).chunk(3, dim=-1)  # 3 x (B, H)
        f = torch.sigmoid(f)
        c = f * c + (1.0 - f) * torch.tanh(g)  # (B, H)
        h = torch.sigmoid(o) * torch.tanh(c)  # (B, H)
        return h, c


class PeepholeLSTMLayer(_GatedLayer):
    """LSTM with peephole connections: f, i see ``C_prev``, o sees ``C`` (gate order i, f, g, o)."""

    gates, forget_gate = 4, 1

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__(input_size, hidden_size)
        self.peep_i = nn.Parameter(torch.empty(hidden_size))
        self.peep_f = nn.Parameter(torch.empty(hidden_size))
        self.peep_o = nn.Parameter(torch.empty(hidden_size))
        self.reset_parameters()

    def step(self, xw: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        i, f, g, o = (xw + F.linear(h, self.weight_hh)).chunk(4, dim=-1)  # 4 x (B, H)
        i = torch.sigmoid(i + self.peep_i * c)  # peeps at C_prev
        f = torch.sigmoid(f + self.peep_f * c)
        c = f * c + i * torch.tanh(g)  # (B, H)
        o = torch.sigmoid(o + self.peep_o * c)  # peeps at the new C
        h = o * torch.tanh(c)  # (B, H)
        return h, c


def _gate_norm(a: torch.Tensor, gates: int) -> torch.Tensor:
    """Normalise each gate's H pre-activations of (..., gates * H) to mean 0, variance 1."""
    shape = a.shape
    a = a.reshape(*shape[:-1], gates, shape[-1] // gates)  # (..., G, H)
    return F.layer_norm(a, a.shape[-1:], eps=LN_EPS).reshape(shape)  # (..., G * H)


class LayerNormLSTMLayer(_GatedLayer):
    """Layer-normalised LSTM (Ba et al. 2016), gate order i, f, g, o."""

    gates, forget_gate = 4, 1

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__(input_size, hidden_size)
        self.gain_ih = nn.Parameter(torch.empty(4 * hidden_size))
        self.gain_hh = nn.Parameter(torch.empty(4 * hidden_size))
        self.gain_cell = nn.Parameter(torch.empty(hidden_size))
        self.bias_cell = nn.Parameter(torch.empty(hidden_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        with torch.no_grad():
            for gain in (self.gain_ih, self.gain_hh, self.gain_cell):
                gain.fill_(1.0)

    def input_gates(self, x: torch.Tensor) -> torch.Tensor:
        return _gate_norm(F.linear(x, self.weight_ih), 4) * self.gain_ih + self.bias  # (B, T, 4H)

    def step(self, xw: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hw = _gate_norm(F.linear(h, self.weight_hh), 4) * self.gain_hh  # (B, 4H)
        i, f, g, o = (xw + hw).chunk(4, dim=-1)  # 4 x (B, H)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)  # (B, H)
        c_norm = F.layer_norm(c, (self.hidden_size,), self.gain_cell, self.bias_cell, eps=LN_EPS)  # (B, H)
        h = torch.sigmoid(o) * torch.tanh(c_norm)  # (B, H)
        return h, c


# name -> class; the value of BiLMConfig.cell (--model.bilm.cell)
CELLS: dict[str, type[nn.Module]] = {
    "lstmp": LSTMPLayer,
    "lstm": LSTMLayer,
    "coupled": CoupledLSTMLayer,
    "peephole": PeepholeLSTMLayer,
    "gru": GRULayer,
    "layernorm_lstm": LayerNormLSTMLayer,
}


def make_cell(
    name: str,
    input_size: int,
    output_size: int,
    cell_size: int,
    cell_clip: float | None = None,
    proj_clip: float | None = None,
    fast: bool = True,
    compiled: bool = False,
) -> nn.Module:
    """One layer of the cell ``name`` mapping (B, T, input_size) to (B, T, output_size).

    ``lstmp`` has a cell of ``cell_size`` projected to ``output_size`` and is the only cell that
    clips (``cell_clip``, ``proj_clip``) or compiles (``compiled``, see LSTMPLayer). Every other
    cell has no projection: its state and output are ``output_size`` wide, and ``cell_size`` and the
    clip values do not apply to it.
    """
    if name not in CELLS:
        raise ValueError(f"cells: unknown cell {name!r}; choose one of {sorted(CELLS)} (--model.bilm.cell)")
    if name == "lstmp":
        return LSTMPLayer(input_size, cell_size, output_size, cell_clip, proj_clip, fast=fast, compiled=compiled)
    return CELLS[name](input_size, output_size)
