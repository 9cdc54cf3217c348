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

# bytes of the float32 (rows, V) logits block that the full softmax computes at once: 256 MiB is 84 rows
# of the Original biLM's 793,471 words (a fixed 2,048 rows was 6.5 GB there), 3,355 rows of a 20,000-word one
DEFAULT_LOGITS_BUDGET_BYTES = 256 * 2**20


class LMSoftmax(nn.Module):
    """Softmax over a V-word vocabulary from P-dimensional LSTM outputs.

    Args:
        input_dim: P.
        vocab_size: V.
        num_samples: negatives for the sampled loss (0: always the full softmax).
        logits_budget_bytes: memory of the float32 (rows, V) logits block of the full softmax; the rows
            computed at once are ``max(1, logits_budget_bytes // (4 V))`` (:attr:`chunk_rows`).
    """

    def __init__(
        self,
        input_dim: int,
        vocab_size: int,
        num_samples: int = 0,
        logits_budget_bytes: int = DEFAULT_LOGITS_BUDGET_BYTES,
    ) -> None:
        super().__init__()
        if vocab_size < 4:
            raise ValueError(f"softmax: vocab_size must be at least 4, got {vocab_size} (--model.bilm.vocab_size)")
        self.vocab_size, self.num_samples = vocab_size, min(num_samples, vocab_size)
        self.logits_budget_bytes = logits_budget_bytes
        self.weight = nn.Parameter(torch.empty(vocab_size, input_dim))
        self.bias = nn.Parameter(torch.zeros(vocab_size))
        nn.init.normal_(self.weight, std=input_dim**-0.5)

    def log_probs(self, h: torch.Tensor) -> torch.Tensor:
        """Args: h (..., P). Returns: (..., V) log-probabilities."""
        return torch.log_softmax(at_least_fp32(nn.functional.linear(h, self.weight, self.bias)), dim=-1)

    @property
    def chunk_rows(self) -> int:
        """Rows of the full softmax computed at once, so that their float32 (rows, V) logits fit the budget."""
        return max(1, self.logits_budget_bytes // (4 * self.vocab_size))

    def full_nll(self, h: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Args: h (N, P), targets (N,). Returns: (N,) negative log-likelihoods."""
        out, rows = [], self.chunk_rows
        for start in range(0, h.shape[0], rows):
            logits = nn.functional.linear(h[start : start + rows], self.weight, self.bias)  # (n, V)
            out.append(
                nn.functional.cross_entropy(at_least_fp32(logits), targets[start : start + rows], reduction="none")
            )
        return torch.cat(out) if out else h.new_zeros(0)  # (N,)

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


def at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """Log-probabilities in float32 under autocast (bf16 logits), and float64 stays float64."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


class AdaptiveLMSoftmax(nn.Module):
    """Adaptive softmax (Grave et al. 2017, "Efficient softmax approximation for GPUs").

    The frequency-sorted vocabulary is cut into a head (the ``cutoffs[0]`` most frequent words) and
    tail clusters ``[cutoffs[i-1], cutoffs[i])``, the last ending at V. The head softmax scores the
    head words and one entry per cluster; a word in cluster i has

        log p(w | h) = log p_head(cluster i | h) + log p_i(w | h),   p_i = softmax(U_i (V_i h))

    where ``V_i`` projects h down to ``P / div_value**i`` dimensions first, so rare words cost
    little. It is an exact, normalised distribution over the whole vocabulary (the probabilities of
    all V words sum to 1), so training, validation and test all use it; a word in the head costs
    one (cutoffs[0] + clusters)-wide matrix multiply, a word in a tail one more small one.
    Log-probabilities are computed in float32 whatever the autocast dtype.

    Args:
        input_dim: P.
        vocab_size: V.
        cutoffs: increasing word ids where each tail cluster starts (all below V - 1).
        div_value: each cluster's projection is this many times narrower than the previous one's.
    """

    def __init__(self, input_dim: int, vocab_size: int, cutoffs: list[int], div_value: float = 4.0) -> None:
        super().__init__()
        cutoffs = list(cutoffs)
        if not cutoffs or cutoffs != sorted(set(cutoffs)) or cutoffs[0] < 1 or cutoffs[-1] >= vocab_size - 1:
            raise ValueError(
                "adaptive softmax: cutoffs must be increasing word ids between 1 and vocab_size - 2 = "
                f"{vocab_size - 2}, got {cutoffs} (--model.bilm.adaptive_cutoffs)"
            )
        self.vocab_size, self.num_samples = vocab_size, 0
        self.bounds = [*cutoffs, vocab_size]  # cluster i covers [bounds[i-1], bounds[i])
        self.head_size = cutoffs[0] + len(cutoffs)
        self.head = nn.Linear(input_dim, self.head_size)
        self.tails = nn.ModuleList()
        for i in range(len(cutoffs)):
            dim = max(1, int(input_dim // div_value ** (i + 1)))
            size = self.bounds[i + 1] - self.bounds[i]
            self.tails.append(nn.Sequential(nn.Linear(input_dim, dim, bias=False), nn.Linear(dim, size)))

    def full_nll(self, h: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Args: h (N, P), targets (N,). Returns: (N,) exact negative log-likelihoods."""
        cluster = torch.bucketize(targets, targets.new_tensor(self.bounds[:-1]), right=True)  # (N,), 0 = head
        head_target = torch.where(cluster == 0, targets, self.bounds[0] + cluster - 1)  # (N,): word or its cluster
        # -log p_head(head_target); cross_entropy is log_softmax and the pick in one kernel (faster on CPU)
        nll = nn.functional.cross_entropy(at_least_fp32(self.head(h)), head_target, reduction="none")  # (N,)
        for i, tail in enumerate(self.tails):
            rows = (cluster == i + 1).nonzero().squeeze(1)  # (n,)
            if rows.numel() == 0:
                continue
            logits = self._tail_logits(tail, h[rows])  # (n, size)
            tail_nll = nn.functional.cross_entropy(logits, targets[rows] - self.bounds[i], reduction="none")  # (n,)
            nll = nll.index_add(0, rows, tail_nll)
        return nll

    @staticmethod
    def _tail_logits(tail: nn.Sequential, h: torch.Tensor) -> torch.Tensor:
        """A tail cluster's logits (..., size), in at least float32, even under autocast.

        Its projection is narrow (P / div_value**i: 64 and 32 wide in the one-hour recipe), so the
        bf16 matrix units gain nothing on it, while bf16 logits of a wide cluster (40,000 words)
        would cost a cast of the whole (n, size) matrix each way.
        """
        with torch.autocast(h.device.type, enabled=False):
            return tail(at_least_fp32(h))

    def log_probs(self, h: torch.Tensor) -> torch.Tensor:
        """Args: h (..., P). Returns: (..., V) log-probabilities (sum of exp = 1)."""
        head_lp = torch.log_softmax(at_least_fp32(self.head(h)), dim=-1)  # (..., head)
        parts = [head_lp[..., : self.bounds[0]]]
        for i, tail in enumerate(self.tails):
            cluster_lp = head_lp[..., self.bounds[0] + i : self.bounds[0] + i + 1]  # (..., 1)
            parts.append(cluster_lp + torch.log_softmax(self._tail_logits(tail, h), dim=-1))  # (..., size)
        return torch.cat(parts, dim=-1)  # (..., V)
