"""What one finetuning epoch fewer would save and cost in a finished reproduction, and what reordering runs could save.

    .venv/bin/python benchmarks/reproduce_epochs.py results/cpu_1h runs/reproduce/cpu_1h

From the report (``results.json``: each run's fit time, epochs and wall time) and the runs' CSV logs
(dev score after every epoch): per task and arm, the mean over seeds of the best dev score with all
epochs and without the last one, and the run time one epoch represents over the preset's jobs. Then
the finetuning wall time of the runs in the report, simulated with their measured wall times on
``jobs`` slots, in the preset's order (the later seeds of +ELMo waiting for the seed-0 choice) and
longest first. Nothing is trained (docs/results.md).
"""

from __future__ import annotations

import heapq
import json
import statistics
import sys
from pathlib import Path

from elmo_pipeline.reproduce.plots import dev_curve


def dev_scores(run_dir: Path, key: str, epochs: int) -> list[float]:
    """A run's dev score (%) after each of its ``epochs`` training epochs (:func:`plots.dev_curve`)."""
    return [100 * float(v) for _, v in dev_curve(next(run_dir.glob("logs/**/metrics.csv")), key, epochs)]


def simulate(order: list[tuple], seconds: dict[tuple, float], jobs: int) -> float:
    """Minutes of wall time for ``order`` on ``jobs`` slots; a later-seed +ELMo run waits for its task's seed 0."""
    done: set[tuple] = set()
    running: list[tuple[float, tuple]] = []
    queue, now = list(order), 0.0

    def ready(key: tuple) -> bool:
        task, arm, seed = key
        return arm in ("baseline", "random_bilm") or seed == 0 or {(task, "elmo", 0), (task, "elmo_task", 0)} <= done

    while queue or running:
        while len(running) < jobs and any(ready(k) for k in queue):
            key = next(k for k in queue if ready(k))
            queue.remove(key)
            heapq.heappush(running, (now + seconds[key], key))
        now, key = heapq.heappop(running)
        done.add(key)
    return now / 60


def main(output: Path, work: Path, jobs: int = 2) -> None:
    report = json.loads((output / "results.json").read_text())
    runs = report["runs"]
    print(f"{output}: {len(runs)} runs on {report['machine']['cpu']}")
    print("| task | one epoch fewer saves | arm: best dev, all epochs -> without the last |")
    print("|---|---|---|")
    for task in dict.fromkeys(r["task"] for r in runs):
        mine = [r for r in runs if r["task"] == task]
        key = "val/f1" if "f1" in mine[0]["test"] else "val/acc"
        saved = sum(r["fit_seconds"] / r["epochs"] for r in mine) / jobs / 60
        cells = []
        for arm in dict.fromkeys(r["arm"] for r in mine):
            records = [r for r in mine if r["arm"] == arm]
            if len(records) < 2:
                continue  # the +ELMo arm not chosen: seed 0 only
            curves = [dev_scores(work / task / arm / f"seed{r['seed']}", key, r["epochs"]) for r in records]
            full = statistics.fmean(max(c) for c in curves)
            cut = statistics.fmean(max(c[:-1]) for c in curves)
            cells.append(f"{arm} {full:.2f} -> {cut:.2f}")
        print(f"| {task} | {saved:.1f} min | {'; '.join(cells)} |")
    seconds = {(r["task"], r["arm"], r["seed"]): r["wall_seconds"] for r in runs}
    arms = ("baseline", "random_bilm", "elmo", "elmo_task")
    tasks = list(dict.fromkeys(k[0] for k in seconds))
    order = sorted(seconds, key=lambda k: (tasks.index(k[0]), k[2], arms.index(k[1])))  # reproduce's plan()
    longest = sorted(seconds, key=lambda k: -seconds[k])
    print(f"sum of run times over {jobs} jobs: {sum(seconds.values()) / jobs / 60:.1f} min")
    print(f"simulated, the preset's order: {simulate(order, seconds, jobs):.1f} min")
    print(f"simulated, longest first: {simulate(longest, seconds, jobs):.1f} min")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
