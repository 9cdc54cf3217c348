"""A straightforward per-step biLM reader, written for benchmarks/bench_embed_speed.py to compare `embed` with.

It follows how the reference PyTorch reader (AllenNLP's ELMo: a character encoder over the padded
batch, then ``LstmCellWithProjection`` per layer and direction) computes the layers, written here
from the equations in PAPER.md and with our weights; no code of theirs:

- the character CNN, highway and projection run on every position of the padded batch, padding
  and repeated words included;
- each layer and direction runs the recurrence one step at a time over the rows still running
  (the batch sorted by length), and each step does its own input projection ``W_ih x_t``, its
  recurrent projection ``W_hh h_{t-1} + b`` and the projection ``W_hr m``: three thin matrix
  multiplies per step, with the cell and projection clipping in between;
- everything is float32 and the whole padded batch is held at once.

:meth:`ReferenceReader.layers` returns what :func:`elmo_pipeline.models.elmo.bilm_layers` returns, so
the benchmark can also check that the two agree.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from elmo_pipeline.models import BiLM
from elmo_pipeline.text.chars import batch_to_char_ids


class ReferenceReader:
    """Per-step LSTMP reader over a BiLM's weights (float32, inference only)."""

    def __init__(self, bilm: BiLM) -> None:
        self.bilm = bilm
        self.config = bilm.config

    def _direction(self, layers, x: torch.Tensor, lengths: list[int]) -> list[torch.Tensor]:
        """x (B, T, P) token vectors, rows sorted longest first -> L x (B, T, P) layer outputs."""
        B, T, _ = x.shape
        outputs = []
        for index, layer in enumerate(layers):
            H, P = layer.hidden_size, layer.proj_size
            h = x.new_zeros(B, P)  # (B, P)
            c = x.new_zeros(B, H)  # (B, H)
            out = x.new_zeros(B, T, P)  # (B, T, P)
            for t in range(T):
                n = sum(1 for length in lengths if length > t)  # rows still running
                gates = F.linear(x[:n, t], layer.weight_ih) + F.linear(h[:n], layer.weight_hh, layer.bias)  # (n, 4H)
                i, f, g, o = gates.chunk(4, dim=-1)  # 4 x (n, H)
                c_new = torch.sigmoid(f) * c[:n] + torch.sigmoid(i) * torch.tanh(g)  # (n, H)
                if layer.cell_clip is not None:
                    c_new = c_new.clamp(-layer.cell_clip, layer.cell_clip)
                h_new = F.linear(torch.sigmoid(o) * torch.tanh(c_new), layer.weight_hr)  # (n, P)
                if layer.proj_clip is not None:
                    h_new = h_new.clamp(-layer.proj_clip, layer.proj_clip)
                h, c = torch.cat([h_new, h[n:]]), torch.cat([c_new, c[n:]])  # finished rows keep their state
                out[:n, t] = h_new
            if index > 0 and self.config.use_skip_connections:
                out = out + x
            outputs.append(out)
            x = out
        return outputs

    @torch.inference_mode()
    def layers(self, sentences: list[list[str]]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """L + 1 tensors (B, n_max, 2P) without the boundaries, zero at padding, and the (B, n_max) mask."""
        order = sorted(range(len(sentences)), key=lambda i: -len(sentences[i]))
        chars = batch_to_char_ids([sentences[i] for i in order], add_boundaries=True)  # (B, T, C)
        B, T, C = chars.shape
        lengths = [len(sentences[i]) + 2 for i in order]
        x = self.bilm.token_encoder.encode(chars.view(B * T, C)).view(B, T, -1)  # every position, (B, T, P)
        steps = torch.arange(T)
        mask = steps.unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)  # (B, T)
        x = x * mask.unsqueeze(-1)
        reverse = torch.stack([torch.where(steps < n, n - 1 - steps, steps) for n in lengths])  # (B, T)
        x_rev = x.gather(1, reverse.unsqueeze(-1).expand_as(x))  # each row reversed within its length
        fwd = self._direction(self.bilm.forward_layers, x, lengths)
        bwd = [
            h.gather(1, reverse.unsqueeze(-1).expand_as(h))
            for h in self._direction(self.bilm.backward_layers, x_rev, lengths)
        ]
        layers = [torch.cat([x, x], dim=-1)] + [torch.cat([f, b], dim=-1) for f, b in zip(fwd, bwd, strict=True)]
        inverse = torch.argsort(torch.tensor(order))
        inner = steps[: T - 2].unsqueeze(0) < torch.tensor(lengths).unsqueeze(1) - 2  # (B, T-2): the n tokens
        layers = [(layer[:, 1 : T - 1] * inner.unsqueeze(-1))[inverse] for layer in layers]  # (B, T-2, 2P)
        return layers, inner[inverse]
