"""The ELMo bidirectional language model (Peters et al. 2018; PAPER.md).

    x_k        = CharCNN(chars_k)                                  token layer, (B, T, P)
    h^fwd_k,l  = LSTMP^fwd_l(h^fwd_{<=k}, l-1) [+ h^fwd_k,l-1 for l > 1]   forward stack
    h^bwd_k,l  = LSTMP^bwd_l(h^bwd_{>=k}, l-1) [+ h^bwd_k,l-1 for l > 1]   backward stack
    p(t_{k+1} | t_{<=k}) = softmax(W h^fwd_k,L + b)                shared softmax
    p(t_{k-1} | t_{>=k}) = softmax(W h^bwd_k,L + b)

LSTMP is ELMo's cell and the default; ``config.cell`` swaps in another (elmo_pipeline/modules/cells.py)
with the same contract, (B, T, P) in and out from a zero state, so nothing else changes.

The output is the list of layer activations ``[x; x], [h^fwd_1; h^bwd_1], ...`` and the mask; with
targets it also carries the loss, the mean of the forward and the backward negative log-likelihood.
The model is stateless: every call starts the LSTMs from zero, so a sentence's vectors never
depend on what else is in the batch or what was embedded before.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from elmo_pipeline.errors import InputError
from elmo_pipeline.models.config import BiLMConfig
from elmo_pipeline.modules.cells import make_cell
from elmo_pipeline.modules.char_cnn import CharCNNEncoder
from elmo_pipeline.modules.lstm import lstmp_pair
from elmo_pipeline.modules.softmax import AdaptiveLMSoftmax, LMSoftmax

IGNORE = -1  # target id of positions without a target


@dataclass
class BiLMOutput:
    """What the biLM returns.

    Attributes:
        activations: L + 1 tensors (B, T, 2P): ``[x; x]`` then ``[h_fwd; h_bwd]`` per layer,
            zero at padded positions.
        mask: (B, T) bool, True at real tokens.
        loss: mean of ``forward_loss`` and ``backward_loss`` (only with targets).
        forward_loss: mean forward negative log-likelihood per target token.
        backward_loss: mean backward negative log-likelihood per target token.
        num_targets: target tokens per direction, a 0-dim tensor on the model's device.
    """

    activations: list[torch.Tensor]
    mask: torch.Tensor
    loss: torch.Tensor | None = None
    forward_loss: torch.Tensor | None = None
    backward_loss: torch.Tensor | None = None
    num_targets: torch.Tensor | int = 0


def check_targets(targets: torch.Tensor, vocab_size: int) -> None:
    """Refuse target ids outside ``[IGNORE, vocab_size)``: a vocabulary that changed, or a bad batch.

    Raises:
        ValueError: naming the bound that was crossed.
    """
    if not targets.numel():
        return
    if targets.min() < IGNORE:
        raise ValueError(f"BiLM: a target id is < {IGNORE}; mark positions without a target with {IGNORE}")
    if targets.max() >= vocab_size:
        raise ValueError(f"BiLM: a target id is >= vocab_size {vocab_size}; was the vocabulary changed?")


def check_finite(weights: torch.Tensor | np.ndarray, where: str) -> None:
    """Refuse weights holding NaN or Inf, naming them: every loader calls this before a model sees them.

    A non-finite weight would make every vector NaN downstream, where the symptom blames something else.
    """
    values = torch.as_tensor(weights)
    if values.is_floating_point() and not bool(torch.isfinite(values).all()):
        bad = int((~torch.isfinite(values)).sum())
        raise InputError(
            f"{where} holds {bad} non-finite value(s) (NaN or Inf): the file is damaged or comes from a run that "
            "diverged. Use another copy of the weights (or an earlier checkpoint)"
        )


def reverse_padded(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each sequence of (B, T, ...) within its own length; padding stays at the end."""
    B, T = x.shape[:2]
    steps = torch.arange(T, device=x.device).unsqueeze(0)  # (1, T)
    last = (lengths.to(x.device) - 1).unsqueeze(1)  # (B, 1)
    index = torch.where(steps <= last, last - steps, steps)  # (B, T)
    index = index.view(B, T, *([1] * (x.dim() - 2))).expand_as(x)  # (B, T, ...)
    return x.gather(1, index)


