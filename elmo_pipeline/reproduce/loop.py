"""The reproduction loop: pretrain (or take ``--bilm``), then every task x arm x seed, then the report.

Its state (the W&B group, the wall time so far) lives in ``<work>/reproduce.json``, so running the
same command again resumes: finished runs are kept, the rest run (see docs/reproduce.md).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from elmo_pipeline.files import write_json_atomic
from elmo_pipeline.reproduce.preset import Preset
from elmo_pipeline.reproduce.provenance import keep_given_bilm, keep_pretraining
from elmo_pipeline.reproduce.report import write_report
from elmo_pipeline.reproduce.runner import (
    Run,
    RunsFailed,
    after_the_choice,
    bilm_identity,
    execute,
    plan,
    pretrain,
)
from elmo_pipeline.reproduce.supervisor import Supervisor
from elmo_pipeline.reproduce.table import run_score
from elmo_pipeline.reproduce.task_text import tune_on_task_text

log = logging.getLogger(__name__)


def reproduce(preset: Preset, wandb_enabled: bool = True) -> dict[str, Any]:
    """Run (or resume) a reproduction; returns the report."""
    work = Path(preset.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    supervisor = Supervisor()
    with supervisor.locked(work):
        return _reproduce(preset, work, wandb_enabled, supervisor)


def _state(preset: Preset) -> dict[str, Any]:
    """The reproduction's state (its W&B group and accumulated wall time), kept across resumes."""
    path = Path(preset.work_dir) / "reproduce.json"
    if path.is_file():
        return json.loads(path.read_text())
    return {"group": f"reproduce-{preset.name}-{time.strftime('%Y%m%d-%H%M%S')}", "wall_seconds": 0.0, "calls": 0}


def _reproduce(preset: Preset, work: Path, wandb_enabled: bool, supervisor: Supervisor) -> dict[str, Any]:
    state = _state(preset)
    state["calls"] = state.get("calls", 0) + 1
    wandb = (
        {"project": preset.wandb_project, "group": state["group"], "save_dir": str(work)}
        if wandb_enabled and os.environ.get("WANDB_MODE") != "disabled"
        else None
    )
    started = time.perf_counter()
    base_seconds = state["wall_seconds"]

    def save_state() -> None:
        state["wall_seconds"] = base_seconds + time.perf_counter() - started
        write_json_atomic(work / "reproduce.json", state)

    save_state()
    pretrain_record = None
    try:
        if preset.bilm:
            bilm = preset.bilm
            log.info("reproduce: using the biLM %s (no pretraining)", bilm)
            keep_given_bilm(bilm, Path(preset.output_dir))
        else:
            pretrain_record = pretrain(preset, wandb, supervisor)
            bilm = pretrain_record["export"]
            kept = keep_pretraining(pretrain_record, work / "pretrain", Path(preset.output_dir))
            pretrain_record["kept"] = kept["bilm"]
        save_state()
        tuned: dict[str, dict[str, Any]] = {}
        if "elmo_task" in preset.arms:  # the biLM tuned on each task's text, before any finetuning
            for task in preset.tasks:
                if not preset.only_tasks or task.name in preset.only_tasks:
                    tuned[task.name] = tune_on_task_text(preset, task, bilm, wandb, supervisor)
                else:  # left out by --tasks: its finished tuning still names its elmo_task runs in the report
                    record = tune_on_task_text(preset, task, bilm, wandb, supervisor, only_if_finished=True)
                    if record is not None:
                        tuned[task.name] = record
            save_state()
        runs = plan(preset, bilm, wandb, bilm_identity(bilm), {name: r["export"] for name, r in tuned.items()})
        selected = None
        if preset.only_tasks:
            selected = {i for i, run in enumerate(runs) if run.task.name in preset.only_tasks}
        results: dict[int, dict[str, Any]] = {}
        admit = after_the_choice(runs, preset.elmo_choice_seeds)

        def planned() -> list[int]:
            """The runs of this preset: all but the later seeds of the +ELMo arm not chosen on dev.

            Such a run finished by an earlier call (a preset without ``elmo_choice_seeds``) is left out
            too, so the table follows the preset's rule.
            """
            return [j for j in range(len(runs)) if admit(j, results) is not False]

        def expected_total() -> int:
            """How many runs there will be: an undecided pair (elmo, elmo_task of one seed) counts once."""
            undecided = sum(1 for j in planned() if j not in results and admit(j, results) is None)
            return len(planned()) - undecided // 2

        ran = 0  # runs finished by this call (the rate of the time-left estimate)
        finetune_started = time.perf_counter()

        def on_done(run: Run, record: dict[str, Any], reused: bool) -> None:
            nonlocal ran
            index = runs.index(run)
            results[index] = record
            save_state()
            total = expected_total()
            if reused:
                how = "finished before, kept"
            else:
                ran += 1
                left = max(total - len(results), 0)
                rate = (time.perf_counter() - finetune_started) / ran  # wall s per run, jobs included
                how = f"{record.get('wall_seconds', 0):.0f} s; about {left * rate / 60:.0f} min left"
            print(
                f"[{len(results)}/{total}] {run.label}: test {run_score(record):.2f} "
                f"(dev {100 * (record.get('best_val') or 0):.2f}; {how})",
                flush=True,
            )
            if not reused and all(i in results for i in planned() if runs[i].task is run.task):
                write_report(preset, state, pretrain_record, *kept(), task_text=tuned)  # partial table after each task

        def kept() -> tuple[list[Run], dict[int, dict[str, Any]]]:
            """The planned runs and their results, renumbered: what the report covers."""
            order = planned()
            return [runs[j] for j in order], {k: results[j] for k, j in enumerate(order) if j in results}

        try:
            results.update(
                execute(
                    runs,
                    preset.jobs,
                    preset.threads,
                    on_done=on_done,
                    selected=selected,
                    supervisor=supervisor,
                    admit=admit,
                )
            )
        except RunsFailed:
            if results:
                write_report(preset, state, pretrain_record, *kept(), task_text=tuned)  # what did finish
            raise
        save_state()
        return write_report(preset, state, pretrain_record, *kept(), wandb, task_text=tuned)
    finally:
        save_state()
