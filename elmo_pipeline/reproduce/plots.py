"""The reproduction's pictures: what the mixes learned (the paper's Figure 2) and the learning curves."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

# imported with the module, not at the first report: a Ctrl-C that lands inside matplotlib's first
# import breaks it with an ImportError instead of a KeyboardInterrupt
import matplotlib.pyplot as plt

from elmo_pipeline.analysis.curves import read_metrics
from elmo_pipeline.reproduce.table import ARM_TITLES, choose_elmo

CURVE_LABELS = {**ARM_TITLES, "elmo_task": "+ELMo (task-tuned)"}  # the curves draw both +ELMo arms


def mix_groups(runs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The learned and initial mixes of the table's +ELMo runs, by task and place.

    Where a task ran both +ELMo arms, the one the table chose on dev (:func:`choose_elmo`) is drawn,
    over all its seeds; the label says when it is the task-tuned biLM.
    """
    groups: dict[str, list[dict[str, Any]]] = {}
    for task in dict.fromkeys(record["task"] for record in runs):
        for record in choose_elmo(runs, task)[0]:
            if record["arm"] != "elmo":
                continue
            tuned = ", tuned" if record.get("from_arm") == "elmo_task" else ""
            initial = record.get("initial_mix_weights") or {}
            for place, mix in (record.get("mix_weights") or {}).items():
                start = initial.get(place) or {
                    "softmax_w": [1.0 / len(mix["softmax_w"])] * len(mix["softmax_w"]),
                    "gamma": 1.0,
                }
                groups.setdefault(f"{task}\n({place}{tuned})", []).append({"end": mix, "start": start})
    return groups


def plot_layer_weights(runs: list[dict[str, Any]], path: Path) -> Path | None:
    """What each task's mix learned, against where it started (the paper's Figure 2, plus gamma).

    Left: softmax(w) per task and place, mean ± std over the +ELMo seeds, with each layer's initial
    value as a black tick. Right: gamma, learned (bar) and initial (tick). A mix that did not move
    sits on its ticks.
    """
    plt.switch_backend("Agg")
    groups = mix_groups(runs)
    if not groups:
        return None
    layers = max(len(g[0]["end"]["softmax_w"]) for g in groups.values())
    fig, (ax, ax_gamma) = plt.subplots(
        1, 2, figsize=(2.6 + 2.2 * len(groups), 3.4), gridspec_kw={"width_ratios": [3, 1.2]}
    )
    width = 0.8 / layers
    for j in range(layers):
        ends = [[m["end"]["softmax_w"][j] for m in mixes] for mixes in groups.values()]
        starts = [statistics.fmean(m["start"]["softmax_w"][j] for m in mixes) for mixes in groups.values()]
        means = [statistics.fmean(v) for v in ends]
        errs = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in ends]
        xs = [i + (j - (layers - 1) / 2) * width for i in range(len(groups))]
        ax.bar(xs, means, width, yerr=errs, capsize=2, label="token layer" if j == 0 else f"LSTM layer {j}")
        ax.scatter(xs, starts, marker="_", s=120, color="black", zorder=3, label="initial" if j == 0 else None)
    ax.set_xticks(range(len(groups)), list(groups), fontsize=7)
    ax.set_ylabel("softmax(w)")
    ax.set_title("Layer weights: learned (bars) vs initial (ticks)", fontsize=9)
    ax.legend(fontsize=7)
    gammas = [[m["end"]["gamma"] for m in mixes] for mixes in groups.values()]
    ax_gamma.bar(
        range(len(groups)),
        [statistics.fmean(g) for g in gammas],
        yerr=[statistics.stdev(g) if len(g) > 1 else 0.0 for g in gammas],
        capsize=2,
        color="tab:purple",
    )
    starts = [statistics.fmean(m["start"]["gamma"] for m in mixes) for mixes in groups.values()]
    ax_gamma.scatter(range(len(groups)), starts, marker="_", s=200, color="black", zorder=3)
    ax_gamma.set_xticks(range(len(groups)), list(groups), fontsize=6)
    ax_gamma.set_title("gamma", fontsize=9)
    fig.suptitle("What the ELMo mixes learned (+ELMo arm, mean ± std over seeds)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _curve(metrics_csv: Path, x: str, y: str) -> list[tuple[int, float]]:
    """(x, y) for every CSV-log row that has both, e.g. (epoch, val/f1) or (step, val/ppl)."""
    if not metrics_csv.is_file():
        return []
    return [(int(row[x]), row[y]) for row in read_metrics(metrics_csv) if x in row and y in row]


def dev_curve(metrics_csv: Path, key: str, epochs: int | None) -> list[tuple[int, float]]:
    """(epoch, dev score) after each training epoch of a finetuning run.

    A run validates its best checkpoint once more after the fit, and Lightning logs that row with the
    epoch counter already past the last epoch; it is not an epoch of training, so rows from epoch
    ``epochs`` on (the record's count of epochs trained) are left out.
    """
    points = _curve(metrics_csv, "epoch", key)
    return points if epochs is None else [(e, v) for e, v in points if e < epochs]


def plot_learning_curves(
    runs: list[dict[str, Any]], run_dirs: list[Path], tasks: list[str], path: Path, pretrain_dir: Path | None
) -> Path | None:
    """Dev score per epoch for every task, arm and seed (+ the biLM's dev perplexity per step)."""
    plt.switch_backend("Agg")
    colours = {"baseline": "tab:blue", "random_bilm": "tab:grey", "elmo": "tab:red", "elmo_task": "tab:orange"}
    pretrain_points: list[tuple[int, float]] = []
    if pretrain_dir is not None:
        for csv_path in (pretrain_dir / "logs").glob("fit*/metrics.csv"):  # fit, fit-2, ... (resumed)
            pretrain_points += _curve(csv_path, "step", "val/ppl")
        pretrain_points = sorted(set(pretrain_points))
    panels = len(tasks) + (1 if pretrain_points else 0)
    if panels == 0:
        return None
    fig, axes = plt.subplots(1, panels, figsize=(3.6 * panels, 3.0), squeeze=False)
    axes = axes[0]
    if pretrain_points:
        steps, ppl = zip(*pretrain_points, strict=True)
        axes[0].plot(steps, ppl, marker=".", color="black")
        axes[0].set(title="biLM pretraining", xlabel="step", ylabel="dev perplexity", yscale="log")
    for ax, task in zip(axes[1:] if pretrain_points else axes, tasks, strict=True):
        seen = set()
        for record, run_dir in zip(runs, run_dirs, strict=True):
            if record["task"] != task:
                continue
            key = "val/f1" if "f1" in (record.get("val") or record.get("test") or {}) else "val/acc"
            points = dev_curve(run_dir / "logs" / "metrics.csv", key, record.get("epochs"))
            if not points:
                continue
            epochs, values = zip(*points, strict=True)
            arm = record["arm"]
            ax.plot(
                [e + 1 for e in epochs],
                [100 * v for v in values],
                color=colours.get(arm, "black"),
                alpha=0.8,
                lw=1,
                label=None if arm in seen else CURVE_LABELS.get(arm, arm),
            )
            seen.add(arm)
        ax.set(title=task, xlabel="epoch", ylabel="dev score (%)")
        if seen:
            ax.legend(fontsize=7)
        else:  # no run of this task left a metrics.csv (a report rebuilt without the run folders)
            ax.text(0.5, 0.5, "no dev curves found", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
