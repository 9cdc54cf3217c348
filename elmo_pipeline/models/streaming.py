"""Fast, bounded-memory biLM inference: the engine of ``elmo-pipeline embed``.

:meth:`BiLM.forward` is written for training: it pads a batch to its longest sentence, runs every
row for every step and keeps every intermediate for the backward pass. :class:`StreamingBiLM`
computes the same layers for inference only, for biLMs of LSTMP cells (every published ELMo and
every preset), and:

- **encodes each distinct token once** (character CNN, highway, projection) and keeps the vectors of
  recent tokens in a bounded cache, so a frequent word is encoded once per run, not once per use;
- **packs the recurrence**: the rows of a batch are sorted by length, and at step t only the rows
  still running enter the step's matrix multiplies;
- **cuts time into chunks** of about ``chunk_tokens`` row-steps, each layer's input projection
  ``W_ih x + b`` is one matrix multiply per chunk, and the LSTM state ``(h, c)`` of every layer is
  carried from one chunk to the next, exactly (the forward stack runs the chunks left to right,
  the backward stack right to left). Memory is therefore bounded by the chunk, not by the
  sentence: a 5,000-token line needs what a 1,000-token line does;
- **writes each chunk's layers straight into the caller's per-sentence outputs** (NumPy arrays or
  HDF5 datasets), the forward half ``[..., :P]`` from the forward pass and the backward half
  ``[..., P:]`` from the backward pass, so no (L + 1, T, 2P) tensor of a long sentence is ever held;
- optionally runs the matrix multiplies in **bfloat16** (``precision="bf16"``) while the gates, the
  cell state and its clipping stay float32, so the cell never accumulates in bf16.

The recurrence is the training path's own loop (:func:`lstmp_scan`), and the tests check
the layers against :meth:`BiLM.forward` for chunks of one step up to the whole sentence.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Literal, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from elmo_pipeline.models.bilm import BiLM
from elmo_pipeline.modules.lstm import LSTMPLayer, lstmp_scan
from elmo_pipeline.text.chars import BOS_TOKEN, EOS_TOKEN, word_char_ids

Precision = Literal["fp32", "bf16"]
PRECISIONS: tuple[str, ...] = ("fp32", "bf16")
LayerMode = Literal["all", "average", "top"]
LAYER_MODES: tuple[str, ...] = ("all", "average", "top")


class Sink(Protocol):
    """Where one sentence's layers go: a NumPy array or an HDF5 dataset, (L + 1, n, 2P) or (n, 2P)."""

    def __setitem__(self, key, value) -> None: ...  # noqa: D105


class _Direction:
    """One direction's LSTMP stack, weights laid out for inference in the matmul dtype."""

    def __init__(self, layers: Sequence[LSTMPLayer], dtype: torch.dtype) -> None:
        self.weight_ih = [layer.weight_ih.detach().to(dtype) for layer in layers]  # (4H, X)
        self.bias = [layer.bias.detach().float() for layer in layers]  # (4H,), added in fp32
        self.whh_t = [layer.weight_hh.detach().to(dtype).t() for layer in layers]  # (P, 4H)
        self.whr_t = [layer.weight_hr.detach().to(dtype).t() for layer in layers]  # (H, P)
        self.cell_clip = [layer.cell_clip for layer in layers]
        self.proj_clip = [layer.proj_clip for layer in layers]


