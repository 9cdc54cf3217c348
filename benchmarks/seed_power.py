"""Would more seeds meet the table's goal? A power estimate from a results folder's own scores.

    .venv/bin/python benchmarks/seed_power.py results/cpu_1h [--seeds 3,5,10,20,40] [--trials 4000]

The goal of `reproduce` (docs/results.md): +ELMo leads the baseline and the random-biLM control by
more than the larger of the two arms' seed stds, with Welch's two-sided p < 0.05 over the seeds. For
each comparison this takes each arm's observed mean and sample std as the truth, draws N seeds per
arm from normal distributions with those parameters, and counts how often the goal is met, for
several N. It also counts each half of the goal on its own. The lead's half does not get easier with
more seeds: the sample std does not shrink with N, so a true lead below the seed std fails it at any N.

This is a planning estimate, not a result: three seeds give rough means and stds, and the scores
need not be normal. The draws use a fixed seed, so the output is reproducible.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np

from elmo_pipeline.metrics.seeds import welch_t_test


def goal_rates(elmo: tuple[float, float], other: tuple[float, float], n: int, trials: int, rng) -> dict[str, float]:
    """How often N seeds per arm meet the goal, the lead half and the p half, over ``trials`` draws.

    Args:
        elmo: the +ELMo arm's (mean, std), taken as the truth.
        other: the other arm's (mean, std).
        n: seeds per arm.
        trials: simulated experiments.
        rng: a numpy Generator.

    Returns:
        ``goal``, ``lead`` and ``p`` rates in [0, 1].
    """
    lead_met = p_met = both = 0
    for _ in range(trials):
        a = rng.normal(elmo[0], elmo[1], n).tolist()
        b = rng.normal(other[0], other[1], n).tolist()
        lead = statistics.fmean(a) - statistics.fmean(b)
        bar = max(statistics.stdev(a), statistics.stdev(b))
        lead_ok = lead > bar
        p_ok = lead > 0 and welch_t_test(a, b)["p_two_sided"] < 0.05
        lead_met += lead_ok
        p_met += p_ok
        both += lead_ok and p_ok
    return {"goal": both / trials, "lead": lead_met / trials, "p": p_met / trials}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, help="a reproduce results folder (its results.json)")
    parser.add_argument("--seeds", default="3,5,10,20,40", help="seeds per arm to try, comma-separated")
    parser.add_argument("--trials", type=int, default=4000)
    args = parser.parse_args()
    table = json.loads((args.results / "results.json").read_text())["table"]
    counts = [int(n) for n in args.seeds.split(",")]
    rng = np.random.default_rng(0)
    print(f"# {args.results}: each arm's observed mean and sample std taken as the truth, {args.trials} draws per cell")
    header = " | ".join(f"{n} seeds: goal (lead, p)" for n in counts)
    print(f"| task | comparison | observed lead | larger std | {header} |")
    print("|---|---|---:|---:|" + "---|" * len(counts))
    for row in table:
        scores = {arm: row[arm]["scores"] for arm in ("baseline", "random_bilm", "elmo")}
        fit = {arm: (statistics.fmean(s), statistics.stdev(s)) for arm, s in scores.items()}
        for other, label in (("baseline", "vs baseline"), ("random_bilm", "vs control")):
            lead = fit["elmo"][0] - fit[other][0]
            bar = max(fit["elmo"][1], fit[other][1])
            cells = []
            for n in counts:
                r = goal_rates(fit["elmo"], fit[other], n, args.trials, rng)
                cells.append(f"{r['goal']:.2f} ({r['lead']:.2f}, {r['p']:.2f})")
            print(f"| {row['task']} | {label} | {lead:+.2f} | {bar:.2f} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
