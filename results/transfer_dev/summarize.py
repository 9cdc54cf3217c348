"""The table of the dev experiments (run.sh): best dev score per task and variant, mean ± std over seeds.

.venv/bin/python results/transfer_dev/summarize.py    # -> results/transfer_dev/table.md
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).parent


def main() -> None:
    runs: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for path in sorted((HERE / "runs").glob("*/*/seed*.json")):
        runs[(path.parent.parent.name, path.parent.name)].append(json.loads(path.read_text()))
    lines = [
        "# Transfer options chosen on dev (`bash results/transfer_dev/run.sh`)",
        "",
        "Best dev score (%) of each run, mean ± sample std over seeds; test was not evaluated.",
        "",
        "| task | variant | seeds | best dev | epochs | stopped by | min per run | s per epoch | γ learned (per place) |",
        "|---|---|---:|---:|---:|---|---:|---:|---|",
    ]
    for (task, variant), records in sorted(runs.items()):
        scores = [100 * r["best_val"] for r in records]
        mean = statistics.fmean(scores)
        std = f" ± {statistics.stdev(scores):.2f}" if len(scores) > 1 else ""
        epochs = "/".join(str(r["epochs"]) for r in records)
        stopped = ", ".join(sorted({r.get("stopped_by", "?") for r in records}))
        minutes = statistics.fmean(r["fit_seconds"] for r in records) / 60
        per_epoch = statistics.fmean(r["fit_seconds"] / max(r["epochs"], 1) for r in records)
        gammas = "; ".join(
            f"{place} {statistics.fmean(r['mix_weights'][place]['gamma'] for r in records):.2f}"
            for place in (records[0].get("mix_weights") or {})
        )
        lines.append(
            f"| {task} | {variant} | {len(records)} | {mean:.2f}{std} | {epochs} | {stopped} | {minutes:.1f} | "
            f"{gammas or '—'} |"
        )
    (HERE / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