class BiLM(nn.Module):
    """ELMo biLM: shared character encoder, forward and backward LSTMP (or ``config.cell``) stacks, shared softmax.

    Args:
        config: sizes and switches; ``config.vocab_size == 0`` builds it without a softmax.
    """

    def __init__(self, config: BiLMConfig) -> None:
        super().__init__()
        self.config = config
        P, H = config.projection_dim, config.cell_dim
        self.token_encoder = CharCNNEncoder(
            config.num_chars,
            config.char_embed_dim,
            config.filters,
            config.num_highway,
            P,
            config.activation,
            dedup=config.fast,
        )

        def stack() -> nn.ModuleList:
            return nn.ModuleList(
                make_cell(
                    config.cell,
                    P,
                    P,
                    H,
                    config.cell_clip,
                    config.proj_clip,
                    fast=config.fast,
                    compiled=config.compile_recurrence,
                )
                for _ in range(config.num_layers)
            )

        self.forward_layers = stack()
        self.backward_layers = stack()
        self.dropout = nn.Dropout(config.dropout)
        self.host_waits: bool | None = None  # may the loss make the host wait for the device? (may_wait)
        self.softmax: LMSoftmax | AdaptiveLMSoftmax | None = None
        if config.vocab_size and config.softmax == "adaptive":
            self.softmax = AdaptiveLMSoftmax(P, config.vocab_size, config.adaptive_cutoffs, config.adaptive_div_value)
        elif config.vocab_size:
            samples = config.num_samples if config.softmax == "sampled" else 0
            self.softmax = LMSoftmax(P, config.vocab_size, samples)

    def num_parameters(self, include_softmax: bool = True) -> int:
        skip = set() if include_softmax or self.softmax is None else {id(p) for p in self.softmax.parameters()}
        return sum(p.numel() for p in self.parameters() if id(p) not in skip)

    def _run_stacks(self, x_fwd: torch.Tensor, x_bwd: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Both directions' stacks, a depth at a time: L x (B, T, P) each (the backward one in reversed time).

        The two layers at one depth are independent, so with ``config.parallel_directions`` they run
        side by side on a multi-threaded CPU (:func:`lstmp_pair`); dropout masks are drawn here, in
        the same order either way, so the switch does not change the numbers.
        """
        fwd: list[torch.Tensor] = []
        bwd: list[torch.Tensor] = []
        for index, (layer_fwd, layer_bwd) in enumerate(zip(self.forward_layers, self.backward_layers, strict=True)):
            in_fwd, in_bwd = self.dropout(x_fwd), self.dropout(x_bwd)
            if self.config.parallel_directions:
                h_fwd, h_bwd = lstmp_pair(layer_fwd, layer_bwd, in_fwd, in_bwd)  # 2 x (B, T, P)
            else:
                h_fwd, h_bwd = layer_fwd(in_fwd), layer_bwd(in_bwd)
            if self.config.residual(index):
                h_fwd, h_bwd = h_fwd + x_fwd, h_bwd + x_bwd
            fwd.append(h_fwd)
            bwd.append(h_bwd)
            x_fwd, x_bwd = h_fwd, h_bwd
        return fwd, bwd

    def forward(
        self,
        chars: torch.Tensor,
        forward_targets: torch.Tensor | None = None,
        backward_targets: torch.Tensor | None = None,
        sampled: bool | None = None,
    ) -> BiLMOutput:
        """Run the biLM.

        Shapes: B batch, T tokens (sentence boundaries included if the caller added them), C chars
        per token, P projection, L layers.

        Args:
            chars: (B, T, C) shifted character ids, all-zero rows at padded positions.
            forward_targets: (B, T) id of token t+1 at position t, ``IGNORE`` (-1) where none.
            backward_targets: (B, T) id of token t-1 at position t, ``IGNORE`` where none.
            sampled: use the sampled softmax; default: in training when ``config.softmax`` is
                ``sampled`` and ``num_samples > 0`` (the full and adaptive softmaxes are exact).

        Returns:
            BiLMOutput with L + 1 activations of shape (B, T, 2P) and the (B, T) mask.
        """
        if chars.dim() != 3 or chars.shape[-1] != self.config.max_chars_per_token:
            raise ValueError(
                f"BiLM: expected character ids of shape (batch, tokens, {self.config.max_chars_per_token}), "
                f"got {tuple(chars.shape)}"
            )
        mask = (chars > 0).any(dim=-1)  # (B, T)
        lengths = mask.sum(dim=1).clamp(min=1)  # (B,)
        keep = mask.unsqueeze(-1)  # (B, T, 1)
        x = self.token_encoder(chars) * keep  # (B, T, P)
        fwd, bwd = self._run_stacks(x, reverse_padded(x, lengths))  # 2 x L x (B, T, P), bwd in reversed time
        bwd = [reverse_padded(h, lengths) for h in bwd]  # L x (B, T, P)
        activations = [torch.cat([x, x], dim=-1)]  # (B, T, 2P)
        activations += [torch.cat([f, b], dim=-1) * keep for f, b in zip(fwd, bwd, strict=True)]
        out = BiLMOutput(activations=activations, mask=mask)
        if forward_targets is not None and backward_targets is not None:
            self._add_loss(out, fwd[-1], bwd[-1], forward_targets, backward_targets, sampled)
        return out

    def _add_loss(self, out, top_fwd, top_bwd, forward_targets, backward_targets, sampled) -> None:
        if self.softmax is None:
            raise ValueError("BiLM: this model has no softmax (vocab_size 0); it cannot compute an LM loss")
        if sampled is None:
            sampled = self.training and self.softmax.num_samples > 0
        nll = self.softmax.sampled_nll if sampled else self.softmax.full_nll
        losses = []
        for h, targets in ((top_fwd, forward_targets), (top_bwd, backward_targets)):
            if targets.shape != h.shape[:2]:
                raise ValueError(
                    f"BiLM: targets of shape {tuple(targets.shape)} do not match the input {tuple(h.shape[:2])}"
                )
            valid = targets != IGNORE  # (B, T)
            if self.may_wait(h.device):
                check_targets(targets, self.softmax.vocab_size)
                picked = self.dropout(h[valid])  # (N, P)
                losses.append(nll(picked, targets[valid]).mean() if picked.shape[0] else h.sum() * 0.0)
                continue
            # every row, the ones without a target masked out: no data-dependent shape, no wait
            rows = self.dropout(h.reshape(-1, h.shape[-1]))  # (B*T, P)
            weights = valid.reshape(-1).to(rows.dtype)  # (B*T,)
            row_nll = nll(rows, targets.reshape(-1).clamp(min=0))  # (B*T,)
            losses.append((row_nll * weights).sum() / weights.sum().clamp(min=1.0))
        out.forward_loss, out.backward_loss = losses
        out.loss = 0.5 * (losses[0] + losses[1])
        out.num_targets = (forward_targets != IGNORE).sum()  # a tensor: reading it would stop the host

    def may_wait(self, device: torch.device) -> bool:
        """Whether the loss may make the host wait for the device (``host_waits``; None: on the CPU only).

        Where it may (the CPU, where a wait costs nothing), the target ids are range-checked here and
        the loss scores the target rows only (a boolean mask: less work). Where it may not (a GPU,
        where a wait stops the host from queuing the next kernels), every row is scored and the
        padding masked out, and the caller checks the ids on the host before the batch moves
        (:class:`~elmo_pipeline.systems.pretrain.PretrainSystem` does).
        """
        return device.type == "cpu" if self.host_waits is None else self.host_waits
