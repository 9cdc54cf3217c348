"""The results of a reproduction: the paper's table with ours beside it, every run, and pictures.

``table.md`` follows Peters et al. (2018, Table 1): per task the paper's baseline and +ELMo, ours
(baseline, the random-biLM control and +ELMo, each mean ± sample std over seeds), and the increase
of +ELMo over the baseline, absolute and as relative error reduction::

    increase = elmo - baseline            relative error reduction = increase / (100 - baseline)

All scores are test scores of the checkpoint chosen on dev, in percent. ``results.json`` holds
every run; the table is computed from it (:func:`table_rows`), so the two always agree.

Each row also carries two tests of +ELMo against the baseline and against the random control
(:func:`significance`): Welch's two-sided t-test over the training seeds (``p_two_sided``,
:mod:`elmo_pipeline.metrics.seeds`), which the table prints, and the one-sided paired bootstrap over
the test examples from the runs' prediction files (``p_one_sided_over_examples``,
:mod:`elmo_pipeline.metrics.bootstrap`), which ignores the seed variance and is kept in ``results.json``.
The goal: +ELMo ahead of both by more than the larger of the two arms' seed std, with
``p_two_sided < 0.05``. The prediction
files are copied, gzipped, to ``<output_dir>/predictions/``, and ``results.json`` points there. A run that
stopped on its wall-clock safety net instead of converging is marked ``†``.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
from pathlib import Path
from typing import Any

# imported with the module, not at the first report: a Ctrl-C that lands inside matplotlib's first
# import breaks it with an ImportError instead of a KeyboardInterrupt
import matplotlib.pyplot as plt

from elmo_pipeline.analysis.curves import read_metrics
from elmo_pipeline.data.predictions import archive, example_statistics
from elmo_pipeline.files import write_json_atomic
from elmo_pipeline.machine import machine_info
from elmo_pipeline.metrics.bootstrap import paired_bootstrap
from elmo_pipeline.metrics.seeds import welch_t_test
from elmo_pipeline.reproduce.preset import Preset
from elmo_pipeline.reproduce.runner import Run
from elmo_pipeline.tasks import load_task

log = logging.getLogger(__name__)

ARM_TITLES = {"baseline": "baseline", "random_bilm": "random biLM", "elmo": "+ELMo"}
GOAL_P = 0.05  # the goal's significance level, for p_two_sided


def run_score(record: dict[str, Any]) -> float:
    """A run's test score in percent (span F1 or accuracy)."""
    test = record.get("test") or {}
    key = "f1" if "f1" in test else "acc"
    if key not in test:
        raise ValueError(
            f"reproduce: run {record.get('task')} {record.get('arm')} seed {record.get('seed')} has no test score"
        )
    return 100.0 * float(test[key])


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for one value)."""
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else None)


def _fmt(mean: float | None, std: float | None = None) -> str:
    if mean is None:
        return "—"
    return f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"


def table_rows(runs: list[dict[str, Any]], tasks: list[str]) -> list[dict[str, Any]]:
    """One row per task: the paper's numbers and ours (mean, std, n per arm) and the increases."""
    rows = []
    for task in tasks:
        spec = load_task(task)
        row: dict[str, Any] = {"task": task, "metric": spec.paper.get("metric", spec.metric), "paper": spec.paper}
        for arm in ARM_TITLES:
            scores = [run_score(r) for r in runs if r["task"] == task and r["arm"] == arm]
            if scores:
                mean, std = mean_std(scores)
                row[arm] = {"mean": mean, "std": std, "n": len(scores), "scores": scores}
        if "baseline" in row and "elmo" in row:
            base, elmo = row["baseline"]["mean"], row["elmo"]["mean"]
            row["increase"] = elmo - base
            row["relative_error_reduction"] = (elmo - base) / (100.0 - base) if base < 100 else None
        for arm in ARM_TITLES:
            if arm in row:
                row[arm]["time_limited"] = sum(
                    r.get("stopped_by") == "time_limit" for r in runs if r["task"] == task and r["arm"] == arm
                )
        scores = {arm: row[arm]["scores"] for arm in ARM_TITLES if arm in row}
        row["significance"] = significance(runs, task, "span_f1" if spec.metric == "span_f1" else "accuracy", scores)
        if "elmo" in row and "baseline" in row and "random_bilm" in row:
            goal = {}
            for other in ("baseline", "random_bilm"):
                lead = row["elmo"]["mean"] - row[other]["mean"]
                margin = max(row["elmo"]["std"] or 0.0, row[other]["std"] or 0.0)  # the larger of the two arms' std
                p = (row["significance"].get(f"elmo_vs_{other}") or {}).get("p_two_sided")
                met = lead > margin and p is not None and p < GOAL_P
                goal[other] = {"lead": lead, "margin": margin, "p_two_sided": p, "met": met}
            row["goal"] = {**goal, "met": all(g["met"] for g in goal.values())}
        paper = spec.paper
        if "baseline" in paper and "elmo" in paper:
            row["paper_increase"] = paper["elmo"] - paper["baseline"]
            row["paper_relative_error_reduction"] = (paper["elmo"] - paper["baseline"]) / (100.0 - paper["baseline"])
        rows.append(row)
    return rows


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


