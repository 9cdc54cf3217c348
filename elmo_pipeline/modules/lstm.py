"""The projected LSTM of ELMo (LSTMP), with optional cell and projection clipping.

One layer, one direction (PAPER.md, "Contextual layers"; Sak et al. 2014 for the projection)::

    i, f, g, o = split(W_ih x_t + W_hh h_{t-1} + b)        # PyTorch's gate order
    c_t = sigmoid(f) * c_{t-1} + sigmoid(i) * tanh(g)      # clipped to +-cell_clip
    h_t = W_hr (sigmoid(o) * tanh(c_t))                    # clipped to +-proj_clip

The parameters are laid out as ``torch.nn.LSTM(proj_size=...)`` lays them out, with one bias
instead of two (the published models have one). Without clipping the layer runs PyTorch's fused
kernel (cuDNN on GPU). With clipping it runs the recurrence above step by step, in one of two ways:

- ``fast`` (the default): :class:`ClippedLSTMPFunction`, a hand-written forward and backward. The
  forward writes every step into preallocated buffers with in-place kernels; the backward runs the
  recurrence in reverse with about a dozen kernels a step and computes the weight gradients as one
  matrix multiply over all steps (as cuDNN does), instead of autograd's per-step graph. Under CPU
  or CUDA autocast the input projection ``W_ih x`` runs in the autocast dtype and the recurrence
  itself in float32, so the cell state never accumulates in bf16.
- ``plain``: the same equations in ordinary autograd-tracked torch, kept as the reference that the
  tests and ``elmo-pipeline bench`` compare the fast path with.

All paths compute the same function, which tests check (forward and gradients).
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
        fast: run a clipped layer with :class:`ClippedLSTMPFunction` (False: the plain autograd loop).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        proj_size: int,
        cell_clip: float | None = None,
        proj_clip: float | None = None,
        fast: bool = True,
    ) -> None:
        super().__init__()
        self.input_size, self.hidden_size, self.proj_size = input_size, hidden_size, proj_size
        self.cell_clip, self.proj_clip = cell_clip, proj_clip
        self.fast = fast
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
            return self._fast_recurrence(x) if self.fast else self._recurrence(x)
        return self._fused(x)

    def _fast_recurrence(self, x: torch.Tensor) -> torch.Tensor:
        device = x.device.type
        # time-major, so that each step's gates are one contiguous block the recurrence adds into
        xw = torch.nn.functional.linear(x.transpose(0, 1), self.weight_ih, self.bias)  # (T, B, 4H)
        autocast = torch.is_autocast_enabled(device)
        state_dtype = torch.float32 if autocast else self.weight_hh.dtype  # gates and cell state
        matmul_dtype = torch.get_autocast_dtype(device) if autocast else state_dtype
        with torch.autocast(device, enabled=False):
            h = ClippedLSTMPFunction.apply(
                xw.to(state_dtype),
                self.weight_hh.to(state_dtype),
                self.weight_hr.to(state_dtype),
                self.cell_clip,
                self.proj_clip,
                matmul_dtype,
            )  # (T, B, P)
        return h.transpose(0, 1)  # (B, T, P)

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
        cell_clip, proj_clip = self.cell_clip or 0.0, self.proj_clip or 0.0  # 0: none
        return lstmp_recurrence(x, self.weight_ih, self.bias, self.weight_hh, self.weight_hr, cell_clip, proj_clip)


def lstmp_recurrence(
    x: torch.Tensor,
    weight_ih: torch.Tensor,
    bias: torch.Tensor,
    weight_hh: torch.Tensor,
    weight_hr: torch.Tensor,
    cell_clip: float,
    proj_clip: float,
) -> torch.Tensor:
    """The clipped LSTMP recurrence from a zero state, step by step: the plain path, and the one exported.

    Written for TorchScript and the ONNX exporter too (the portable embedder), hence float clips
    with 0 for none rather than optional ones.

    Args: x (B, T, X); weights in ``torch.nn.LSTM(proj_size=...)``'s layout; clips (0: none).
    Returns: (B, T, P).
    """
    B, T = x.shape[0], x.shape[1]
    H, P = weight_hr.shape[1], weight_hr.shape[0]
    xw = torch.nn.functional.linear(x, weight_ih, bias)  # (B, T, 4H), all steps at once
    h = x.new_zeros(B, P)  # (B, P)
    c = x.new_zeros(B, H)  # (B, H)
    outputs: list[torch.Tensor] = []
    for t in range(T):
        gates = xw[:, t] + torch.nn.functional.linear(h, weight_hh)  # (B, 4H)
        i, f, g, o = gates.chunk(4, dim=-1)  # 4 x (B, H)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)  # (B, H)
        if cell_clip > 0:
            c = c.clamp(-cell_clip, cell_clip)
        h = torch.nn.functional.linear(torch.sigmoid(o) * torch.tanh(c), weight_hr)  # (B, P)
        if proj_clip > 0:
            h = h.clamp(-proj_clip, proj_clip)
        outputs.append(h)
    if len(outputs) == 0:
        return x.new_zeros(B, 0, P)
    return torch.stack(outputs, dim=1)  # (B, T, P)


def lstmp_cell_step(
    a: torch.Tensor,
    c_prev: torch.Tensor,
    c: torch.Tensor,
    tanh_c: torch.Tensor,
    m: torch.Tensor,
    cell_clip: float | None,
) -> None:
    """One step of the LSTMP cell after the gate pre-activations, in place (the fast paths' kernel).

    ``a`` (B, 4H) holds ``W_ih x_t + b + W_hh h_{t-1}`` and is overwritten with the gates
    ``sigmoid(i), sigmoid(f), tanh(g), sigmoid(o)``; ``c`` (B, H) receives
    ``f * c_prev + i * g`` (clipped), ``tanh_c`` (B, H) its tanh and ``m`` (B, H, any float dtype)
    ``o * tanh(c)``, the input of the projection. ``c`` may be ``c_prev`` itself (a state updated
    in place). ``tanh(x)`` is ``2 sigmoid(2x) - 1`` (see :class:`ClippedLSTMPFunction`).
    """
    H = c.shape[-1]
    g = a[:, 2 * H : 3 * H]
    g.mul_(2.0)
    a.sigmoid_()  # i, f, o; and sigmoid(2 g)
    g.mul_(2.0).sub_(1.0)  # tanh(g) = 2 sigmoid(2 g) - 1
    torch.mul(a[:, H : 2 * H], c_prev, out=c)  # c = f * c_prev + i * g
    c.addcmul_(a[:, :H], g)
    if cell_clip is not None:
        c.clamp_(-cell_clip, cell_clip)
    torch.mul(c, 2.0, out=tanh_c).sigmoid_().mul_(2.0).sub_(1.0)  # tanh(c)
    torch.mul(tanh_c, a[:, 3 * H :], out=m)  # m = o * tanh(c)


class ClippedLSTMPFunction(torch.autograd.Function):
    """The clipped LSTMP recurrence from a zero state, with a hand-written backward.

    Forward: ``xw`` (T, B, 4H) = ``W_ih x + b`` for all steps (time-major, float32), ``weight_hh``
    (4H, P), ``weight_hr`` (P, H), the two clip values (None: no clipping), and the dtype of the
    step's two matrix multiplies. Returns h (T, B, P) in that dtype.

    With a bf16 ``matmul_dtype`` (under autocast) the matrix multiplies of the recurrence and of
    its backward run in bf16, and everything else in float32: the gates, the cell state and its
    clipping, the gradients, and the weight gradients.

    Written for speed on CPUs, where a step's tensors are small and every kernel launch counts:
    each step's work goes into preallocated buffers with in-place and ``out=`` kernels, and the
    weight gradients are one matrix multiply over all steps. ``tanh(x)`` is computed as
    ``2 sigmoid(2x) - 1``: PyTorch's CPU tanh is several times slower than its sigmoid, and the two agree
    to float32 rounding (a few 1e-8). The backward of ``clamp`` passes the gradient where the
    value was inside the range; it is read from the clipped value (``|c| < clip``), which differs
    from autograd's ``clamp`` only where the unclipped value was exactly ``+-clip``.
    """

    @staticmethod
    def forward(ctx, xw, weight_hh, weight_hr, cell_clip, proj_clip, matmul_dtype):  # noqa: D102
        T, B, G = xw.shape
        H, P = G // 4, weight_hr.shape[0]
        acts = xw.clone()  # (T, B, 4H): W_ih x + b, then the gates sigmoid(i), sigmoid(f), tanh(g), sigmoid(o)
        cells = xw.new_empty(T + 1, B, H)  # c_{t-1} at t, c_{-1} = 0
        tanh_cells = xw.new_empty(T, B, H)  # tanh(c_t)
        hs = xw.new_empty(T + 1, B, P, dtype=matmul_dtype)  # h_{t-1} at t, h_{-1} = 0
        ms = xw.new_empty(T, B, H, dtype=matmul_dtype)  # o * tanh(c), the input of the projection
        recurrent = xw.new_empty(B, G, dtype=matmul_dtype)  # W_hh h_{t-1}, when it is not float32
        cells[0].zero_()
        hs[0].zero_()
        whh_t, whr_t = weight_hh.t().to(matmul_dtype), weight_hr.t().to(matmul_dtype)
        for t in range(T):
            a = acts[t]  # (B, 4H)
            if matmul_dtype == a.dtype:
                torch.addmm(a, hs[t], whh_t, out=a)  # gates = W_ih x_t + b + W_hh h_{t-1}, in place
            else:
                a.add_(torch.mm(hs[t], whh_t, out=recurrent))
            lstmp_cell_step(a, cells[t], cells[t + 1], tanh_cells[t], ms[t], cell_clip)
            h = hs[t + 1]  # (B, P)
            torch.mm(ms[t], whr_t, out=h)  # h = W_hr m
            if proj_clip is not None:
                h.clamp_(-proj_clip, proj_clip)
        ctx.save_for_backward(acts, cells, tanh_cells, hs, ms, weight_hh, weight_hr)
        ctx.clips = (cell_clip, proj_clip)
        return hs[1:]  # (T, B, P)

    @staticmethod
    def backward(ctx, grad_h):  # noqa: D102
        acts, cells, tanh_cells, hs, ms, weight_hh, weight_hr = ctx.saved_tensors
        cell_clip, proj_clip = ctx.clips
        T, B, G = acts.shape
        H, P = G // 4, hs.shape[-1]
        matmul_dtype = hs.dtype
        whh, whr = weight_hh.to(matmul_dtype), weight_hr.to(matmul_dtype)
        # where the clamps cut the gradient (outside the range)
        c_cut = cells[1:].abs() >= cell_clip if cell_clip is not None else None  # (T, B, H)
        h_cut = hs[1:].abs() >= proj_clip if proj_clip is not None else None  # (T, B, P)
        d_gates = acts.new_empty(T, B, G)  # gradient of the gate pre-activations (= of xw)
        d_proj = acts.new_empty(T, B, P)  # gradient of W_hr's output, after the clip
        ones = acts.new_ones(B, H)
        dh_next = acts.new_zeros(B, P)
        dc_next = acts.new_zeros(B, H)
        dc = acts.new_empty(B, H)
        dc_per_dm = acts.new_empty(B, H)
        slope = acts.new_empty(B, G)  # d gate / d pre-activation
        partner = acts.new_empty(B, G)  # what d gate multiplies: [g, c_prev, i, tanh(c)]
        upstream = acts.new_empty(B, G)  # [dc, dc, dc, dm]
        for t in range(T - 1, -1, -1):
            a = acts[t]  # (B, 4H)
            i, f, g, o = a[:, :H], a[:, H : 2 * H], a[:, 2 * H : 3 * H], a[:, 3 * H :]
            dh = d_proj[t]  # (B, P)
            torch.add(grad_h[t], dh_next, out=dh)
            if h_cut is not None:
                dh.masked_fill_(h_cut[t], 0.0)
            dm = dh.to(matmul_dtype) @ whr  # (B, H)
            torch.addcmul(ones, tanh_cells[t], tanh_cells[t], value=-1.0, out=dc_per_dm).mul_(o)  # o (1 - tanh^2)
            torch.addcmul(dc_next, dm, dc_per_dm, out=dc)  # (B, H)
            if c_cut is not None:
                dc.masked_fill_(c_cut[t], 0.0)
            torch.addcmul(a, a, a, value=-1.0, out=slope)  # s (1 - s) for the sigmoid gates ...
            torch.addcmul(ones, g, g, value=-1.0, out=slope[:, 2 * H : 3 * H])  # ... 1 - g^2 for g
            torch.cat([g, cells[t], i, tanh_cells[t]], dim=1, out=partner)
            torch.cat([dc, dc, dc, dm], dim=1, out=upstream)
            torch.mul(upstream, partner, out=d_gates[t]).mul_(slope)
            dc_next = dc.mul(f)  # (B, H)
            dh_next = d_gates[t].to(matmul_dtype) @ whh  # (B, P)
        # weight gradients, in the state's dtype: one matrix multiply over all steps
        grad_hh = d_gates.view(T * B, G).t() @ hs[:-1].reshape(T * B, P).to(acts.dtype)  # (4H, P)
        grad_hr = d_proj.view(T * B, P).t() @ ms.view(T * B, H).to(acts.dtype)  # (P, H)
        return d_gates, grad_hh, grad_hr, None, None, None
