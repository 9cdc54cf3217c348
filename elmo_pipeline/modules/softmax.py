"""The language-model softmax shared by both directions: full, and sampled for training.

Sampled softmax (Jean et al. 2015) draws S negatives per batch from the log-uniform (Zipfian)
distribution ``q(k) = log((k + 2) / (k + 1)) / log(V + 1)``, which fits a frequency-sorted
vocabulary, and corrects every candidate's logit, the target's included, by ``- log(S q(k))`` (its
expected count under sampling with replacement). Negatives that happen to be the target
("accidental hits") are removed. This is the convention of TensorFlow's ``sampled_softmax_loss``,
with which bilm-tf trained the published ELMo models. It is a training objective, not an estimate
of the full softmax's loss (the target's own correction shifts it), so perplexities are always
computed with the full softmax (:meth:`LMSoftmax.full_nll`).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class LMSoftmax(nn.Module):
    """Softmax over a V-word vocabulary from P-dimensional LSTM outputs.

    Args:
        input_dim: P.
        vocab_size: V.
        num_samples: negatives for the sampled loss (0: always the full softmax).
        chunk_size: rows of the full softmax computed at once (bounds the (N, V) logits' memory).
    """

    def __init__(self, input_dim: int, vocab_size: int, num_samples: int = 0, chunk_size: int = 2048) -> None:
        super().__init__()
        if vocab_size < 4:
            raise ValueError(f"softmax: vocab_size must be at least 4, got {vocab_size} (--model.bilm.vocab_size)")
        self.vocab_size, self.num_samples, self.chunk_size = vocab_size, min(num_samples, vocab_size), chunk_size
        self.weight = nn.Parameter(torch.empty(vocab_size, input_dim))
        self.bias = nn.Parameter(torch.zeros(vocab_size))
        nn.init.normal_(self.weight, std=input_dim**-0.5)

    def log_probs(self, h: torch.Tensor) -> torch.Tensor:
        """Args: h (..., P). Returns: (..., V) log-probabilities."""
        return torch.log_softmax(nn.functional.linear(h, self.weight, self.bias).float(), dim=-1)

    def full_nll(self, h: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Args: h (N, P), targets (N,). Returns: (N,) negative log-likelihoods."""
        out = []
        for start in range(0, h.shape[0], self.chunk_size):
            logits = nn.functional.linear(h[start : start + self.chunk_size], self.weight, self.bias)  # (n, V)
            out.append(
                nn.functional.cross_entropy(logits.float(), targets[start : start + self.chunk_size], reduction="none")
            )
        return torch.cat(out) if out else h.new_zeros(0)

    def log_q(self, ids: torch.Tensor) -> torch.Tensor:
        """log q(k) of the log-uniform sampler."""
        k = ids.double()
        return (torch.log1p(1.0 / (k + 1.0)) / math.log(self.vocab_size + 1.0)).log().float()

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """S ids drawn with replacement from q, by inverting its CDF ``(log(k + 1) / log(V + 1))``."""
        u = torch.rand(self.num_samples, generator=generator, dtype=torch.float64, device=self.weight.device)
        ids = torch.exp(u * math.log(self.vocab_size + 1.0)).floor().long() - 1
        return ids.clamp_(0, self.vocab_size - 1)  # (S,)

    def sampled_nll(self, h: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Args: h (N, P), targets (N,). Returns: (N,) sampled-softmax negative log-likelihoods."""
        samples = self.sample()  # (S,)
        log_expected = math.log(self.num_samples)
        true_logit = (h * self.weight[targets]).sum(-1) + self.bias[targets]  # (N,)
        true_logit = true_logit.float() - (self.log_q(targets) + log_expected)  # (N,)
        neg_logit = nn.functional.linear(h, self.weight[samples], self.bias[samples]).float()  # (N, S)
        neg_logit = neg_logit - (self.log_q(samples) + log_expected)  # (N, S)
        neg_logit = neg_logit.masked_fill(samples.unsqueeze(0) == targets.unsqueeze(1), float("-inf"))
        logits = torch.cat([true_logit.unsqueeze(1), neg_logit], dim=1)  # (N, 1 + S)
        return torch.logsumexp(logits, dim=1) - true_logit  # (N,)