COLUMNS = [
    "Task",
    "Metric",
    "Paper baseline",
    "Paper +ELMo",
    "Paper increase (abs / rel.)",
    "Our baseline",
    "Our random biLM",
    "Our +ELMo",
    "Our increase (abs / rel.)",
    "p vs baseline",
    "p vs random",
]


def row_cells(row: dict[str, Any]) -> list[str]:
    """The table's cells for one row (also the W&B Table's)."""
    paper = row["paper"]

    def arm(name: str) -> str:
        cell = row.get(name)
        if not cell:
            return "—"
        return _fmt(cell["mean"], cell["std"]) + (" †" if cell.get("time_limited") else "")

    def p_value(name: str) -> str:
        test = (row.get("significance") or {}).get(f"elmo_vs_{name}") or {}
        return format_p(test.get("p_two_sided"))

    def increase(abs_: float | None, rel: float | None) -> str:
        if abs_ is None or rel is None:
            return "—"
        return f"{abs_:+.2f} / {100 * rel:+.1f}%"

    return [
        row["task"],
        row["metric"],
        _fmt(paper.get("baseline")),
        _fmt(paper.get("elmo"), paper.get("elmo_std")),
        increase(row.get("paper_increase"), row.get("paper_relative_error_reduction")),
        arm("baseline"),
        arm("random_bilm"),
        arm("elmo"),
        increase(row.get("increase"), row.get("relative_error_reduction")),
        p_value("baseline"),
        p_value("random_bilm"),
    ]


def markdown_table(
    rows: list[dict[str, Any]], preset: str, description: str, meaningful: bool, pretrain: dict[str, Any] | None
) -> str:
    seeds = sorted({row[arm]["n"] for row in rows for arm in ARM_TITLES if arm in row})
    lines = [f"# Results: `reproduce --preset {preset}`", ""]
    if description:
        lines += [description, ""]
    if not meaningful:
        lines += [
            "**These numbers are not meaningful**: this preset runs a tiny biLM and tiny task samples in minutes to "
            "show that every stage works end to end. See `docs/results.md` for the published run.",
            "",
        ]
    lines += [
        f"Test scores (%) of the checkpoint chosen on dev; ours are mean ± sample std over "
        f"{', '.join(map(str, seeds)) or 0} seed(s). Increase = +ELMo − baseline; relative = increase / "
        "(100 − baseline), the paper's relative error reduction. The random-biLM control is a frozen biLM of "
        "the same size with random weights, each layer rescaled to the pretrained biLM's RMS, mixed the same way. "
        "p: Welch's t-test of +ELMo's seeds against the other arm's, two-sided (results.json also holds the "
        "one-sided paired bootstrap over the test examples, which ignores seed variance). "
        "† a run stopped by its wall-clock safety net before converging.",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join(["---"] * 2 + ["---:"] * (len(COLUMNS) - 2)) + "|",
    ]
    lines += ["| " + " | ".join(row_cells(row)) + " |" for row in rows]
    goals = [row for row in rows if "goal" in row]
    if goals:
        lines += [
            "",
            "Goal: +ELMo ahead of both the baseline and the random control by more than the larger seed std, "
            f"with two-sided p < {GOAL_P}:",
        ]
        for row in goals:
            goal = row["goal"]
            parts = [
                f"{goal[o]['lead']:+.2f} over {ARM_TITLES[o]} (std {goal[o]['margin']:.2f}, "
                f"p {format_p(goal[o].get('p_two_sided'))})"
                for o in ("baseline", "random_bilm")
            ]
            lines.append(f"- {row['task']}: {'met' if goal['met'] else 'not met'}: {'; '.join(parts)}")
    if pretrain:
        test = pretrain.get("test") or {}
        parts = []
        if pretrain.get("global_step") is not None:
            parts.append(f"{pretrain['global_step']:,} steps")
        if pretrain.get("tokens_seen"):
            parts.append(f"{int(pretrain['tokens_seen']):,} tokens")
        if pretrain.get("best_val_ppl") is not None:
            parts.append(f"best dev perplexity {pretrain['best_val_ppl']:.1f}")
        if "ppl" in test:
            parts.append(f"test perplexity {test['ppl']:.1f}")
        if pretrain.get("fit_seconds") is not None:
            parts.append(f"{pretrain['fit_seconds'] / 60:.1f} min")
        lines += ["", f"biLM: `{pretrain.get('export')}`" + (f" ({', '.join(parts)})" if parts else "") + "."]
        if pretrain.get("kept"):
            lines.append(
                f"Its weights without the softmax: `{pretrain['kept']}` (`reproduce --bilm {pretrain['kept']}` "
                "rebuilds the table without pretraining)."
            )
    return "\n".join(lines) + "\n"


