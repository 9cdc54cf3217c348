"""Significance of a row of the table: +ELMo against the baseline and against the random control.

Two tests per comparison (:func:`significance`): Welch's two-sided t-test over the training seeds
(``p_two_sided``, :mod:`elmo_pipeline.metrics.seeds`), which the table prints, and the one-sided
paired bootstrap over the test examples from the runs' prediction files (``p_one_sided_over_examples``,
:mod:`elmo_pipeline.metrics.bootstrap`), which ignores the seed variance and is kept in ``results.json``.
"""

from __future__ import annotations

import logging
import math
import statistics
from pathlib import Path
from typing import Any

from elmo_pipeline.data.predictions import example_statistics
from elmo_pipeline.metrics.bootstrap import paired_bootstrap
from elmo_pipeline.metrics.seeds import welch_t_test

log = logging.getLogger(__name__)


def significance(
    runs: list[dict[str, Any]],
    task: str,
    metric: str,
    scores: dict[str, list[float]],
    samples: int = 10_000,
) -> dict[str, Any]:
    """+ELMo against the baseline and against the random control: two tests per comparison.

    - ``p_two_sided``: Welch's t-test over the training seeds' test scores, two-sided
      (:mod:`elmo_pipeline.metrics.seeds`). The table and the goal use it. With one seed in an arm it
      cannot be computed, and is None.
    - ``p_one_sided_over_examples``: the paired bootstrap over the test examples
      (:mod:`elmo_pipeline.metrics.bootstrap`), one-sided (the share of ``draws`` in which +ELMo does not
      lead), the score of a draw being the arm's mean over its seeds; with its 95% interval
      ``ci_low``/``ci_high``. It ignores the seed-to-seed variance. Runs without a predictions file (older
      records) leave it out.
    """
    stats: dict[str, list[Any]] = {}
    for record in runs:
        path = record.get("predictions")
        if record["task"] != task or not path or not Path(path).is_file():
            continue
        stats.setdefault(record["arm"], []).append(example_statistics(path))
    out: dict[str, Any] = {}
    for other in ("baseline", "random_bilm"):
        if "elmo" not in scores or other not in scores:
            continue
        comparison: dict[str, Any] = {"delta": statistics.fmean(scores["elmo"]) - statistics.fmean(scores[other])}
        if len(scores["elmo"]) > 1 and len(scores[other]) > 1:
            welch = welch_t_test(scores["elmo"], scores[other])
            comparison.update({key: welch[key] for key in ("p_two_sided", "test", "t", "df")})
        else:
            comparison["p_two_sided"] = None  # one seed: no variance to test against
        if "elmo" in stats and other in stats:
            if len({s.shape for s in stats["elmo"] + stats[other]}) != 1:
                log.warning("reproduce: %s runs were tested on different examples; no bootstrap", task)
            else:
                boot = paired_bootstrap(stats["elmo"], stats[other], metric, samples=samples)
                comparison.update(
                    {
                        "p_one_sided_over_examples": boot["p_value"],
                        "ci_low": boot["ci_low"],
                        "ci_high": boot["ci_high"],
                        "draws": boot["samples"],
                    }
                )
        out[f"elmo_vs_{other}"] = comparison
    return out


def format_p(p: float | None, draws: int | None = None) -> str:
    """A p-value for the table: 3 decimals (2 significant figures below 0.001); a Monte-Carlo p from
    ``draws`` draws is never printed finer than 1 / draws (0 draws in favour prints ``< 1/draws``)."""
    if p is None or math.isnan(p):
        return "—"
    if draws:
        if p < 1.0 / draws:
            return f"< {1 / draws:.0e}"
        return f"{p:.{min(3, max(0, round(math.log10(draws))))}f}" if p >= 0.001 else f"{p:.0e}"
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"
