"""The paired bootstrap test over test examples (Efron & Tibshirani 1993; in NLP, Koehn 2004).

Two systems A and B are scored on the same test examples. Each of ``samples`` rounds draws n
examples with replacement and scores both systems on that draw; the p-value is the share of rounds
in which A does not beat B:

    p = #{ rounds r : metric(A, draw_r) - metric(B, draw_r) <= 0 } / samples

A small p says that A's lead is not an accident of which examples the test set happens to hold
(this is Koehn's form; Berg-Kirkpatrick et al. 2012 count draws with a lead above twice the observed
one instead). It is one-sided: it asks whether A beats B. The two-sided p asks whether they differ,
in either direction; it doubles the smaller tail, so that it is below 0.05 just when the 95% percentile
interval of A - B leaves out 0:

    p_two_sided = min(1, 2 * min(#{r : delta_r <= 0}, #{r : delta_r >= 0}) / samples)

With ``samples`` draws, p = 0 means p < 1 / samples.
With several seeds per system, each system's score on a draw is its mean over seeds, so the test
asks about the mean of the runs the table reports.

The metric is computed from per-example statistics that add up: ``(correct, 1)`` for accuracy,
``(correct chunks, predicted chunks, gold chunks)`` per sentence for span F1.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Metric = Callable[[np.ndarray], np.ndarray]


def accuracy(totals: np.ndarray) -> np.ndarray:
    """Percent accuracy from summed ``(correct, count)`` statistics: (..., 2) -> (...)."""
    return 100.0 * totals[..., 0] / np.maximum(totals[..., 1], 1)


def span_f1(totals: np.ndarray) -> np.ndarray:
    """Percent F1 from summed ``(correct, predicted, gold)`` chunk counts: (..., 3) -> (...)."""
    correct, predicted, gold = totals[..., 0], totals[..., 1], totals[..., 2]
    return 100.0 * 2 * correct / np.maximum(predicted + gold, 1)


METRICS: dict[str, Metric] = {"accuracy": accuracy, "span_f1": span_f1}


def paired_bootstrap(
    a: np.ndarray, b: np.ndarray, metric: Metric | str, samples: int = 10_000, seed: int = 0
) -> dict[str, float]:
    """Paired bootstrap of system A against system B.

    Shapes: S seeds (runs) per system, N test examples, K statistics per example.

    Args:
        a: (S_a, N, K) or (N, K) per-example statistics of A's runs.
        b: (S_b, N, K) or (N, K) of B's runs, on the same N examples in the same order.
        metric: ``accuracy``, ``span_f1`` or a function from summed statistics (..., K) to scores (...).
        samples: bootstrap rounds.
        seed: seed of the draws.

    Returns:
        ``delta`` (A - B on the full test set, mean over seeds), ``p_value`` (share of rounds with
        A - B <= 0: one-sided), ``p_two_sided`` (twice the smaller tail), ``ci_low``/``ci_high`` (the 2.5%
        and 97.5% quantiles of A - B over the rounds).
    """
    score = METRICS[metric] if isinstance(metric, str) else metric
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    a = a[None] if a.ndim == 2 else a  # (S_a, N, K)
    b = b[None] if b.ndim == 2 else b  # (S_b, N, K)
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"bootstrap: the systems were scored on different examples: {a.shape[1:]} vs {b.shape[1:]}")
    n = a.shape[1]
    rng = np.random.default_rng(seed)
    deltas = np.empty(samples)
    for first in range(0, samples, 1000):  # 1000 rounds at a time bounds the memory
        rounds = min(1000, samples - first)
        counts = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(rounds)])  # (R, N)
        score_a = score(np.einsum("rn,snk->rsk", counts, a)).mean(axis=1)  # (R,)
        score_b = score(np.einsum("rn,snk->rsk", counts, b)).mean(axis=1)  # (R,)
        deltas[first : first + rounds] = score_a - score_b
    full = float(score(a.sum(axis=1)).mean() - score(b.sum(axis=1)).mean())
    return {
        "delta": full,
        "p_value": float((deltas <= 0).mean()),
        "p_two_sided": float(min(1.0, 2 * min((deltas <= 0).mean(), (deltas >= 0).mean()))),
        "ci_low": float(np.quantile(deltas, 0.025)),
        "ci_high": float(np.quantile(deltas, 0.975)),
        "samples": samples,
    }
