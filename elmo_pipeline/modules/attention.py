"""Additive attention (Bahdanau, Cho and Bengio 2015), with a mask over padded source positions.

    e_ts   = v^T tanh(W_k k_s + W_q q_t)          one score per source position s
    a_t    = softmax over unmasked s of e_ts       padding gets exactly 0
    c_t    = sum_s a_ts k_s                         the context vector

The keys are projected once per source sentence (:meth:`AdditiveAttention.project_keys`) and reused at
every decoder step.
"""

from __future__ import annotations

import torch
from torch import nn


class AdditiveAttention(nn.Module):
    """Bahdanau's additive attention.

    Args:
        query_dim: size of the decoder state q_t.
        key_dim: size of an encoder output k_s.
        attention_dim: size of the hidden layer of the score.
    """

    def __init__(self, query_dim: int, key_dim: int, attention_dim: int) -> None:
        super().__init__()
        self.key_projection = nn.Linear(key_dim, attention_dim, bias=False)
        self.query_projection = nn.Linear(query_dim, attention_dim)
        self.v = nn.Linear(attention_dim, 1, bias=False)

    def project_keys(self, keys: torch.Tensor) -> torch.Tensor:
        """Args: keys (B, S, K). Returns: W_k keys (B, S, A)."""
        return self.key_projection(keys)

    def forward(
        self, query: torch.Tensor, keys: torch.Tensor, projected_keys: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One decoder step.

        Shapes: B batch, S source positions, K key size, A attention size, Q query size.

        Args:
            query: (B, Q) the decoder state.
            keys: (B, S, K) encoder outputs.
            projected_keys: (B, S, A) from :meth:`project_keys`.
            mask: (B, S) bool, True at real source tokens; every row needs at least one.

        Returns:
            The context (B, K) and the weights (B, S), zero at padded positions, summing to 1.
        """
        scores = self.v(torch.tanh(projected_keys + self.query_projection(query).unsqueeze(1))).squeeze(-1)  # (B, S)
        scores = scores.masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=-1)  # (B, S)
        context = torch.bmm(weights.unsqueeze(1), keys).squeeze(1)  # (B, K)
        return context, weights
