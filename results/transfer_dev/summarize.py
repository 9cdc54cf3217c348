"""The table of the dev experiments (run.sh): best dev score per task and variant, mean ± std over seeds.

.venv/bin/python results/transfer_dev/summarize.py
    # -> results/transfer_dev/table.md, curves.json (dev score per epoch of every run, read from the
    #    runs' metrics.csv under runs/transfer_dev/, which is not tracked) and docs/img/transfer_dev_curves.png
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path

from elmo_pipeline.analysis.curves import read_metrics

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
TITLES = {
    "ner_conll2003": "NER (dev span F1)",
    "sentiment_sst5": "SST-5 (dev accuracy)",
    "nli_snli": "SNLI 1% (dev accuracy)",
}


def collect_curves() -> dict[str, dict[str, dict[str, list[float]]]]:
    """task -> variant -> seed -> dev score (%) after each epoch; kept in curves.json, updated from runs/."""
    path = HERE / "curves.json"
    curves = json.loads(path.read_text()) if path.is_file() else {}
    for metrics in sorted((ROOT / "runs" / "transfer_dev").glob("*/*/seed*/logs/version_0/metrics.csv")):
        seed_dir = metrics.parents[2]
        task, variant, seed = seed_dir.parent.parent.name, seed_dir.parent.name, seed_dir.name
        record = HERE / "runs" / task / variant / f"{seed}.json"
        if not record.is_file():
            continue  # unfinished
        key = json.loads(record.read_text())["monitor"]  # val/f1 or val/acc
        values = [round(100 * row[key], 2) for row in read_metrics(metrics) if key in row]
        curves.setdefault(task, {}).setdefault(variant, {})[seed] = values
    lines = ["{"]
    for i, task in enumerate(sorted(curves)):  # one line per run, so that a diff shows which runs changed
        lines.append(f"  {json.dumps(task)}: {{")
        variants = sorted(curves[task])
        for j, variant in enumerate(variants):
            runs = ", ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in sorted(curves[task][variant].items()))
            lines.append(f"    {json.dumps(variant)}: {{{runs}}}" + ("," if j < len(variants) - 1 else ""))
        lines.append("  }" + ("," if i < len(curves) - 1 else ""))
    path.write_text("\n".join(lines + ["}"]) + "\n")
    return curves


def plot(curves: dict, path: Path) -> None:
    """One panel per task: the mean dev curve over seeds of each variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [t for t in TITLES if t in curves]
    if not tasks:
        return
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.0 * len(tasks), 3.8), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        for variant, seeds in sorted(curves[task].items()):
            length = min(len(v) for v in seeds.values())
            if not length:
                continue
            mean = [statistics.fmean(v[i] for v in seeds.values()) for i in range(length)]
            style = "--" if variant.startswith("baseline") else ":" if variant.startswith("random") else "-"
            ax.plot(range(1, length + 1), mean, style, marker=".", label=f"{variant} ({len(seeds)})")
        ax.set_title(TITLES[task])
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("dev score (%), mean over seeds")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    runs: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for path in sorted((HERE / "runs").glob("*/*/seed*.json")):
        runs[(path.parent.parent.name, path.parent.name)].append(json.loads(path.read_text()))
    lines = [
        "# Transfer options chosen on dev (`bash results/transfer_dev/run.sh`)",
        "",
        "Best dev score (%) of each run, mean ± sample std over seeds; test was not evaluated.",
        "",
        "| task | variant | seeds | best dev | epochs | stopped by | min per run | s per epoch "
        "| γ learned (per place) |",
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
            f"| {task} | {variant} | {len(records)} | {mean:.2f}{std} | {epochs} | {stopped} | {minutes:.1f} "
            f"| {per_epoch:.0f} | {gammas or '—'} |"
        )
    lines += ["", "Dev score per epoch: `curves.json`; picture: `docs/img/transfer_dev_curves.png`."]
    (HERE / "table.md").write_text("\n".join(lines) + "\n")
    plot(collect_curves(), ROOT / "docs" / "img" / "transfer_dev_curves.png")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