class StreamingBiLM:
    """Runs a frozen biLM of LSTMP cells over sentences into per-sentence outputs (see the module doc).

    Args:
        bilm: the biLM; its weights are read once (re-create the runner after changing them).
        precision: ``fp32``, or ``bf16`` for the matrix multiplies (gates and cell state stay fp32).
        chunk_tokens: row-steps per chunk of the recurrence (rows x steps); bounds the memory.
        cache_tokens: distinct tokens whose vectors are kept between batches (0: none kept).
        encode_tokens: distinct tokens per call of the character CNN; bounds its intermediate.
    """

    def __init__(
        self,
        bilm: BiLM,
        precision: Precision = "fp32",
        chunk_tokens: int = 1024,
        cache_tokens: int = 16384,
        encode_tokens: int = 512,
    ) -> None:
        if not self.supports(bilm):
            raise ValueError(f"StreamingBiLM: runs biLMs of lstmp cells only, got cell {bilm.config.cell!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"--precision must be one of {PRECISIONS}, got {precision!r}")
        if chunk_tokens < 1 or encode_tokens < 1 or cache_tokens < 0:
            raise ValueError("StreamingBiLM: chunk_tokens and encode_tokens must be >= 1, cache_tokens >= 0")
        self.bilm = bilm
        self.precision = precision
        self.chunk_tokens, self.encode_tokens = chunk_tokens, encode_tokens
        self.device = next(bilm.parameters()).device
        self.dtype = torch.bfloat16 if precision == "bf16" else torch.float32  # of the matrix multiplies
        self.P, self.H = bilm.config.projection_dim, bilm.config.cell_dim
        self.num_layers = bilm.config.num_layers
        self.directions = {
            "forward": _Direction(bilm.forward_layers, self.dtype),
            "backward": _Direction(bilm.backward_layers, self.dtype),
        }
        # token vectors: slot 0 is the zero vector of a finished row; the others hold cached tokens
        self.cache_tokens = cache_tokens
        self._slots: dict[str, int] = {}
        self._vectors = torch.zeros(1, self.P, device=self.device)  # (1 + cached, P), grown as needed

    @classmethod
    def for_bilm(cls, bilm: BiLM, precision: Precision = "fp32", chunk_tokens: int = 1024) -> StreamingBiLM | None:
        """The runner of ``bilm``, or None for cells it does not implement (callers then use ``BiLM.forward``)."""
        return cls(bilm, precision, chunk_tokens) if cls.supports(bilm) else None

    @staticmethod
    def supports(bilm: BiLM) -> bool:
        """Whether every recurrent layer of ``bilm`` is an LSTMP layer (the cells this runner implements)."""
        layers = [*bilm.forward_layers, *bilm.backward_layers]
        return all(type(layer) is LSTMPLayer for layer in layers)

    # ----------------------------------------------------------------------------------------- tokens
    def _encode(self, tokens: list[str]) -> torch.Tensor:
        """Token vectors (N, P), fp32, of distinct tokens, ``encode_tokens`` at a time."""
        encoder = self.bilm.token_encoder
        parts = []
        for start in range(0, len(tokens), self.encode_tokens):
            piece = tokens[start : start + self.encode_tokens]
            chars = torch.tensor([word_char_ids(t) for t in piece], device=self.device)  # (N, C)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
                parts.append(encoder.encode(chars).float())  # (N, P)
        return torch.cat(parts) if parts else self._vectors.new_zeros(0, self.P)

    def _slots_of(self, tokens: set[str]) -> dict[str, int]:
        """Rows of ``self._vectors`` holding each token's vector, encoding the ones not cached."""
        missing = [t for t in tokens if t not in self._slots]
        if len(self._slots) + len(missing) > max(self.cache_tokens, len(tokens)):
            self._slots.clear()  # full: start again (amortised, keeps memory bounded)
            self._vectors = self._vectors[:1]
            missing = list(tokens)
        if missing:
            first = self._vectors.shape[0]
            self._vectors = torch.cat([self._vectors, self._encode(missing)])  # (1 + cached, P)
            self._slots.update({t: first + i for i, t in enumerate(missing)})
        return self._slots

    # ------------------------------------------------------------------------------------------- run
    def run(
        self,
        sentences: Sequence[Sequence[str]],
        sinks: Sequence[Sink],
        layers: LayerMode = "all",
        keep_sentence_boundaries: bool = False,
    ) -> None:
        """Write the biLM layers of every sentence into its sink.

        Shapes: L layers, P projection, n the sentence's tokens (n + 2 with kept boundaries).

        Args:
            sentences: lists of tokens, without ``<S>``/``</S>`` (added here); an empty one is ``<S> </S>``.
            sinks: one per sentence, shaped (L + 1, n, 2P) for ``all`` and (n, 2P) for ``average``
                and ``top``; anything NumPy-style slice assignment works on (an HDF5 dataset too).
            layers: ``all``, ``average`` of the layers, or the ``top`` layer.
            keep_sentence_boundaries: also write the ``<S>`` and ``</S>`` positions.
        """
        if layers not in LAYER_MODES:
            raise ValueError(f"--layers must be one of {LAYER_MODES}, got {layers!r}")
        if len(sinks) != len(sentences):
            raise ValueError(f"StreamingBiLM: {len(sentences)} sentences but {len(sinks)} sinks")
        order = sorted(range(len(sentences)), key=lambda i: -len(sentences[i]))  # longest first
        rows = [[BOS_TOKEN, *sentences[i], EOS_TOKEN] for i in order]
        row_sinks = [sinks[i] for i in order]
        with torch.inference_mode():
            for name in ("forward", "backward"):
                self._run_direction(name, rows, row_sinks, layers, keep_sentence_boundaries)

    def _run_direction(self, name: str, rows: list[list[str]], sinks, layers: str, keep: bool) -> None:
        weights = self.directions[name]
        P, H, L = self.P, self.H, self.num_layers
        lengths = [len(row) for row in rows]  # descending, boundaries included
        ascending = lengths[::-1]
        B, T = len(rows), lengths[0]

        def active(t: int) -> int:  # rows still running at step t (longer than t)
            return B - bisect.bisect_right(ascending, t)

        h = [torch.zeros(B, P, device=self.device, dtype=self.dtype) for _ in range(L)]  # carried state
        c = [torch.zeros(B, H, device=self.device) for _ in range(L)]
        half = slice(0, P) if name == "forward" else slice(P, 2 * P)
        start = 0
        pending = None  # the previous chunk's copy and where it goes
        while start < T:
            width = active(start)
            steps = min(T - start, max(1, self.chunk_tokens // width))
            end = start + steps
            # the chunk's tokens, time-major: (steps, width); a finished row reads slot 0 (zeros)
            positions = [
                [(t if name == "forward" else lengths[r] - 1 - t) if t < lengths[r] else -1 for r in range(width)]
                for t in range(start, end)
            ]
            tokens = {rows[r][p] for step in positions for r, p in enumerate(step) if p >= 0}
            slots = self._slots_of(tokens)
            index = torch.tensor(
                [[slots[rows[r][p]] if p >= 0 else 0 for r, p in enumerate(step)] for step in positions],
                device=self.device,
            )  # (steps, width)
            x = self._vectors[index]  # (steps, width, P), fp32
            outputs = [x]
            running = [active(t) for t in range(start, end)]  # rows running at each step of the chunk
            for layer in range(L):
                out = self._layer_chunk(weights, layer, x, h[layer], c[layer], running)
                if self.bilm.config.residual(layer):
                    out = out + x
                outputs.append(out)
                x = out
            # the chunk's copy to the host starts now and is written out after the next chunk is
            # queued, so on a GPU the copy and the writing overlap the next chunk's compute
            copy = self._start_copy(outputs, layers)
            if pending is not None:
                self._write(*pending)
            pending = (copy, sinks, lengths, start, end, width, half, name, layers, keep)
            start = end
        if pending is not None:
            self._write(*pending)

    def _layer_chunk(self, weights, layer, x, h, c, running) -> torch.Tensor:
        """One layer over one chunk, state (h, c) carried in place. x (S, W, X) -> (S, W, P) fp32."""
        steps, width = x.shape[:2]
        xw = F.linear(x.to(self.dtype), weights.weight_ih[layer]).float().add_(weights.bias[layer])  # (S, W, 4H)
        cells = c.new_empty(steps + 1, width, self.H)  # slot 0: the carried state
        hs = h.new_zeros(steps + 1, width, self.P)  # zeros stay where a row has finished
        cells[0], hs[0] = c[:width], h[:width]
        tanh_c = c.new_empty(steps, width, self.H)
        m = h.new_empty(steps, width, self.H)
        lstmp_scan(
            xw,
            cells,
            hs,
            tanh_c,
            m,
            weights.whh_t[layer],
            weights.whr_t[layer],
            weights.cell_clip[layer],
            weights.proj_clip[layer],
            active=running,
        )
        # carry the state on; a row that finished inside the chunk never runs again, so its slot is not read
        c[:width], h[:width] = cells[steps], hs[steps]
        return hs[1:].float()  # (S, W, P)

    @staticmethod
    def _start_copy(outputs: list[torch.Tensor], layers: str) -> tuple[torch.Tensor, torch.cuda.Event | None]:
        """The chunk's layers in host memory: on a GPU an asynchronous copy into pinned memory and
        the event that marks its end; on the CPU the tensor itself."""
        stacked = torch.stack(outputs, dim=2)  # (S, W, L+1, P)
        if layers == "average":
            stacked = stacked.mean(dim=2)  # (S, W, P)
        elif layers == "top":
            stacked = stacked[:, :, -1]  # (S, W, P)
        if stacked.device.type != "cuda":
            return stacked.cpu(), None
        host = torch.empty(stacked.shape, dtype=stacked.dtype, pin_memory=True)
        host.copy_(stacked, non_blocking=True)
        done = torch.cuda.Event()
        done.record()
        return host, done

    def _write(self, copy, sinks, lengths, start, end, width, half, name, layers, keep) -> None:
        """Copy the chunk's positions of every running row into its sink's half."""
        host, done = copy
        if done is not None:
            done.synchronize()  # the chunk's copy has landed
        values = host.numpy()
        for r in range(width):
            length = lengths[r]
            last = min(end, length)  # steps start .. last - 1 of this row are in the chunk
            if name == "forward":
                lo, hi = start, last  # positions lo .. hi - 1
            else:
                lo, hi = length - last, length - start
            if not keep:  # drop <S> (position 0) and </S> (position length - 1)
                lo, hi = max(lo, 1), min(hi, length - 1)
            if lo >= hi:
                continue
            if name == "forward":
                rows = values[lo - start : hi - start, r]  # (k, [L+1,] P)
            else:  # step t holds position length - 1 - t: reverse into ascending positions
                rows = values[length - hi - start : length - lo - start, r][::-1]
            shift = 0 if keep else 1
            if layers == "all":
                sinks[r][:, lo - shift : hi - shift, half] = np.ascontiguousarray(rows.transpose(1, 0, 2))
            else:
                sinks[r][lo - shift : hi - shift, half] = np.ascontiguousarray(rows)
