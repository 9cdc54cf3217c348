"""The results table: the paper's Table 1 with ours beside it, computed from the runs' records.

``table.md`` follows Peters et al. (2018, Table 1): per task the paper's baseline and +ELMo, ours
(baseline, the random-biLM control and +ELMo, each mean ± sample std over seeds), and the increase
of +ELMo over the baseline, absolute and as relative error reduction::

    increase = elmo - baseline            relative error reduction = increase / (100 - baseline)

All scores are test scores of the checkpoint chosen on dev, in percent. ``results.json`` holds
every run; the table is computed from it (:func:`table_rows`), so the two always agree. The goal:
+ELMo ahead of both the baseline and the random control by more than the larger of the two arms'
seed std, with ``p_two_sided < 0.05`` (:mod:`elmo_pipeline.reproduce.significance`). A run that
stopped on its wall-clock safety net instead of converging is marked ``†``.
"""

from __future__ import annotations

import statistics
from typing import Any

from elmo_pipeline.reproduce.significance import format_p, significance
from elmo_pipeline.tasks import load_task

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


def dev_score(record: dict[str, Any]) -> float:
    """A run's dev score in percent: the best validation score, the one its checkpoint was chosen by."""
    if record.get("best_val") is None:
        raise ValueError(
            f"reproduce: run {record.get('task')} {record.get('arm')} seed {record.get('seed')} has no dev score"
        )
    return 100.0 * float(record["best_val"])


def choose_elmo(runs: list[dict[str, Any]], task: str) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The task's runs with its +ELMo chosen on dev: the general biLM's (``elmo``) or the task-tuned one's.

    When the task has ``elmo_task`` runs, the arm with the higher mean dev score is the table's +ELMo
    (ties keep the general biLM). The means are over the seeds that both arms ran: every seed, or the
    first ``elmo_choice_seeds`` of a preset that runs only the chosen arm on the rest
    (:class:`~elmo_pipeline.reproduce.preset.Preset`). The chosen arm's records (all its seeds) come back
    as arm ``elmo`` (``from_arm`` says which); the other arm's are left out of the table. Test scores
    play no part. Returns the runs and the choice (both arms' dev scores on the compared seeds), or None
    when there is nothing to choose.
    """
    mine = [r for r in runs if r["task"] == task]
    arms = {arm: [r for r in mine if r["arm"] == arm] for arm in ("elmo", "elmo_task")}
    if not arms["elmo_task"]:
        return mine, None
    seeds = {r["seed"] for r in arms["elmo_task"]}
    if arms["elmo"] and seeds & {r["seed"] for r in arms["elmo"]}:
        seeds &= {r["seed"] for r in arms["elmo"]}
    elif arms["elmo"]:  # no seed in common (a partial report): each arm's mean over its own seeds
        seeds |= {r["seed"] for r in arms["elmo"]}
    dev = {}
    for arm, records in arms.items():
        compared = sorted((r for r in records if r["seed"] in seeds), key=lambda r: r["seed"])
        if compared:
            scores = [dev_score(r) for r in compared]
            mean, std = mean_std(scores)
            dev[arm] = {"mean": mean, "std": std, "n": len(scores), "scores": scores}
    kept = "elmo" not in dev or dev["elmo_task"]["mean"] > dev["elmo"]["mean"]
    chosen = "elmo_task" if kept else "elmo"
    table = [r for r in mine if r["arm"] not in arms] + [{**r, "arm": "elmo", "from_arm": chosen} for r in arms[chosen]]
    return table, {"kept": kept, "chosen": chosen, "dev": dev, "seeds": sorted(seeds)}


def table_rows(runs: list[dict[str, Any]], tasks: list[str]) -> list[dict[str, Any]]:
    """One row per task: the paper's numbers and ours (mean, std, n per arm) and the increases.

    A task run with the biLM tuned on its text (``elmo_task``) has its +ELMo chosen on dev
    (:func:`choose_elmo`); ``row["task_text"]`` records the choice.
    """
    rows = []
    for task in tasks:
        spec = load_task(task)
        task_runs, choice = choose_elmo(runs, task)
        row: dict[str, Any] = {"task": task, "metric": spec.paper.get("metric", spec.metric), "paper": spec.paper}
        if choice is not None:
            row["task_text"] = choice
        for arm in ARM_TITLES:
            scores = [run_score(r) for r in task_runs if r["arm"] == arm]
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
                    r.get("stopped_by") == "time_limit" for r in task_runs if r["arm"] == arm
                )
        scores = {arm: row[arm]["scores"] for arm in ARM_TITLES if arm in row}
        row["significance"] = significance(
            task_runs, task, "span_f1" if spec.metric == "span_f1" else "accuracy", scores
        )
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
    rows: list[dict[str, Any]],
    preset: str,
    description: str,
    meaningful: bool,
    pretrain: dict[str, Any] | None,
    task_text: dict[str, dict[str, Any]] | None = None,
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
    lines += _task_text_lines(rows, task_text or {})
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


def _task_text_lines(rows: list[dict[str, Any]], task_text: dict[str, dict[str, Any]]) -> list[str]:
    """What tuning the biLM on each task's text did, on dev: the choice, and the perplexity of the dev sentences."""
    choices = [row for row in rows if "task_text" in row]
    if not choices:
        return []
    lines = [
        "",
        "+ELMo with the biLM tuned on the task's training sentences (ELMo §3.4), kept where its mean dev score "
        "is higher than with the general biLM, over the seeds both ran (dev, mean ± std; the table then has the "
        "kept one's every seed):",
    ]
    for row in choices:
        choice, record = row["task_text"], task_text.get(row["task"]) or {}
        dev = choice["dev"]
        general = dev.get("elmo") or {}
        text = (
            f"- {row['task']}: tuned {_fmt(dev['elmo_task']['mean'], dev['elmo_task']['std'])}, general "
            f"{_fmt(general.get('mean'), general.get('std'))}: {'kept' if choice['kept'] else 'dropped'}"
        )
        if choice.get("seeds") is not None:
            text += f" (seed{'s' if len(choice['seeds']) > 1 else ''} {', '.join(map(str, choice['seeds']))})"
        if record.get("dev_ppl_before") is not None and record.get("best_val_ppl") is not None:
            text += f"; perplexity of the dev sentences {record['dev_ppl_before']:.1f} -> {record['best_val_ppl']:.1f}"
        lines.append(text)
    return lines