# ---- pictures --------------------------------------------------------------------------------------
def plot_layer_weights(runs: list[dict[str, Any]], path: Path) -> Path | None:
    """What each task's mix learned, against where it started (the paper's Figure 2, plus gamma).

    Left: softmax(w) per task and place, mean ± std over the +ELMo seeds, with each layer's initial
    value as a black tick. Right: gamma, learned (bar) and initial (tick). A mix that did not move
    sits on its ticks.
    """
    plt.switch_backend("Agg")
    groups: dict[str, list[dict[str, Any]]] = {}
    for record in runs:
        if record["arm"] != "elmo":
            continue
        initial = record.get("initial_mix_weights") or {}
        for place, mix in (record.get("mix_weights") or {}).items():
            start = initial.get(place) or {
                "softmax_w": [1.0 / len(mix["softmax_w"])] * len(mix["softmax_w"]),
                "gamma": 1.0,
            }
            groups.setdefault(f"{record['task']}\n({place})", []).append({"end": mix, "start": start})
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


def plot_learning_curves(
    runs: list[dict[str, Any]], run_dirs: list[Path], tasks: list[str], path: Path, pretrain_dir: Path | None
) -> Path | None:
    """Dev score per epoch for every task, arm and seed (+ the biLM's dev perplexity per step)."""
    plt.switch_backend("Agg")
    colours = {"baseline": "tab:blue", "random_bilm": "tab:grey", "elmo": "tab:red"}
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
            points = _curve(run_dir / "logs" / "metrics.csv", "epoch", key)
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
                label=None if arm in seen else ARM_TITLES.get(arm, arm),
            )
            seen.add(arm)
        ax.set(title=task, xlabel="epoch", ylabel="dev score (%)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ---- W&B -------------------------------------------------------------------------------------------
def log_table_to_wandb(
    wandb_settings: dict[str, Any], rows: list[dict[str, Any]], pictures: list[Path], summary: dict[str, Any]
) -> None:
    """The final table (a W&B Table) and the pictures, in one ``summary`` run of the reproduction's group."""
    import wandb

    from elmo_pipeline.systems.tracking import wandb_offline

    run = wandb.init(
        project=wandb_settings["project"],
        group=wandb_settings["group"],
        name=f"{wandb_settings['group']}-table",
        job_type="summary",
        dir=wandb_settings["save_dir"],
        mode="offline" if wandb_offline() else "online",
        config=summary,
        reinit="create_new",
    )
    try:
        table = wandb.Table(columns=COLUMNS, data=[row_cells(row) for row in rows])
        run.log({"results_table": table, **{f"pictures/{p.stem}": wandb.Image(str(p)) for p in pictures}})
        for row in rows:
            for arm in ARM_TITLES:
                if arm in row:
                    run.summary[f"{row['task']}/{arm}/mean"] = row[arm]["mean"]
    finally:
        run.finish()


def report_text(
    rows: list[dict[str, Any]], summary: dict[str, Any], pretrain: dict[str, Any] | None, pictures: list[Path]
) -> str:
    """``table.md``: the table, the goal, the biLM, the wall time and machine, and the pictures."""
    machine = summary["machine"]
    text = markdown_table(rows, summary["preset"], summary["description"], summary["meaningful"], pretrain)
    text += (
        f"\nWall time {summary['wall_seconds'] / 60:.1f} min on {machine.get('cpu', '?')} "
        f"({machine['cpus']} CPUs{', ' + machine['cuda'] if machine.get('cuda') else ''})"
        f"; {summary['runs_done']} of {summary['runs_planned']} finetuning runs. Every run: `results.json`. "
        f"W&B group `{summary['wandb_group']}`.\n"
    )
    if pictures:
        text += "\n" + "\n".join(f"![{p.stem}]({p.name})" for p in pictures) + "\n"
    return text


def refresh_report(output_dir: str | Path) -> dict[str, Any]:
    """Recompute the table and its tests from a finished reproduction's ``results.json`` and prediction files.

    Nothing is trained or tested again: the runs' records (their test scores) and the prediction files
    kept beside the table give the same means and stds, and the current tests (``p_two_sided``, the
    bootstrap) and goal rule. Rewrites ``results.json`` and ``table.md``; the pictures stay as they are.
    """
    out = Path(output_dir)
    path = out / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"reproduce: {path} not found; --refresh-report takes a reproduction's output folder")
    results = json.loads(path.read_text())
    records = []
    for record in results["runs"]:
        kept = out / "predictions" / Path(record.get("predictions") or "-").name
        if record.get("predictions") and not Path(record["predictions"]).is_file() and kept.is_file():
            record = {**record, "predictions": str(kept)}  # the folder was moved, or the command runs elsewhere
        records.append(record)
    tasks = [row["task"] for row in results["table"]]
    rows = table_rows(records, tasks)
    pictures = [out / name for name in ("layer_weights.png", "learning_curves.png") if (out / name).is_file()]
    text = report_text(rows, results, results.get("pretrain"), pictures)
    write_json_atomic(path, {**results, "table": rows})  # the records as they were stored
    (out / "table.md").write_text(text)
    return {"rows": rows, "text": text, "pictures": pictures}


