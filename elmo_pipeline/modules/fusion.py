"""Cold fusion (Sriram et al. 2017): a frozen language model's prediction gated into the decoder's output layer.

    h^LM_t = ReLU(W_lm l^LM_t + b)                  l^LM_t: the LM's log-probabilities over the target vocabulary
    g_t    = sigmoid(W_g [s_t; h^LM_t] + b_g)        a gate per feature
    s^CF_t = [s_t; g_t * h^LM_t]
    r_t    = ReLU(W_r s^CF_t + b_r)
    p(y_t) = softmax(W_o r_t + b_o)

``s_t`` is the decoder's output state (here its attentional state). The LM is not part of this
module: its log-probabilities come in as an input, computed without gradient, so training moves the
gate and the decoder only. Shallow fusion needs no module: beam search adds ``lambda * log p_LM``.
"""

from __future__ import annotations

import torch
from torch import nn


class ColdFusion(nn.Module):
    """The cold-fusion output layer.

    Args:
        state_dim: size of the decoder's output state s_t.
        vocab_size: V, the target vocabulary (the LM's log-probabilities are over the same words).
        lm_dim: size of the LM feature h^LM_t.
        hidden_dim: size of r_t.
    """

    def __init__(self, state_dim: int, vocab_size: int, lm_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.lm_feature = nn.Linear(vocab_size, lm_dim)
        self.gate = nn.Linear(state_dim + lm_dim, lm_dim)
        self.hidden = nn.Linear(state_dim + lm_dim, hidden_dim)
        self.output = nn.Linear(hidden_dim, vocab_size)

    def forward(self, state: torch.Tensor, lm_log_probs: torch.Tensor) -> torch.Tensor:
        """Args: state (..., D) and lm_log_probs (..., V). Returns: logits (..., V)."""
        lm = torch.relu(self.lm_feature(lm_log_probs))  # (..., lm_dim)
        gate = torch.sigmoid(self.gate(torch.cat([state, lm], dim=-1)))  # (..., lm_dim)
        fused = torch.cat([state, gate * lm], dim=-1)  # (..., D + lm_dim)
        return self.output(torch.relu(self.hidden(fused)))  # (..., V)
