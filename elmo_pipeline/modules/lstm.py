"""The projected LSTM of ELMo (LSTMP), with optional cell and projection clipping: the one owner of its recurrence.

One layer, one direction (PAPER.md, "Contextual layers"; Sak et al. 2014 for the projection)::

    i, f, g, o = split(W_ih x_t + W_hh h_{t-1} + b)        # PyTorch's gate order
    c_t = sigmoid(f) * c_{t-1} + sigmoid(i) * tanh(g)      # clipped to +-cell_clip
    h_t = W_hr (sigmoid(o) * tanh(c_t))                    # clipped to +-proj_clip

The parameters are laid out as ``torch.nn.LSTM(proj_size=...)`` lays them out, with one bias
instead of two (the published models have one).

Every runner of this recurrence in the package (training, ``embed``'s streaming runner and the
activation cache, the portable TorchScript/ONNX embedder, the seq2seq target LM) calls this module,
as ``torch.nn.LSTM`` keeps one set of equations behind several kernels:

- **the reference**: :func:`lstmp_cell` (the equations above, functional, autograd- and
  TorchScript-ready) and :func:`lstmp_recurrence`, the loop over time. Training's ``plain`` path
  and the portable embedder run it.
- **the fast backend**: :func:`lstmp_cell_` (the same step in place, into preallocated buffers),
  :func:`lstmp_scan` (the loop over time with a carried state, for every row or for a shrinking
  prefix of length-sorted rows) and :class:`LSTMPFunction` (training: the input projection, the
  scan, and a hand-written backward that runs the recurrence in reverse and computes the weight
  gradients as one matrix multiply over all steps, as cuDNN does). The streaming runner and the
  target LM call :func:`lstmp_scan` directly. Both loops over time run as TorchScript, compiled
  from their Python source on first use (:func:`_scripted`), and on a multi-threaded CPU a biLM's
  two directions run side by side (:func:`lstmp_pair`, :class:`LSTMPPairFunction`).
- **the fused kernel**: ``torch.lstm`` (cuDNN on GPU) for an unclipped layer in full precision.
  On a GPU the layer keeps its weights in one flat buffer, as ``nn.LSTM.flatten_parameters`` does,
  so cuDNN does not copy them at every call.
- **the compiled recurrence** (``compiled``, for a GPU): :func:`lstmp_recurrence`, the reference,
  under ``torch.compile`` (``mode="reduce-overhead"`` on CUDA: CUDA graphs). On a GPU the eager step
  is launch-bound (about 15 kernels a step forward and 18 backward); compiled, the loop over time is
  unrolled into fused kernels and replayed as one graph. Lengths are padded up to a multiple of
  ``COMPILE_STEPS`` so that few lengths compile (the padding comes after the real steps, and a
  recurrence never looks ahead, so the real steps' outputs are the same).

**Precision.** Every fast entry point takes the dtype of the matrix multiplies. In ``bfloat16``
the products run on the bf16 matrix units (accumulating in float32 inside the kernel): the input
projection, the two products of each step, the backward's two products of each step, and the
weight and input gradients over all steps. The gates' element-wise work, the cell state and its
clipping, and all gradients outside the matrix multiplies stay float32, so the cell state never
accumulates in bf16. Weights are cast once per call (once per training step), never per time step.
In training the layer takes the dtype from autocast: ``--trainer.precision bf16-mixed`` runs it.

The tests check every backend and every runner against the reference, forward and gradients.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import nn

from elmo_pipeline.errors import UserError

# PyTorch falls back from oneDNN to its own CPU kernel for projected LSTMs and says so on every call
warnings.filterwarnings("ignore", message="LSTM with projections is not supported with oneDNN")


def matmul_dtype(device: torch.device | str, default: torch.dtype) -> torch.dtype:
    """The dtype of the recurrence's matrix multiplies here: autocast's when it is on, else ``default``."""
    kind = torch.device(device).type
    return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else default


def bf16_supported(device: torch.device) -> bool:
    """Whether bfloat16 matrix multiplies run natively here (CUDA, or a CPU with AVX-512 BF16 or AMX)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    capability = str(torch.backends.cpu.get_cpu_capability()).lower()
    if "avx512" not in capability:
        return False
    try:
        flags = open("/proc/cpuinfo").read()  # noqa: SIM115
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def require_native_bf16(command: str, precision: object, device: torch.device) -> None:
    """Refuse a bf16 precision (``--trainer.precision bf16-mixed``) where the processor has no native bf16.

    On a CPU without bf16 matrix instructions the multiplies are emulated, several times slower than
    float32, so a bf16 run there would be a slow run, not a fast one.
    """
    if str(precision).startswith("bf16") and not bf16_supported(device):
        raise UserError(
            f"{command}: --trainer.precision {precision} needs native bf16 matrix multiplies, and this "
            f"{device.type} has none (no AVX-512 BF16 or AMX; or a GPU without bf16); use --trainer.precision 32-true"
        )


