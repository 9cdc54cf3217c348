"""ELMo for a downstream task: a biLM's layers mixed into task representations (PAPER.md; Peters et al. 2018).

    h_k,0 .. h_k,L = biLM(<S> t_1 .. t_N </S>)          every layer, token layer included, (B, T+2, 2P)
    ELMo_k^(n)     = dropout(gamma^(n) * sum_j softmax(w^(n))_j * h_k,j)    one mix per place n it is used

The biLM is frozen by default (no gradient, always in eval mode, so no biLM dropout) and can be
fine-tuned with ``requires_grad=True``. It is stateless: every call starts its LSTMs from zero, so a
sentence gets the same vectors alone or in any padded batch, on the first call or the hundredth
(the reference TensorFlow reader carries LSTM state across batches; we never do).

Sentence boundaries are added here, not by the caller, and removed from the output unless
``keep_sentence_boundaries``. The mix runs *after* the boundaries are removed, so a layer-normalised
mix takes its statistics over the task's tokens only (AllenNLP mixes first; without layer
normalisation the two orders give identical results) and a mix over cached activations
(``data.activation_cache``) equals a mix over a fresh biLM run.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from elmo_pipeline.models.bilm import BiLM
from elmo_pipeline.modules.elmo_mix import ElmoMix
from elmo_pipeline.text.chars import BOS_TOKEN, EOS_TOKEN, MAX_CHARS, batch_to_char_ids, word_char_ids

Sentences = list[list[str]]


class ElmoOutput(NamedTuple):
    """What :class:`Elmo` returns (unpacks as ``representations, mask``).

    Attributes:
        representations: N tensors (B, T, 2P), one per mix; zero at padded positions.
        mask: (B, T) bool, True at real tokens.
    """

    representations: list[torch.Tensor]
    mask: torch.Tensor


def _lengths_of(mask: torch.Tensor, what: str) -> torch.Tensor:
    """Lengths of a left-aligned (B, T) mask; raises if a padding row sits before a real token."""
    lengths = mask.sum(dim=1)  # (B,)
    steps = torch.arange(mask.shape[1], device=mask.device)  # (T,)
    if not torch.equal(mask, steps.unsqueeze(0) < lengths.unsqueeze(1)):
        raise ValueError(
            f"{what}: tokens must be left-aligned, with all-zero padding rows only at the end of a sentence"
        )
    return lengths


def add_sentence_boundaries(chars: torch.Tensor) -> torch.Tensor:
    """Wrap every sentence of a padded character-id batch in ``<S>`` ... ``</S>``.

    Args:
        chars: (B, T, C) shifted character ids without boundaries, all-zero rows at the end as padding.

    Returns:
        (B, T + 2, C); an empty sentence becomes ``<S> </S>``.
    """
    if chars.dim() != 3 or chars.shape[-1] != MAX_CHARS:
        raise ValueError(
            f"Elmo: expected character ids of shape (batch, tokens, {MAX_CHARS}), got {tuple(chars.shape)}"
        )
    B, T, C = chars.shape
    mask = (chars > 0).any(dim=-1)  # (B, T)
    lengths = _lengths_of(mask, "Elmo")  # (B,)
    bos = torch.tensor(word_char_ids(BOS_TOKEN), dtype=chars.dtype, device=chars.device)  # (C,)
    eos = torch.tensor(word_char_ids(EOS_TOKEN), dtype=chars.dtype, device=chars.device)  # (C,)
    if T and mask[:, 0].any() and (chars[:, 0][mask[:, 0]] == bos).all(dim=-1).any():
        raise ValueError("Elmo: a sentence already starts with <S>; pass sentences without boundaries, Elmo adds them")
    out = chars.new_zeros(B, T + 2, C)  # (B, T+2, C)
    out[:, 1 : T + 1] = chars
    out[:, 0] = bos
    out[torch.arange(B, device=chars.device), lengths + 1] = eos
    return out


def remove_sentence_boundaries(tensor: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop the first and the last real position (``<S>``, ``</S>``) of every sentence.

    Args:
        tensor: (B, T + 2, ...) values with boundaries, padding at the end.
        mask: (B, T + 2) bool, True at real positions (boundaries included).

    Returns:
        (B, T, ...) values, zero at padded positions, and their (B, T) mask.
    """
    lengths = (_lengths_of(mask, "remove_sentence_boundaries") - 2).clamp(min=0)  # (B,)
    T = max(tensor.shape[1] - 2, 0)
    new_mask = torch.arange(T, device=mask.device).unsqueeze(0) < lengths.unsqueeze(1)  # (B, T)
    inner = tensor[:, 1 : 1 + T]  # (B, T, ...)
    keep = new_mask.view(*new_mask.shape, *([1] * (tensor.dim() - 2))).to(tensor.dtype)  # (B, T, 1...)
    return inner * keep, new_mask  # (B, T, ...), (B, T)


