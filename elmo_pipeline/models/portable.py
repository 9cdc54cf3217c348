"""The biLM's encoder as one portable module, for serving: TorchScript and ONNX.

    chars (B, T, 50) int64  ->  layers (L + 1, B, T, 2P) float32, mask (B, T) bool

``chars`` are the biLM's input: ELMo character ids with ``<S>``/``</S>`` already around each
sentence and all-zero rows at padding (:func:`elmo_pipeline.text.chars.batch_to_char_ids` with
``add_boundaries=True``). It is stateless (every call starts from a zero state) and takes any
batch size and length. It computes what :class:`~elmo_pipeline.models.bilm.BiLM` computes in eval
mode, written with only what TorchScript compiles and the ONNX exporter translates: no
``torch.unique`` (every position's characters are encoded), a plain loop over time for the clipped
recurrence (an ONNX ``Loop``), and the backward direction reversed within each sentence's length by
a gather.
"""

from __future__ import annotations

import torch
from torch import nn

from elmo_pipeline.errors import InputError
from elmo_pipeline.models.bilm import BiLM
from elmo_pipeline.modules.lstm import lstmp_recurrence
from elmo_pipeline.text.chars import MAX_CHARS


class _HighwayLayer(nn.Module):
    """y = t * relu(W_H x) + (1 - t) * x, t = sigmoid(W_T x): one layer of the biLM's highway."""

    def __init__(self, transform: nn.Linear, gate: nn.Linear) -> None:
        super().__init__()
        self.transform, self.gate = transform, gate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = torch.sigmoid(self.gate(x))  # (N, F)
        return t * torch.relu(self.transform(x)) + (1.0 - t) * x  # (N, F)


class _LSTMP(nn.Module):
    """One LSTMP layer's weights (copied) and clips, run by :func:`lstmp_recurrence`."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.weight_ih = nn.Parameter(layer.weight_ih.detach().clone())  # (4H, P_in)
        self.weight_hh = nn.Parameter(layer.weight_hh.detach().clone())  # (4H, P)
        self.bias = nn.Parameter(layer.bias.detach().clone())  # (4H,)
        self.weight_hr = nn.Parameter(layer.weight_hr.detach().clone())  # (P, H)
        self.cell_clip = float(layer.cell_clip or 0.0)  # 0: none (a plain float exports to ONNX)
        self.proj_clip = float(layer.proj_clip or 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return lstmp_recurrence(
            x, self.weight_ih, self.bias, self.weight_hh, self.weight_hr, self.cell_clip, self.proj_clip
        )  # (B, T, P)


def _reverse_padded(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each sequence of (B, T, D) within its own length; padding stays at the end."""
    B, T, D = x.shape[0], x.shape[1], x.shape[2]
    steps = torch.arange(T, device=x.device).unsqueeze(0)  # (1, T)
    last = (lengths - 1).unsqueeze(1)  # (B, 1)
    index = torch.where(steps <= last, last - steps, steps)  # (B, T)
    return x.gather(1, index.unsqueeze(-1).expand(B, T, D))  # (B, T, D)


class PortableEmbedder(nn.Module):
    """The encoder of a :class:`BiLM` (its weights copied), as one TorchScript- and ONNX-ready module.

    Args:
        bilm: an ``lstmp`` biLM (ELMo's cell; the published models are all ``lstmp``).
    """

    def __init__(self, bilm: BiLM) -> None:
        super().__init__()
        config = bilm.config
        if config.cell != "lstmp":
            raise InputError(f"export: only the lstmp cell (ELMo's) exports; this biLM has {config.cell!r}")
        encoder = bilm.token_encoder
        self.embedding = encoder.embedding
        self.convs = encoder.convs
        self.relu = config.activation == "relu"
        self.highway = nn.ModuleList(
            _HighwayLayer(t, g) for t, g in zip(encoder.highway.transform, encoder.highway.gate, strict=True)
        )
        self.projection = encoder.projection
        self.projection_dim = int(config.projection_dim)
        self.max_chars = MAX_CHARS  # ids per token
        self.num_chars = int(self.embedding.num_embeddings)  # ids run 0 .. num_chars - 1
        self.forward_layers = nn.ModuleList(_LSTMP(layer) for layer in bilm.forward_layers)
        self.backward_layers = nn.ModuleList(_LSTMP(layer) for layer in bilm.backward_layers)
        self.residual = [config.residual(layer) for layer in range(config.num_layers)]  # a list TorchScript reads
        self.eval()

    def _tokens(self, chars: torch.Tensor) -> torch.Tensor:
        B, T, C = chars.shape[0], chars.shape[1], chars.shape[2]
        x = self.embedding(chars.reshape(B * T, C)).transpose(1, 2)  # (B*T, D, C)
        pooled = []
        for conv in self.convs:
            y = conv(x).amax(dim=-1)  # (B*T, count)
            pooled.append(torch.relu(y) if self.relu else torch.tanh(y))
        h = torch.cat(pooled, dim=-1)  # (B*T, F)
        for layer in self.highway:
            h = layer(h)
        return self.projection(h).reshape(B, T, self.projection_dim)  # (B, T, P); explicit: B or T may be 0

    def forward(self, chars: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Args: chars (B, T, 50) int64 with boundaries. Returns: layers (L + 1, B, T, 2P), mask (B, T).

        B and T may be 0 (empty outputs); another shape or an id outside 0 .. 261 is refused.
        """
        if chars.dim() != 3 or chars.shape[2] != self.max_chars:
            raise ValueError("chars must be (batch, tokens, 50): 50 ELMo character ids per token")
        if chars.numel() > 0:
            if bool(chars.min() < 0) or bool(chars.max() >= self.num_chars):
                raise ValueError("chars: ELMo character ids run from 0 to 261")
        mask = (chars > 0).any(dim=-1)  # (B, T)
        lengths = mask.sum(dim=1).clamp(min=1)  # (B,)
        keep = mask.unsqueeze(-1).to(torch.float32)  # (B, T, 1)
        x = self._tokens(chars) * keep  # (B, T, P)
        layers = [torch.cat([x, x], dim=-1)]  # (B, T, 2P)
        fwd_in = x
        bwd_in = _reverse_padded(x, lengths)
        index = 0
        for fwd_layer, bwd_layer in zip(self.forward_layers, self.backward_layers):
            fwd = fwd_layer(fwd_in)  # (B, T, P)
            bwd = bwd_layer(bwd_in)  # (B, T, P), reversed time
            if self.residual[index]:
                fwd = fwd + fwd_in
                bwd = bwd + bwd_in
            layers.append(torch.cat([fwd, _reverse_padded(bwd, lengths)], dim=-1) * keep)  # (B, T, 2P)
            fwd_in, bwd_in = fwd, bwd
            index += 1
        return torch.stack(layers, dim=0), mask  # (L + 1, B, T, 2P), (B, T)