class LSTMPLayer(nn.Module):
    """One direction of one LSTMP layer over (B, T, X) inputs.

    Args:
        input_size: X.
        hidden_size: H, the cell size.
        proj_size: P, the output (and recurrent state) size.
        cell_clip: clip the cell state to +-this value (None: no clipping).
        proj_clip: clip the projected output to +-this value (None: no clipping).
        fast: run the fast backend (:class:`LSTMPFunction`); False: the reference loop under autograd.
        compiled: run the compiled recurrence where the fused kernel does not serve (a clipped layer,
            or autocast's bf16); for GPUs, where the eager step is launch-bound.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        proj_size: int,
        cell_clip: float | None = None,
        proj_clip: float | None = None,
        fast: bool = True,
        compiled: bool = False,
    ) -> None:
        super().__init__()
        self.input_size, self.hidden_size, self.proj_size = input_size, hidden_size, proj_size
        self.cell_clip, self.proj_clip = cell_clip, proj_clip
        self.fast, self.compiled = fast, compiled
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
        """Args: x (B, T, X). Returns: (B, T, P), zero initial state.

        The fast backend returns the weights' dtype (float32) also under autocast; the reference
        and the fused kernel return what their ops give there (autocast's dtype).
        """
        dtype = matmul_dtype(x.device, self.weight_hh.dtype)
        if self._takes_fused(dtype):
            return self._fused(x)
        if self.compiled:
            return self._compiled(x)
        if not self.fast:
            cell_clip, proj_clip = self.cell_clip or 0.0, self.proj_clip or 0.0  # 0: none
            return lstmp_recurrence(
                x, self.weight_ih, self.bias, self.weight_hh, self.weight_hr, cell_clip, proj_clip
            )  # (B, T, P)
        with torch.autocast(x.device.type, enabled=False):
            h = LSTMPFunction.apply(*self._fast_inputs(x), self.cell_clip, self.proj_clip, dtype)  # (T, B, P)
        return h.transpose(0, 1)  # (B, T, P)

    def runs_fast(self, x: torch.Tensor) -> bool:
        """Whether :meth:`forward` takes the fast backend (:class:`LSTMPFunction`) for this input."""
        return self.fast and not self.compiled and not self._takes_fused(matmul_dtype(x.device, self.weight_hh.dtype))

    def _takes_fused(self, dtype: torch.dtype) -> bool:
        """Whether an input whose matrix multiplies run in ``dtype`` goes to the fused kernel."""
        return not self.clipped and (dtype == self.weight_hh.dtype or not (self.fast or self.compiled))

    def _fast_inputs(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The fast backend's inputs: x (T, B, X) time-major in the state dtype (float32), and the weights."""
        state_dtype = self.weight_hh.dtype  # float32 (float64 in the tests): gates and cell state
        x = x.transpose(0, 1).to(state_dtype).contiguous()  # (T, B, X)
        return x, self.weight_ih, self.bias, self.weight_hh, self.weight_hr

    def _compiled(self, x: torch.Tensor) -> torch.Tensor:
        T = x.shape[1]
        padded = -(-T // COMPILE_STEPS) * COMPILE_STEPS
        if padded != T:  # zeros after the real steps: they cannot change the real steps' outputs
            x = nn.functional.pad(x, (0, 0, 0, padded - T))  # (B, T', X)
        cell_clip, proj_clip = self.cell_clip or 0.0, self.proj_clip or 0.0  # 0: none
        recurrence = compiled_recurrence(x.device.type)
        h = recurrence(x, self.weight_ih, self.bias, self.weight_hh, self.weight_hr, cell_clip, proj_clip)
        # our own copy: on CUDA the output lives in the graph's memory, which the next replay (the next
        # layer, under no_grad) overwrites
        return h[:, :T].clone()  # (B, T, P)

    def _apply(self, fn, recurse: bool = True):
        module = super()._apply(fn, recurse)
        self.flatten_parameters()
        return module

    def flatten_parameters(self) -> None:
        """On a GPU, put the fused kernel's weights in one buffer (cuDNN's layout), as
        ``nn.LSTM.flatten_parameters`` does, so cuDNN does not compact them at every call. The
        parameters stay the same objects (views into the buffer), so optimizers and state dicts are
        not affected."""
        weights = [self.weight_ih, self.weight_hh, self.bias, self._zero_bias, self.weight_hr]
        first = weights[0]
        if self.clipped or first.device.type != "cuda" or len({w.dtype for w in weights}) != 1:
            return
        if not torch.backends.cudnn.is_acceptable(first):
            return
        from torch.backends.cudnn import rnn as cudnn_rnn

        with torch.no_grad():
            torch._cudnn_rnn_flatten_weight(
                weights,
                5,
                self.input_size,
                cudnn_rnn.get_cudnn_mode("LSTM"),
                self.hidden_size,
                self.proj_size,
                1,
                True,
                False,
            )

    def _fused(self, x: torch.Tensor) -> torch.Tensor:
        B = x.shape[0]
        h0 = x.new_zeros(1, B, self.proj_size)  # (1, B, P)
        c0 = x.new_zeros(1, B, self.hidden_size)  # (1, B, H)
        params = [self.weight_ih, self.weight_hh, self.bias, self._zero_bias.to(x.dtype), self.weight_hr]
        if x.dtype != self.weight_ih.dtype:
            params = [p.to(x.dtype) for p in params]
        out, _, _ = torch.lstm(x, (h0, c0), params, True, 1, 0.0, self.training, False, True)
        return out  # (B, T, P)


# ------------------------------------------------------------------------------------------ reference
def lstmp_cell(gates: torch.Tensor, c_prev: torch.Tensor, cell_clip: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of the LSTMP cell after the gate pre-activations: the equations, as the reference.

    Args:
        gates: (B, 4H) ``W_ih x_t + b + W_hh h_{t-1}``, in the order i, f, g, o.
        c_prev: (B, H) the previous cell state.
        cell_clip: clip the cell to +-this value (0: no clipping; a float, for TorchScript and ONNX).

    Returns:
        c (B, H) the new cell state, and m = sigmoid(o) * tanh(c) (B, H), the projection's input.
    """
    i, f, g, o = gates.chunk(4, dim=-1)  # 4 x (B, H)
    c = torch.sigmoid(f) * c_prev + torch.sigmoid(i) * torch.tanh(g)  # (B, H)
    if cell_clip > 0:
        c = c.clamp(-cell_clip, cell_clip)
    return c, torch.sigmoid(o) * torch.tanh(c)


def lstmp_recurrence(
    x: torch.Tensor,
    weight_ih: torch.Tensor,
    bias: torch.Tensor,
    weight_hh: torch.Tensor,
    weight_hr: torch.Tensor,
    cell_clip: float,
    proj_clip: float,
) -> torch.Tensor:
    """The LSTMP recurrence from a zero state, step by step: the reference, and the one exported.

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
        c, m = lstmp_cell(xw[:, t] + torch.nn.functional.linear(h, weight_hh), c, cell_clip)  # (B, H) each
        h = torch.nn.functional.linear(m, weight_hr)  # (B, P)
        if proj_clip > 0:
            h = h.clamp(-proj_clip, proj_clip)
        outputs.append(h)
    if len(outputs) == 0:
        return x.new_zeros(B, 0, P)
    return torch.stack(outputs, dim=1)  # (B, T, P)


# ------------------------------------------------------------------------------- compiled recurrence
COMPILE_STEPS = 8  # the compiled recurrence runs lengths padded up to a multiple of this
_COMPILED: dict[str, Callable[..., torch.Tensor]] = {}


def compiled_recurrence(device_type: str) -> Callable[..., torch.Tensor]:
    """:func:`lstmp_recurrence` under ``torch.compile``, one per device type (made on first use).

    On CUDA with ``mode="reduce-overhead"``: the unrolled loop's kernels are fused and the whole
    recurrence, forward and backward, is replayed as CUDA graphs. Each padded length compiles once
    (the loop over time is unrolled), and every layer and direction of one shape shares it.
    """
    if device_type not in _COMPILED:
        mode = "reduce-overhead" if device_type == "cuda" else None
        _COMPILED[device_type] = torch.compile(lstmp_recurrence, mode=mode)
    return _COMPILED[device_type]


# ------------------------------------------------------------------------------------- fast backend
def lstmp_cell_(
    a: torch.Tensor,
    c_prev: torch.Tensor,
    c: torch.Tensor,
    tanh_c: torch.Tensor,
    m: torch.Tensor,
    cell_clip: float | None,
    two: torch.Tensor,
    one: torch.Tensor,
) -> None:
    """:func:`lstmp_cell` in place, into preallocated buffers (the fast backend's step).

    ``a`` (B, 4H) holds ``W_ih x_t + b + W_hh h_{t-1}`` and is overwritten with the gates
    ``sigmoid(i), sigmoid(f), tanh(g), sigmoid(o)``; ``c`` (B, H) receives
    ``f * c_prev + i * g`` (clipped), ``tanh_c`` (B, H) its tanh and ``m`` (B, H, any float dtype)
    ``o * tanh(c)``. ``c`` may be ``c_prev`` itself (a state updated in place). ``two`` and ``one``
    are 0-d tensors of the constants, made once per scan, so that no Python scalar becomes a tensor
    at every step. ``tanh(x)`` is
    computed as ``2 sigmoid(2x) - 1``: PyTorch's CPU tanh is several times slower than its sigmoid,
    and the two agree to float32 rounding (a few 1e-8).
    """
    H = c.shape[-1]
    g = a[:, 2 * H : 3 * H]
    g.mul_(two)
    a.sigmoid_()  # i, f, o; and sigmoid(2 g)
    g.mul_(two).sub_(one)  # tanh(g) = 2 sigmoid(2 g) - 1
    torch.mul(a[:, H : 2 * H], c_prev, out=c)  # c = f * c_prev + i * g
    c.addcmul_(a[:, :H], g)
    if cell_clip is not None:
        c.clamp_(-cell_clip, cell_clip)
    torch.mul(c, two, out=tanh_c).sigmoid_().mul_(two).sub_(one)  # tanh(c)
    torch.mul(tanh_c, a[:, 3 * H :], out=m)  # m = o * tanh(c)


def lstmp_scan(
    gates: torch.Tensor,
    cells: torch.Tensor,
    hs: torch.Tensor,
    tanh_cells: torch.Tensor,
    ms: torch.Tensor,
    whh_t: torch.Tensor,
    whr_t: torch.Tensor,
    cell_clip: float | None,
    proj_clip: float | None,
    active: Sequence[int] | None = None,
) -> None:
    """The loop over time of the fast backend, forward, in place: the one every fast runner calls.

    Step t reads the state from slot t of ``cells`` and ``hs`` and writes the new one to slot t + 1,
    so a caller carries a state by putting it in slot 0 and reading slot T (streaming chunks, the
    target LM's one step) and training keeps every slot for its backward. The loop runs as
    TorchScript (:func:`_scan`, compiled from the Python below on first use): the per-step kernels
    are small, and the interpreter calls them with less overhead than Python and without the GIL, so
    the two directions of a layer can run side by side (:class:`LSTMPPairFunction`).

    Args:
        gates: (T, B, 4H) float32, ``W_ih x_t + b`` on entry, the gates (see :func:`lstmp_cell_`) on exit.
        cells: (T + 1, B, H) float32; slot 0 the initial cell state.
        hs: (T + 1, B, P) in the matmul dtype; slot 0 the initial output.
        tanh_cells: (T, B, H) float32, receives tanh(c_t).
        ms: (T, B, H) in the matmul dtype, receives sigmoid(o) * tanh(c_t).
        whh_t: (P, 4H) ``W_hh`` transposed, in the matmul dtype.
        whr_t: (H, P) ``W_hr`` transposed, in the matmul dtype.
        cell_clip, proj_clip: None for no clipping.
        active: rows still running at each step, a shrinking prefix of rows sorted by length (None: all).
    """
    rows = None if active is None else [int(n) for n in active]
    _scripted(_scan)(gates, cells, hs, tanh_cells, ms, whh_t, whr_t, _clip(cell_clip), _clip(proj_clip), rows)


def _clip(value: float | None) -> float | None:
    return None if value is None else float(value)


_SCRIPTED: dict[Callable, Callable] = {}
_SCRIPT_LOCK = threading.Lock()


def _scripted(function: Callable) -> Callable:
    """``function`` compiled by TorchScript, once per process (thread-safe: two directions may ask at once)."""
    with _SCRIPT_LOCK:
        if function not in _SCRIPTED:
            _SCRIPTED[function] = torch.jit.script(function)
        return _SCRIPTED[function]


def _scan(
    gates: torch.Tensor,
    cells: torch.Tensor,
    hs: torch.Tensor,
    tanh_cells: torch.Tensor,
    ms: torch.Tensor,
    whh_t: torch.Tensor,
    whr_t: torch.Tensor,
    cell_clip: float | None,
    proj_clip: float | None,
    active: list[int] | None,
) -> None:
    """The body of :func:`lstmp_scan`, in TorchScript's subset of Python."""
    T, B = gates.shape[0], gates.shape[1]
    in_place = whh_t.dtype == gates.dtype  # the recurrent product adds straight into the gates
    recurrent = torch.empty(B, gates.shape[2], dtype=whh_t.dtype, device=gates.device)  # (B, 4H), bf16 only
    two = torch.full((), 2.0, dtype=gates.dtype, device=gates.device)
    one = torch.full((), 1.0, dtype=gates.dtype, device=gates.device)
    for t in range(T):
        n = B
        if active is not None:
            n = active[t]
        a = gates[t, :n]  # (n, 4H)
        if in_place:
            torch.addmm(a, hs[t, :n], whh_t, out=a)  # gates = W_ih x_t + b + W_hh h_{t-1}
        else:  # bf16 product, float32 sum
            a.add_(torch.mm(hs[t, :n], whh_t, out=recurrent[:n]))
        lstmp_cell_(a, cells[t, :n], cells[t + 1, :n], tanh_cells[t, :n], ms[t, :n], cell_clip, two, one)
        h = hs[t + 1, :n]  # (n, P)
        torch.mm(ms[t, :n], whr_t, out=h)  # h = W_hr m
        if proj_clip is not None:
            h.clamp_(-proj_clip, proj_clip)


def lstmp_forward(x, weight_ih, bias, weight_hh, weight_hr, cell_clip, proj_clip, dtype):
    """The fast backend's forward of one layer from a zero state: h (T, B, P) and what its backward keeps.

    ``x`` (T, B, X) contiguous in the state dtype (float32); the four parameters; the two clip values
    (None: no clipping); the dtype of the matrix multiplies. Runs no autograd: :class:`LSTMPFunction`
    and :class:`LSTMPPairFunction` wrap it.
    """
    T, B, X = x.shape
    G, P = weight_hh.shape
    H = G // 4
    state = weight_hh.dtype
    x_mm, wih = x.to(dtype), weight_ih.to(dtype)  # cast once per call
    whh, whr = weight_hh.to(dtype), weight_hr.to(dtype)
    if dtype == state:
        gates = torch.addmm(bias, x_mm.view(T * B, X), wih.t()).view(T, B, G)  # (T, B, 4H)
    else:  # the product in the matmul dtype, the bias added in the state's
        gates = torch.mm(x_mm.view(T * B, X), wih.t()).view(T, B, G).to(state).add_(bias)  # (T, B, 4H)
    cells = x.new_empty(T + 1, B, H, dtype=state)  # c_{t-1} at t, c_{-1} = 0
    hs = x.new_empty(T + 1, B, P, dtype=dtype)  # h_{t-1} at t, h_{-1} = 0
    tanh_cells = x.new_empty(T, B, H, dtype=state)
    ms = x.new_empty(T, B, H, dtype=dtype)
    cells[0].zero_()
    hs[0].zero_()
    lstmp_scan(gates, cells, hs, tanh_cells, ms, whh.t(), whr.t(), cell_clip, proj_clip)
    return hs[1:].to(state), (x_mm, gates, cells, tanh_cells, hs, ms, wih, whh, whr)  # (T, B, P)


def lstmp_backward(saved, cell_clip, proj_clip, grad_h):
    """The hand-written backward of :func:`lstmp_forward`: the gradients of x and the four parameters.

    ``saved`` is what the forward kept; ``grad_h`` (T, B, P) the gradient of its output. The
    recurrence runs in reverse, and the weight and input gradients are one matrix multiply each over
    all steps, as cuDNN does. The backward of ``clamp`` passes the gradient where the value was
    inside the range; it is read from the clipped value (``|c| < clip``), which differs from
    autograd's ``clamp`` only where the unclipped value was exactly ``+-clip``.
    """
    x_mm, acts, cells, tanh_cells, hs, ms, wih, whh, whr = saved
    T, B, G = acts.shape
    H, P, X = G // 4, hs.shape[-1], x_mm.shape[-1]
    dtype = hs.dtype  # of the matrix multiplies
    # where the clamps cut the gradient (outside the range)
    c_cut = cells[1:].abs() >= cell_clip if cell_clip is not None else None  # (T, B, H)
    h_cut = hs[1:].abs() >= proj_clip if proj_clip is not None else None  # (T, B, P)
    d_gates = acts.new_empty(T, B, G)  # gradient of the gate pre-activations
    d_gates_mm = d_gates if dtype == acts.dtype else acts.new_empty(T, B, G, dtype=dtype)
    d_proj = acts.new_empty(T, B, P)  # gradient of W_hr's output, after the clip
    _scripted(_scan_backward)(acts, cells, tanh_cells, grad_h, whh, whr, c_cut, h_cut, d_gates, d_gates_mm, d_proj)
    # the gradients over all steps, one matrix multiply each
    d_flat = d_gates_mm.view(T * B, G)  # (T*B, 4H)
    state = acts.dtype
    grad_x = (d_flat @ wih).view(T, B, X).to(state)  # (T, B, X)
    grad_ih = (d_flat.t() @ x_mm.view(T * B, X)).to(state)  # (4H, X)
    grad_bias = d_gates.view(T * B, G).sum(dim=0)  # (4H,)
    grad_hh = (d_flat.t() @ hs[:-1].reshape(T * B, P)).to(state)  # (4H, P)
    grad_hr = (d_proj.view(T * B, P).to(dtype).t() @ ms.view(T * B, H)).to(state)  # (P, H)
    return grad_x, grad_ih, grad_bias, grad_hh, grad_hr


def _scan_backward(
    acts: torch.Tensor,
    cells: torch.Tensor,
    tanh_cells: torch.Tensor,
    grad_h: torch.Tensor,
    whh: torch.Tensor,
    whr: torch.Tensor,
    c_cut: torch.Tensor | None,
    h_cut: torch.Tensor | None,
    d_gates: torch.Tensor,
    d_gates_mm: torch.Tensor,
    d_proj: torch.Tensor,
) -> None:
    """The loop of :func:`lstmp_backward` over time in reverse, in TorchScript's subset of Python.

    Fills ``d_gates`` (T, B, 4H) with the gradient of the gate pre-activations (``d_gates_mm``, the
    same in the matmul dtype, may be the same tensor) and ``d_proj`` (T, B, P) with the gradient of
    W_hr's output after the clip.
    """
    T, B, G = acts.shape[0], acts.shape[1], acts.shape[2]
    H, P = G // 4, d_proj.shape[2]
    same = d_gates_mm.dtype == d_gates.dtype
    dh_next = acts.new_zeros(B, P)
    dc_next = acts.new_zeros(B, H)
    dc = acts.new_empty(B, H)
    dm = acts.new_empty(B, H)
    dc_per_dm = acts.new_empty(B, H)
    ones = acts.new_ones(B, H)
    slope = acts.new_empty(B, G)  # d gate / d pre-activation
    for t in range(T - 1, -1, -1):
        a = acts[t]  # (B, 4H)
        i, f, g, o = a[:, :H], a[:, H : 2 * H], a[:, 2 * H : 3 * H], a[:, 3 * H :]
        dh = d_proj[t]  # (B, P)
        torch.add(grad_h[t], dh_next, out=dh)
        if h_cut is not None:
            dh.masked_fill_(h_cut[t], 0.0)
        if same:
            torch.mm(dh, whr, out=dm)  # (B, H)
        else:
            dm.copy_(torch.mm(dh.to(whr.dtype), whr))  # (B, H)
        torch.addcmul(ones, tanh_cells[t], tanh_cells[t], value=-1.0, out=dc_per_dm).mul_(o)  # o (1 - tanh^2)
        torch.addcmul(dc_next, dm, dc_per_dm, out=dc)  # (B, H)
        if c_cut is not None:
            dc.masked_fill_(c_cut[t], 0.0)
        d = d_gates[t]  # (B, 4H): first dL/d gate, then times the gate's slope
        torch.mul(dc, g, out=d[:, :H])  # i
        torch.mul(dc, cells[t], out=d[:, H : 2 * H])  # f
        torch.mul(dc, i, out=d[:, 2 * H : 3 * H])  # g
        torch.mul(dm, tanh_cells[t], out=d[:, 3 * H :])  # o
        torch.addcmul(a, a, a, value=-1.0, out=slope)  # s (1 - s) for the sigmoid gates ...
        torch.addcmul(ones, g, g, value=-1.0, out=slope[:, 2 * H : 3 * H])  # ... 1 - g^2 for g
        d.mul_(slope)
        dc_next = dc.mul(f)  # (B, H)
        if not same:
            d_gates_mm[t].copy_(d)
        dh_next = d_gates_mm[t] @ whh  # (B, P)


class LSTMPFunction(torch.autograd.Function):
    """One LSTMP layer from a zero state, time-major, with a hand-written backward (the fast training path).

    Forward: ``x`` (T, B, X) contiguous in the state dtype (float32), the four parameters, the two
    clip values (None: no clipping), and the dtype of the matrix multiplies. Returns h (T, B, P) in
    the state dtype.

    Written for speed on CPUs, where a step's tensors are small and every kernel launch counts: the
    input projection is one matrix multiply over all steps, each step's work goes into
    preallocated buffers with in-place and ``out=`` kernels (:func:`lstmp_scan`), and the backward
    computes the weight and input gradients as one matrix multiply each over all steps
    (:func:`lstmp_forward`, :func:`lstmp_backward`).
    """

    @staticmethod
    def forward(ctx, x, weight_ih, bias, weight_hh, weight_hr, cell_clip, proj_clip, dtype):  # noqa: D102
        h, saved = lstmp_forward(x, weight_ih, bias, weight_hh, weight_hr, cell_clip, proj_clip, dtype)
        ctx.save_for_backward(*saved)
        ctx.clips = (cell_clip, proj_clip)
        return h

    @staticmethod
    def backward(ctx, grad_h):  # noqa: D102
        return (*lstmp_backward(ctx.saved_tensors, *ctx.clips, grad_h), None, None, None)


# ----------------------------------------------------------------------- two directions side by side
_POOL: dict[str, object] = {}


def _side_by_side(first: Callable[[], object], second: Callable[[], object]) -> tuple[object, object]:
    """Run two independent calls at once, each on half of torch's threads, and return both results.

    The two directions of a biLM layer are independent chains of about a dozen small kernels per
    time step, and the threads of one kernel that small partly wait for each other. On 2 vCPUs (AMD
    EPYC) the whole bf16 training step ran 1.02-1.14x faster side by side than one direction after
    the other on both threads (docs/benchmarks.md). The loops over time run as TorchScript, which
    does not hold the GIL, so the two Python threads overlap. Workers run without autograd (the
    callers are autograd Functions) and without autocast (it is per thread).
    """
    threads = torch.get_num_threads()
    half = max(1, threads // 2)
    if _POOL.get("pid") != os.getpid():  # a forked process (a data-loader worker) gets a pool of its own
        _POOL.update(pid=os.getpid(), pool=ThreadPoolExecutor(2, "lstmp-direction"))

    def quiet(call: Callable[[], object]) -> Callable[[], object]:
        def run() -> object:
            # Each call, not once per thread: torch's thread count is one process-wide value that every
            # TorchScript run re-reads (so the scripted loops would take the caller's count), and the
            # caller sets it back below once both halves are done.
            torch.set_num_threads(half)
            with torch.no_grad():
                return call()

        return run

    pool = _POOL["pool"]
    futures = []
    try:
        futures = [pool.submit(quiet(call)) for call in (first, second)]  # type: ignore[attr-defined]
        results = [future.result() for future in futures]
    finally:
        for future in futures:  # on an error, wait for the other half before the count goes back
            future.exception()
        torch.set_num_threads(threads)
    return results[0], results[1]


def side_by_side_helps(device: torch.device) -> bool:
    """Whether two directions run side by side here: a CPU with at least two of torch's threads."""
    return device.type == "cpu" and torch.get_num_threads() >= 2


class LSTMPPairFunction(torch.autograd.Function):
    """Two independent LSTMP layers (a biLM's two directions at one depth), forward and backward side by side.

    The same computation as two :class:`LSTMPFunction` calls, each on half of the threads
    (:func:`_side_by_side`). Arguments: the matmul dtype, the two clips, then ``x`` and the four
    parameters of the first layer, then those of the second. Returns the two h (T, B, P).
    """

    @staticmethod
    def forward(ctx, dtype, cell_clip, proj_clip, *tensors):  # noqa: D102
        first, second = tensors[:5], tensors[5:]
        (h_a, saved_a), (h_b, saved_b) = _side_by_side(
            lambda: lstmp_forward(*first, cell_clip, proj_clip, dtype),
            lambda: lstmp_forward(*second, cell_clip, proj_clip, dtype),
        )
        ctx.save_for_backward(*saved_a, *saved_b)
        ctx.clips = (cell_clip, proj_clip)
        return h_a, h_b

    @staticmethod
    def backward(ctx, grad_a, grad_b):  # noqa: D102
        saved = ctx.saved_tensors
        half = len(saved) // 2
        grads_a, grads_b = _side_by_side(
            lambda: lstmp_backward(saved[:half], *ctx.clips, grad_a.contiguous()),
            lambda: lstmp_backward(saved[half:], *ctx.clips, grad_b.contiguous()),
        )
        return (None, None, None, *grads_a, *grads_b)


def lstmp_pair(
    first: nn.Module, second: nn.Module, x_first: torch.Tensor, x_second: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run two independent layers (a biLM's two directions at one depth): ``first(x_first), second(x_second)``.

    Where both are LSTMP layers on the fast backend with the same clips, on a CPU with two or more of
    torch's threads, the two run side by side (:class:`LSTMPPairFunction`), forward and backward; the
    numbers are those of the two calls one after the other. Anywhere else, one after the other.
    """
    pair = (
        isinstance(first, LSTMPLayer)
        and isinstance(second, LSTMPLayer)
        and (first.cell_clip, first.proj_clip) == (second.cell_clip, second.proj_clip)
        and side_by_side_helps(x_first.device)
        and first.runs_fast(x_first)
        and second.runs_fast(x_second)
    )
    if not pair:
        return first(x_first), second(x_second)
    dtype = matmul_dtype(x_first.device, first.weight_hh.dtype)
    with torch.autocast(x_first.device.type, enabled=False):
        h_first, h_second = LSTMPPairFunction.apply(
            dtype,
            first.cell_clip,
            first.proj_clip,
            *first._fast_inputs(x_first),
            *second._fast_inputs(x_second),
        )  # 2 x (T, B, P)
    return h_first.transpose(0, 1), h_second.transpose(0, 1)  # 2 x (B, T, P)