def write_report(
    preset: Preset,
    state: dict[str, Any],
    pretrain_record: dict[str, Any] | None,
    runs: list[Run],
    results: dict[int, dict[str, Any]],
    wandb: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``results.json``, ``table.md`` and the pictures from the finished runs (all or some)."""
    out = Path(preset.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    done = sorted(results)
    records = []
    for i in done:
        record = dict(results[i])
        record["run_dir"] = str(runs[i].run_dir)
        predictions = record.get("predictions")
        if predictions and Path(predictions).is_file():  # kept with the table, so the bootstrap can be rerun
            kind = ".conll" if predictions.endswith(".conll") else ".txt"
            name = f"{record['task']}-{record['arm']}-seed{record['seed']}{kind}"
            record["predictions"] = str(archive(predictions, out / "predictions" / name))
        records.append(record)
    tasks = [t.name for t in preset.tasks if any(r["task"] == t.name for r in records)]
    rows = table_rows(records, tasks)
    pictures = [
        p
        for p in (
            plot_layer_weights(records, out / "layer_weights.png"),
            plot_learning_curves(
                records,
                [runs[i].run_dir for i in done],
                tasks,
                out / "learning_curves.png",
                Path(preset.work_dir) / "pretrain" if pretrain_record and preset.pretrain and not preset.bilm else None,
            ),
        )
        if p is not None
    ]
    summary = {
        "preset": preset.name,
        "description": preset.description,
        "meaningful": preset.meaningful,
        "data_root": preset.data_root,
        "seeds": preset.seeds,
        "arms": preset.arms,
        "wandb_group": state["group"],
        "wall_seconds": round(state["wall_seconds"], 1),
        "complete": len(done) == len(runs),
        "runs_done": len(done),
        "runs_planned": len(runs),
        "machine": machine_info(),
    }
    text = report_text(rows, summary, pretrain_record, pictures)
    write_json_atomic(out / "results.json", {**summary, "pretrain": pretrain_record, "table": rows, "runs": records})
    (out / "table.md").write_text(text)
    logged = "|".join(sorted(runs[i].fingerprint for i in done))
    if wandb and len(done) == len(runs) and state.get("table_logged") != logged:
        try:
            log_table_to_wandb(wandb, rows, pictures, summary)
            state["table_logged"] = logged  # a re-run with nothing new does not log the table again
        except Exception as error:  # tracking must not lose a finished reproduction
            log.warning("reproduce: could not log the table to W&B: %s", error)
    return {"rows": rows, "text": text, "pictures": pictures}
