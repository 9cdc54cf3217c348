"""A linear-chain conditional random field with transition constraints (Lafferty et al. 2001).

    score(x, y) = start[y_1] + sum_t emit[t, y_t] + sum_{t>1} trans[y_{t-1}, y_t] + end[y_n]
    p(y | x)    = exp(score(x, y)) / Z(x),    log Z(x) by the forward algorithm (logsumexp over tags)

Constraints (e.g. BIOUL's: ``I-PER`` only after ``B-PER`` or ``I-PER``) add a large negative
penalty to forbidden transitions, in training (the model is a distribution over allowed
sequences) and in Viterbi decoding (which therefore never outputs a forbidden transition while an
allowed sequence exists; with BIOUL one always does: all ``O``).
"""

from __future__ import annotations

import torch
from torch import nn

FORBIDDEN = -10000.0  # finite, so that a forbidden gold path gives a large loss rather than inf/nan


def _split(tag: str) -> tuple[str, str]:
    return ("O", "") if tag == "O" else (tag[0], tag[2:])


def bioul_allowed_transitions(tags: list[str]) -> list[tuple[int, int]]:
    """Allowed ``(from, to)`` pairs over ``tags`` plus START (index K) and END (index K + 1).

    BIOUL: after O, L-x or U-x (and at the start) comes O, B-y or U-y; after B-x or I-x comes I-x
    or L-x; a sentence ends after O, L-x or U-x.
    """
    K = len(tags)
    for tag in tags:
        if tag != "O" and (tag[:2] not in ("B-", "I-", "L-", "U-") or not tag[2:]):
            raise ValueError(f"crf: {tag!r} is not a BIOUL tag (O, B-x, I-x, L-x, U-x)")
    names = {K: "START", K + 1: "END"}
    allowed = []
    for i in range(K + 2):
        for j in range(K + 2):
            source, target = names.get(i) or tags[i], names.get(j) or tags[j]
            if target == "START" or source == "END" or (source == "START" and target == "END"):
                continue
            sp, st = _split(source) if i < K else (source, "")
            tp, tt = _split(target) if j < K else (target, "")
            if sp in ("START", "O", "L", "U"):
                ok = tp in ("O", "B", "U", "END")
            else:  # B or I: the entity goes on
                ok = tp in ("I", "L") and tt == st
            if ok:
                allowed.append((i, j))
    return allowed


