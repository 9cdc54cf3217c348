"""sacrebleu's corpus BLEU from per-sentence statistics that add up, for the paired bootstrap.

Corpus BLEU is a function of ten sums over the sentences: the matched and the total n-grams of each
order 1-4, the hypotheses' length and the references' length. Each sentence's ten are taken with
sacrebleu itself (``BLEU()``: 13a tokenisation, case kept, exp smoothing, the settings of the
``seq2seq`` signature), and a sum of them is scored by sacrebleu's own ``compute_bleu``. So a bootstrap
draw's score is sacrebleu's corpus BLEU of the drawn sentences (``tests/test_bleu_bootstrap.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sacrebleu.metrics import BLEU

ORDERS = 4  # sacrebleu's MAX_NGRAM_ORDER


def sentence_statistics(hypotheses: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """Per-sentence BLEU statistics.

    Args:
        hypotheses: N detokenised output lines.
        references: the N reference lines, in the same order (one reference each).

    Returns:
        (N, 10): matched n-grams of orders 1-4, total n-grams of orders 1-4, hypothesis length,
        reference length.
    """
    if len(hypotheses) != len(references):
        raise ValueError(f"BLEU: {len(hypotheses)} hypotheses against {len(references)} references")
    metric = BLEU()
    rows = []
    for hypothesis, reference in zip(hypotheses, references, strict=True):
        score = metric.corpus_score([hypothesis], [[reference]])  # one sentence: its statistics, no warning
        rows.append([*score.counts, *score.totals, score.sys_len, score.ref_len])
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), 2 * ORDERS + 2)


def bleu(totals: np.ndarray) -> np.ndarray:
    """sacrebleu's corpus BLEU (exp smoothing) of summed statistics: (..., 10) -> (...)."""
    totals = np.asarray(totals)
    flat = np.rint(totals.reshape(-1, totals.shape[-1])).astype(np.int64)  # sums of counts: whole numbers
    scores = [
        BLEU.compute_bleu(
            row[:ORDERS].tolist(), row[ORDERS : 2 * ORDERS].tolist(), int(row[-2]), int(row[-1]), smooth_method="exp"
        ).score
        for row in flat
    ]
    return np.asarray(scores, dtype=np.float64).reshape(totals.shape[:-1])
