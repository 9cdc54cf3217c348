"""The forward language model of a pretrained biLM, predicting over a decoder's target vocabulary (for fusion).

A translation decoder predicts over its own target words; the biLM's softmax covers the LM's
vocabulary. :class:`TargetLM` lines the two up: the LM's log-probabilities of the target words
(a target word outside the LM's vocabulary takes the LM's ``<UNK>`` score), renormalised over the
target vocabulary, so ``log p_LM`` is a distribution over the same words as ``log p_s2s``:

    p_LM(y_t = w | y_<t) = p(w) / sum_{w' in target} p(w'),   p from softmax(W h^fwd_L,t + b)

The LM reads characters, so its input is every target word as it is spelled; the token vectors of
the whole target vocabulary are computed once (the LM is frozen). It runs either over whole
prefixes (training, cold fusion) or one step at a time with its LSTM state carried (beam search);
the two agree, which a test checks. LSTMP biLMs only (every published ELMo and every preset).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from elmo_pipeline.models.bilm import BiLM
from elmo_pipeline.modules.lstm import LSTMPLayer, lstmp_scan
from elmo_pipeline.modules.softmax import AdaptiveLMSoftmax, LMSoftmax, at_least_fp32
from elmo_pipeline.text.chars import word_char_ids
from elmo_pipeline.text.vocab import Vocabulary

LMState = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: h (B, P), c (B, H)


def _lse(projection: nn.Linear, z: torch.Tensor, words: int = 4096) -> torch.Tensor:
    """``logsumexp(projection(z), -1)`` (N, 1) over ``words`` outputs at a time: never all of them at once."""
    parts = [
        torch.logsumexp(F.linear(z, projection.weight[i : i + words], projection.bias[i : i + words]), dim=-1)
        for i in range(0, projection.out_features, words)
    ]  # each (N,)
    return torch.logsumexp(torch.stack(parts, dim=-1), dim=-1, keepdim=True)  # (N, 1)


class TargetLM(nn.Module):
    """A frozen forward LM over a target vocabulary.

    Args:
        bilm: the biLM, with its softmax (an export folder's biLM; published files have no softmax).
        lm_vocab: the biLM's softmax vocabulary.
        target_words: the decoder's words, in id order.
    """

    def __init__(self, bilm: BiLM, lm_vocab: Vocabulary, target_words: list[str]) -> None:
        super().__init__()
        if bilm.softmax is None:
            raise ValueError(
                "fusion: this biLM has no softmax, so it cannot predict words; published options.json + weights.hdf5 "
                "carry none. Use an export folder, or continue pretraining with --model.init_from to add one"
            )
        if not all(type(layer) is LSTMPLayer for layer in bilm.forward_layers):
            raise ValueError(f"fusion: the LM must have lstmp cells, got {bilm.config.cell!r}")
        self.bilm = bilm.eval().requires_grad_(False)
        self.config = bilm.config
        self.register_buffer("lm_ids", torch.tensor(lm_vocab.ids(target_words)), persistent=False)  # (V,)
        # the target words of each cluster of an adaptive softmax (0: the head), as positions in the target list
        bounds = bilm.softmax.bounds if isinstance(bilm.softmax, AdaptiveLMSoftmax) else [bilm.softmax.vocab_size]
        cluster = torch.bucketize(self.lm_ids, torch.tensor(bounds[:-1]), right=True)  # (V,)
        for c in range(len(bounds)):
            self.register_buffer(f"_positions{c}", (cluster == c).nonzero().squeeze(1), persistent=False)
        with torch.no_grad():
            chars = torch.tensor([word_char_ids(w) for w in target_words])  # (V, C)
            table = bilm.token_encoder.encode(chars)  # (V, P)
        self.register_buffer("token_vectors", table, persistent=False)
        self.oov = sum(1 for w in target_words if w not in lm_vocab.index)
        self._digest()

    @property
    def _cluster_positions(self) -> list[torch.Tensor]:
        return [getattr(self, f"_positions{c}") for c in range(len(getattr(self.bilm.softmax, "bounds", [0])))]

    def fingerprint(self) -> str:
        """sha256 of what decides the LM's scores of the target words: its weights and where each word sits
        in its vocabulary (``translate`` checks that an LM given later is the one a model was trained with)."""
        return self._fingerprint

    def identity(self) -> dict[str, Any]:
        """What tells this LM from another, recorded in ``seq2seq.pt`` so that ``translate`` can say what differs.

        Returns:
            ``config`` (the biLM's config), ``weights`` (sha256 of its weights), ``target_ids`` (the id in
            its vocabulary of each target word, ``<UNK>``'s for a word outside it) and ``oov`` (how many those are).
        """
        return {
            "config": self.config.to_dict(),
            "weights": self._weights_sha256,
            "target_ids": self.lm_ids.tolist(),
            "oov": self.oov,
        }

    def _digest(self) -> None:
        """Hash the weights as loaded, before a trainer moves them or casts them to another precision."""
        digest = hashlib.sha256()
        for name, tensor in sorted(self.bilm.state_dict().items()):
            flat = tensor.detach().cpu().contiguous().reshape(-1)
            digest.update(f"{name}|{flat.dtype}|{tuple(tensor.shape)}|".encode())
            digest.update(flat.view(torch.uint8).numpy())  # the raw bytes, no copy
        self._weights_sha256 = digest.hexdigest()
        digest.update(self.lm_ids.cpu().numpy().astype("int64").tobytes())
        self._fingerprint = digest.hexdigest()

    def train(self, mode: bool = True) -> TargetLM:
        """The LM stays in eval mode (no dropout): it is frozen."""
        super().train(mode)
        self.bilm.eval()
        return self

    def _log_probs(self, top: torch.Tensor) -> torch.Tensor:
        """Args: top (..., P) top-layer states. Returns: (..., V) log-probabilities over the target words."""
        softmax = self.bilm.softmax
        if isinstance(softmax, LMSoftmax):  # the LM's normaliser cancels: only the target words' logits are needed
            scores = at_least_fp32(F.linear(top, softmax.weight[self.lm_ids], softmax.bias[self.lm_ids]))  # (..., V)
        else:
            scores = self._adaptive_scores(softmax, top)  # (..., V)
        return torch.log_softmax(scores, dim=-1)

    def _adaptive_scores(self, softmax: AdaptiveLMSoftmax, top: torch.Tensor) -> torch.Tensor:
        """The adaptive softmax's log-probabilities of the target words, up to one constant per row.

        ``log p(w) = head(w) - lse(head)`` for a head word and ``head(c) - lse(head) + tail_c(w) -
        lse(tail_c)`` for a word of tail cluster c. ``lse(head)`` is the same for every word of a row, so
        the renormalisation over the target words cancels it. Only the target words' logits are
        computed; each tail's normaliser ``lse(tail_c)`` still needs every word of the cluster, and is
        taken a slice of words at a time, so no (rows, LM vocabulary) matrix is ever made (it was 93%
        of the LM's time in cold fusion, 2026-12-03).
        """
        shape = top.shape[:-1]
        h = at_least_fp32(top.reshape(-1, top.shape[-1]))  # (N, P)
        with torch.autocast(h.device.type, enabled=False):
            head = softmax.head(h)  # (N, head)
            scores = h.new_empty(h.shape[0], self.lm_ids.numel())  # (N, V)
            in_head = self._cluster_positions[0]
            scores[:, in_head] = head[:, self.lm_ids[in_head]]
            for c, tail in enumerate(softmax.tails, start=1):
                positions = self._cluster_positions[c]
                if positions.numel() == 0:
                    continue
                down, up = tail[0], tail[1]  # P -> d, d -> the cluster's words
                z = down(h)  # (N, d)
                words = self.lm_ids[positions] - softmax.bounds[c - 1]  # (n,) rows of `up`
                picked = F.linear(z, up.weight[words], up.bias[words])  # (N, n)
                scores[:, positions] = head[:, softmax.bounds[0] + c - 1 : softmax.bounds[0] + c] + picked - _lse(up, z)
        return scores.reshape(*shape, -1)  # (..., V)

    @torch.no_grad()
    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Whole prefixes.

        Args:
            ids: (B, T) target ids of the decoder inputs ``<S> y_1 .. y_{T-1}``.

        Returns:
            (B, T, V): at position t, log p_LM of the next word given ids[:, :t+1].
        """
        x = self.token_vectors[ids]  # (B, T, P)
        for index, layer in enumerate(self.bilm.forward_layers):
            h = layer(x)  # (B, T, P), from a zero state
            x = h + x if self.config.residual(index) else h
        return self._log_probs(x)

    def initial_state(self, batch: int) -> LMState:
        """The zero state of every layer, for :meth:`step`."""
        P, H = self.config.projection_dim, self.config.cell_dim
        device = self.token_vectors.device
        return [
            (torch.zeros(batch, P, device=device), torch.zeros(batch, H, device=device))
            for _ in range(len(self.bilm.forward_layers))
        ]

    @torch.no_grad()
    def step(self, ids: torch.Tensor, state: LMState) -> tuple[torch.Tensor, LMState]:
        """One step: the next-word log-probabilities (B, V) after reading ids (B,), and the new state."""
        x = self.token_vectors[ids]  # (B, P)
        new_state: LMState = []
        for index, (layer, (h, c)) in enumerate(zip(self.bilm.forward_layers, state, strict=True)):
            B, H = c.shape
            gates = F.linear(x, layer.weight_ih, layer.bias).unsqueeze(0)  # (1, B, 4H)
            cells, hs = torch.stack([c, c]), torch.stack([h, h])  # (2, B, H), (2, B, P): slot 0 the state
            tanh_c, m = c.new_empty(1, B, H), c.new_empty(1, B, H)
            lstmp_scan(
                gates, cells, hs, tanh_c, m, layer.weight_hh.t(), layer.weight_hr.t(), layer.cell_clip, layer.proj_clip
            )
            h_new, c_new = hs[1], cells[1]  # (B, P), (B, H)
            new_state.append((h_new, c_new))
            x = h_new + x if self.config.residual(index) else h_new
        return self._log_probs(x), new_state

    @staticmethod
    def reorder(state: LMState, index: torch.Tensor) -> LMState:
        """The state of the rows ``index`` (beam search keeps and copies hypotheses)."""
        return [(h[index], c[index]) for h, c in state]


def target_perplexity(lm: TargetLM, batches: Iterable[dict[str, torch.Tensor]]) -> float:
    """``lm``'s perplexity on the targets of ``batches`` (``target_in`` = <S> y, ``target_out`` = y </S>, padding
    below 0), over the target vocabulary: ``</S>`` counts, padding does not. Rounded to 2 decimals."""
    device = next(lm.parameters()).device
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in batches:
            log_probs = lm(batch["target_in"].to(device))  # (B, T, V)
            targets = batch["target_out"].to(device)  # (B, T)
            valid = targets >= 0
            picked = log_probs.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # (B, T)
            total -= float(picked[valid].sum())
            count += int(valid.sum())
    return round(math.exp(total / max(count, 1)), 2)