class ConditionalRandomField(nn.Module):
    """Linear-chain CRF over K tags with learned transition, start and end scores.

    Args:
        num_tags: K.
        allowed_transitions: allowed ``(from, to)`` pairs, START = K and END = K + 1 (e.g.
            :func:`bioul_allowed_transitions`); None: every transition is allowed.
    """

    def __init__(self, num_tags: int, allowed_transitions: list[tuple[int, int]] | None = None) -> None:
        super().__init__()
        K = num_tags
        self.num_tags = K
        self.transitions = nn.Parameter(torch.empty(K, K))  # (K, K) from -> to
        self.start_transitions = nn.Parameter(torch.zeros(K))  # (K,)
        self.end_transitions = nn.Parameter(torch.zeros(K))  # (K,)
        nn.init.xavier_normal_(self.transitions)
        allowed = torch.ones(K + 2, K + 2, dtype=torch.bool)  # (K+2, K+2)
        if allowed_transitions is not None:
            allowed.zero_()
            for i, j in allowed_transitions:
                allowed[i, j] = True
        self.register_buffer("allowed", allowed, persistent=False)

    def potentials(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Transition (K, K), start (K,) and end (K,) scores with the constraints' penalties applied."""
        K = self.num_tags
        penalty = torch.full((), FORBIDDEN, device=self.transitions.device)
        transitions = torch.where(self.allowed[:K, :K], self.transitions, penalty)  # (K, K)
        start = torch.where(self.allowed[K, :K], self.start_transitions, penalty)  # (K,)
        end = torch.where(self.allowed[:K, K + 1], self.end_transitions, penalty)  # (K,)
        return transitions, start, end

    @staticmethod
    def _check(emissions: torch.Tensor, mask: torch.Tensor) -> None:
        if emissions.dim() != 3 or mask.shape != emissions.shape[:2]:
            raise ValueError(
                f"crf: emissions (B, T, K) and mask (B, T), got {tuple(emissions.shape)}, {tuple(mask.shape)}"
            )
        if mask.shape[1] == 0 or not bool(mask[:, 0].all()):
            raise ValueError("crf: every sequence needs at least one token, left-aligned (mask[:, 0] all True)")

    def log_partition(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """log Z(x) by the forward algorithm.

        Args:
            emissions: (B, T, K) tag scores.
            mask: (B, T) bool, left-aligned.

        Returns:
            (B,) log-partition.
        """
        self._check(emissions, mask)
        transitions, start, end = self.potentials()
        alpha = start + emissions[:, 0]  # (B, K)
        for t in range(1, emissions.shape[1]):
            # alpha_t[j] = logsumexp_i(alpha_{t-1}[i] + trans[i, j]) + emit[t, j]
            step = torch.logsumexp(alpha.unsqueeze(2) + transitions.unsqueeze(0), dim=1) + emissions[:, t]  # (B, K)
            alpha = torch.where(mask[:, t].unsqueeze(1), step, alpha)  # (B, K)
        return torch.logsumexp(alpha + end, dim=1)  # (B,)

    def score(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """score(x, y) of the tag sequences ``tags`` (B, T); padded positions are ignored. Returns (B,)."""
        self._check(emissions, mask)
        transitions, start, end = self.potentials()
        tags = tags.masked_fill(~mask, 0)  # (B, T)
        emitted = emissions.gather(2, tags.unsqueeze(2)).squeeze(2)  # (B, T)
        total = start[tags[:, 0]] + (emitted * mask).sum(dim=1)  # (B,)
        moves = transitions[tags[:, :-1], tags[:, 1:]]  # (B, T-1)
        total = total + (moves * mask[:, 1:]).sum(dim=1)  # (B,)
        last = tags.gather(1, (mask.sum(dim=1, keepdim=True) - 1)).squeeze(1)  # (B,)
        return total + end[last]  # (B,)

    def forward(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """log p(tags | x) per sequence, (B,); the training loss is its negative mean."""
        return self.score(emissions, tags, mask) - self.log_partition(emissions, mask)  # (B,)

    @torch.no_grad()
    def viterbi(self, emissions: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The highest-scoring tag sequences.

        Args:
            emissions: (B, T, K).
            mask: (B, T) bool, left-aligned.

        Returns:
            (B, T) best tags (0 at padded positions) and their (B,) scores.
        """
        self._check(emissions, mask)
        transitions, start, end = self.potentials()
        B, T, K = emissions.shape
        best = start + emissions[:, 0]  # (B, K)
        identity = torch.arange(K, device=emissions.device).expand(B, K)  # (B, K)
        pointers = []
        for t in range(1, T):
            candidates = best.unsqueeze(2) + transitions.unsqueeze(0)  # (B, K from, K to)
            top, arg = candidates.max(dim=1)  # (B, K)
            keep = mask[:, t].unsqueeze(1)  # (B, 1)
            best = torch.where(keep, top + emissions[:, t], best)  # (B, K)
            pointers.append(torch.where(keep, arg, identity))  # padding: stay on the same tag
        scores, last = (best + end).max(dim=1)  # (B,), (B,)
        path = [last]
        for pointer in reversed(pointers):
            path.append(pointer.gather(1, path[-1].unsqueeze(1)).squeeze(1))  # (B,)
        tags = torch.stack(path[::-1], dim=1)  # (B, T)
        return tags.masked_fill(~mask, 0), scores
