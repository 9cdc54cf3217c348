"""The report of a reproduction: ``results.json`` (every run and the table), ``table.md``, the pictures, W&B.

The table itself is :mod:`elmo_pipeline.reproduce.table`, its tests
:mod:`elmo_pipeline.reproduce.significance`, the pictures :mod:`elmo_pipeline.reproduce.plots`. The
prediction files are copied, gzipped, to ``<output_dir>/predictions/``, and ``results.json`` points there.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from elmo_pipeline.data.predictions import archive
from elmo_pipeline.files import write_json_atomic
from elmo_pipeline.machine import machine_info
from elmo_pipeline.reproduce.plots import plot_layer_weights, plot_learning_curves
from elmo_pipeline.reproduce.preset import Preset
from elmo_pipeline.reproduce.runner import Run
from elmo_pipeline.reproduce.table import ARM_TITLES, COLUMNS, markdown_table, row_cells, table_rows

log = logging.getLogger(__name__)


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
    rows: list[dict[str, Any]],
    summary: dict[str, Any],
    pretrain: dict[str, Any] | None,
    pictures: list[Path],
    task_text: dict[str, dict[str, Any]] | None = None,
) -> str:
    """``table.md``: the table, the goal, the task-text choice, the biLM, the wall time and machine, the pictures."""
    machine = summary["machine"]
    text = markdown_table(rows, summary["preset"], summary["description"], summary["meaningful"], pretrain, task_text)
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
    bootstrap) and goal rule. Rewrites ``results.json`` and ``table.md``, and redraws the layer weights
    (from the records). The learning curves are redrawn when every run's folder (its CSV log) is still
    there; otherwise that picture stays as it is.
    """
    out = Path(output_dir)
    path = out / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"reproduce: {path} not found; --refresh-report takes a reproduction's output folder")
    results = json.loads(path.read_text())
    records = []
    for record in results["runs"]:
        kept = out / "predictions" / Path(record.get("predictions") or "-").name
        if record.get("predictions") and kept.is_file():
            # the folder's own copy first: once a folder is moved (results/cpu_1h -> results/cpu_1h_<date>),
            # its recorded path may hold the next table's file of the same name
            record = {**record, "predictions": str(kept)}
        records.append(record)
    tasks = [row["task"] for row in results["table"]]
    rows = table_rows(records, tasks)
    plot_layer_weights(records, out / "layer_weights.png")
    run_dirs = [Path(record.get("run_dir") or "-") for record in records]
    if records and all((run_dir / "logs" / "metrics.csv").is_file() for run_dir in run_dirs):
        export = (results.get("pretrain") or {}).get("export")
        pretrain_dir = Path(export).parent if export and (Path(export).parent / "logs").is_dir() else None
        plot_learning_curves(records, run_dirs, tasks, out / "learning_curves.png", pretrain_dir)
    pictures = [out / name for name in ("layer_weights.png", "learning_curves.png") if (out / name).is_file()]
    text = report_text(rows, results, results.get("pretrain"), pictures, results.get("task_text"))
    write_json_atomic(path, {**results, "table": rows})  # the records as they were stored
    (out / "table.md").write_text(text)
    return {"rows": rows, "text": text, "pictures": pictures}


def prediction_stem(record: dict[str, Any]) -> str:
    """The name of a run's prediction copies in ``<output>/predictions/``, without its ending."""
    return f"{record.get('task')}-{record.get('arm')}-seed{record.get('seed')}"


def prune_predictions(folder: Path, records: list[dict[str, Any]], tasks: list[str]) -> list[str]:
    """Delete the run prediction files of ``folder`` that no record of this report points to.

    Only files named as the report names them (``<task>-<arm>-seed<n>...``, for the tasks of this
    reproduction) are considered: they are this folder's own copies, left by an earlier table (another
    biLM, or an arm no longer run). Returns the names deleted.
    """
    if not folder.is_dir():
        return []
    kept = set()
    for record in records:  # by the run, not by where its file is now (a moved work folder has none to copy)
        stem = prediction_stem(record)
        kept |= {f"{stem}.conll.gz", f"{stem}.txt.gz", f"{stem}.gold.txt.gz"}
    deleted = []
    for path in sorted(folder.iterdir()):
        ours = any(path.name.startswith(f"{task}-") for task in tasks) and "-seed" in path.name
        if ours and path.name.endswith(".gz") and path.name not in kept:
            path.unlink()
            deleted.append(path.name)
    if deleted:
        log.info("reproduce: removed %d prediction file(s) of an earlier table from %s", len(deleted), folder)
    return deleted


def write_report(
    preset: Preset,
    state: dict[str, Any],
    pretrain_record: dict[str, Any] | None,
    runs: list[Run],
    results: dict[int, dict[str, Any]],
    wandb: dict[str, Any] | None = None,
    task_text: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """``results.json``, ``table.md`` and the pictures from the finished runs (all or some).

    ``task_text``: the records of the biLM tuned on each task's text (:mod:`elmo_pipeline.reproduce.task_text`).
    """
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
            name = f"{prediction_stem(record)}{kind}"
            record["predictions"] = str(archive(predictions, out / "predictions" / name))
        records.append(record)
    prune_predictions(out / "predictions", records, [run.task.name for run in runs])
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
    text = report_text(rows, summary, pretrain_record, pictures, task_text)
    write_json_atomic(
        out / "results.json",
        {**summary, "pretrain": pretrain_record, "task_text": task_text or {}, "table": rows, "runs": records},
    )
    (out / "table.md").write_text(text)
    logged = "|".join(sorted(runs[i].fingerprint for i in done))
    if wandb and len(done) == len(runs) and state.get("table_logged") != logged:
        try:
            log_table_to_wandb(wandb, rows, pictures, summary)
            state["table_logged"] = logged  # a re-run with nothing new does not log the table again
        except Exception as error:  # tracking must not lose a finished reproduction
            log.warning("reproduce: could not log the table to W&B: %s", error)
    return {"rows": rows, "text": text, "pictures": pictures}