def bilm_layers(
    bilm: BiLM, inputs: torch.Tensor | Sentences, keep_sentence_boundaries: bool = False
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Run ``bilm`` on sentences (boundaries added here) and return all its layers.

    Gradient mode is the caller's: wrap the call in ``torch.no_grad()`` for a frozen biLM.

    Args:
        bilm: the biLM; it runs in whatever train/eval mode it is in.
        inputs: (B, T, 50) character ids of sentences without boundaries, or B lists of tokens.
        keep_sentence_boundaries: return the ``<S>``/``</S>`` positions too.

    Returns:
        L + 1 tensors (B, T, 2P) (T + 2 with boundaries), zero at padded positions, and the (B, T) mask.
    """
    device = next(bilm.parameters()).device
    if isinstance(inputs, torch.Tensor):
        chars = add_sentence_boundaries(inputs.to(device))  # (B, T+2, C)
    else:
        chars = batch_to_char_ids(inputs, add_boundaries=True).to(device)  # (B, T+2, C)
    out = bilm(chars)
    if keep_sentence_boundaries:
        return out.activations, out.mask
    layers = [remove_sentence_boundaries(activation, out.mask)[0] for activation in out.activations]  # (B, T, 2P)
    mask = out.mask[:, 2:]  # (B, T): a left-aligned mask of n + 2 positions, minus the two boundaries
    return layers, mask


class Elmo(nn.Module):
    """N learned mixes of a biLM's layers, with dropout after each (PAPER.md, "ELMo for a downstream task").

    Args:
        bilm: the biLM (ours, or published files, loaded with ``models.source.BiLMSource``). When frozen,
            its parameters are set to ``requires_grad=False`` in place.
        num_output_representations: N, how many mixes (e.g. 2 for the task encoder's input and output).
        dropout: dropout on every mix, while training.
        requires_grad: fine-tune the biLM (default: frozen, no gradient, always in eval mode).
        keep_sentence_boundaries: keep ``<S>``/``</S>`` positions in the output (T + 2 positions).
        layer_norm: normalise each layer before mixing (one mean and variance over the unmasked elements).
        fixed_mix_weights: fixed, non-trainable mix weights ``w`` (one per layer, token layer first; gamma
            stays 1); default: trainable weights starting at 0.
        l2_coefficient: lambda of the L2 penalty on every mix's ``w`` (:meth:`penalty`; 0.001 in the paper).
    """

    def __init__(
        self,
        bilm: BiLM,
        num_output_representations: int = 1,
        dropout: float = 0.5,
        requires_grad: bool = False,
        keep_sentence_boundaries: bool = False,
        layer_norm: bool = False,
        fixed_mix_weights: list[float] | None = None,
        l2_coefficient: float = 0.0,
    ) -> None:
        super().__init__()
        if num_output_representations < 1:
            raise ValueError(f"Elmo: num_output_representations must be at least 1, got {num_output_representations}")
        self.bilm = bilm
        self.requires_grad = requires_grad
        self.keep_sentence_boundaries = keep_sentence_boundaries
        self.num_layers = bilm.config.num_layers + 1
        self.output_dim = bilm.config.output_dim
        self.mixes = ElmoMix(
            self.num_layers,
            names=[str(i) for i in range(num_output_representations)],
            dropout=dropout,
            layer_norm=layer_norm,
            fixed_weights=fixed_mix_weights,
            l2_coefficient=l2_coefficient,
        )
        if not requires_grad:
            bilm.requires_grad_(False)
            bilm.eval()

    def train(self, mode: bool = True) -> Elmo:
        """Switch train/eval mode; a frozen biLM stays in eval mode (no biLM dropout)."""
        super().train(mode)
        if not self.requires_grad:
            self.bilm.eval()
        return self

    def layers(self, inputs: torch.Tensor | Sentences) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The biLM's L + 1 layers (B, T, 2P) and the (B, T) mask, boundaries handled as configured.

        Args:
            inputs: (B, T, 50) character ids without boundaries, or B lists of tokens.
        """
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.requires_grad):
            return bilm_layers(self.bilm, inputs, self.keep_sentence_boundaries)

    def mix(self, layers: list[torch.Tensor], mask: torch.Tensor) -> ElmoOutput:
        """Mix already computed layers, e.g. read from an activation cache.

        Args:
            layers: L + 1 tensors (B, T, 2P).
            mask: (B, T) bool.

        Returns:
            ElmoOutput with N representations (B, T, 2P) and the mask.
        """
        if len(layers) != self.num_layers:
            raise ValueError(f"Elmo: got {len(layers)} layers but the biLM has {self.num_layers} (LSTM layers + 1)")
        return ElmoOutput(list(self.mixes(layers, mask).values()), mask)  # N x (B, T, 2P)

    def forward(self, inputs: torch.Tensor | Sentences) -> ElmoOutput:
        """Embed a batch.

        Shapes: B batch, T tokens (without boundaries unless kept), P projection.

        Args:
            inputs: (B, T, 50) character ids of sentences WITHOUT ``<S>``/``</S>`` (padding rows all zero,
                at the end), or B lists of tokens.

        Returns:
            ElmoOutput: N representations (B, T, 2P) and the (B, T) mask.
        """
        layers, mask = self.layers(inputs)
        return self.mix(layers, mask)

    def penalty(self) -> torch.Tensor:
        """Sum of every mix's L2 penalty on ``w``; add it to the task loss."""
        return self.mixes.penalty()
