"""Running a reproduction: the pretraining stage, then every task x arm x seed, each as its own process.

Every run lives in its own folder under the work folder with the complete config it ran
(``config.yaml``), its log (``log.txt``), checkpoints and CSV logs, and -- once it has finished --
its ``results.json`` (written atomically by ``elmo-pipeline finetune``) next to ``fingerprint``.
A run whose ``results.json`` exists with an unchanged fingerprint is finished and never run
again, so an interrupted reproduction (Ctrl-C, a lost machine) resumes where it stopped; a run
that was cut off is started again from scratch (finetuning runs are minutes long), while the
pretraining run resumes from its ``last.ckpt``.

Each run is a child process of a :class:`~elmo_pipeline.reproduce.supervisor.Supervisor`: its memory,
threads and RNG state are its own, a crash is reported with the tail of its log, and ``jobs`` of
them run side by side.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from elmo_pipeline.analysis.curves import read_metrics
from elmo_pipeline.errors import CannotProceed
from elmo_pipeline.files import write_json_atomic
from elmo_pipeline.models.source import BiLMSource
from elmo_pipeline.reproduce.preset import Preset, StageSpec, finetune_config, fingerprint, pretrain_config
from elmo_pipeline.reproduce.supervisor import RunFailed, Supervisor, log_tail
from elmo_pipeline.reproduce.table import choose_elmo

log = logging.getLogger(__name__)


@dataclass
class Run:
    """One finetuning run of a reproduction."""

    task: StageSpec
    arm: str
    seed: int
    run_dir: Path
    config: dict[str, Any]
    bilm_identity: str = ""

    @property
    def label(self) -> str:
        return f"{self.task.name} {self.arm} seed {self.seed}"

    @property
    def fingerprint(self) -> str:
        """The config's fingerprint and, for the biLM arms, which biLM (its weights, not only its path)."""
        extra = {"bilm_identity": self.bilm_identity} if self.arm != "baseline" else None
        return fingerprint(self.config, extra)

    def finished(self) -> dict[str, Any] | None:
        """The run's results if it finished with this very config, else None."""
        return finished_record(self.run_dir, self.fingerprint)


def finished_record(run_dir: Path, print_: str) -> dict[str, Any] | None:
    results, stamp = run_dir / "results.json", run_dir / "fingerprint"
    if not (results.is_file() and stamp.is_file()) or stamp.read_text().strip() != print_:
        return None
    try:
        return json.loads(results.read_text())
    except json.JSONDecodeError:  # cannot happen with atomic writes; treat as unfinished
        return None


def write_yaml(path: Path, config: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def require_output(path: Path, args: str, log_path: Path) -> None:
    """A child that exited 0 must have written ``path`` (Lightning exits 0 on SIGTERM, for one)."""
    if not path.is_file():
        raise RunFailed(
            f"`elmo-pipeline {args}` ended without writing {path}; end of {log_path}:\n{log_tail(log_path)}"
        )


# ---- pretraining ---------------------------------------------------------------------------------
def fit_bilm(
    run_dir: Path,
    config_for: Callable[[str], dict[str, Any]],
    threads: int,
    supervisor: Supervisor,
    what: str,
    heartbeat: Callable[[Path, float], None] | None = None,
) -> dict[str, Any]:
    """Fit (or resume) one ``pretrain fit`` run in ``run_dir`` until its export exists; returns its figures.

    ``config_for(version)`` is the run's config with its CSV log in ``logs/<version>``: each attempt logs
    to its own folder (``fit``, ``fit-2``, ...), because a CSVLogger empties the one it reopens. An
    attempt resumes from ``last.ckpt``; ``progress.json`` counts the attempts and their wall time.
    """
    progress_path = run_dir / "progress.json"
    progress = json.loads(progress_path.read_text()) if progress_path.is_file() else {"fit_seconds": 0.0}
    if not (run_dir / "export" / "metrics.json").is_file():  # the export is written when fitting ends
        attempt = progress.get("attempts", 0) + 1
        version = "fit" if attempt == 1 else f"fit-{attempt}"
        write_yaml(run_dir / "config.yaml", config_for(version))
        progress["attempts"] = attempt
        write_json_atomic(progress_path, progress)  # before the child starts: a killed attempt still counts
        args = ["pretrain", "fit", "--config", str(run_dir / "config.yaml")]
        if (run_dir / "checkpoints" / "last.ckpt").is_file():
            log.info("reproduce: resuming pretraining from %s", run_dir / "checkpoints" / "last.ckpt")
            args += ["--ckpt_path", "last"]
        elif any((run_dir / "checkpoints").glob("*.ckpt")):  # killed before its first last.ckpt: this run's own
            log.info("reproduce: %s holds no last.ckpt; the run starts again", run_dir / "checkpoints")
            args += ["--model.overwrite", "true"]
        log.info("reproduce: %s (log %s)", what, run_dir / "log.txt")
        started = time.perf_counter()
        metrics_csv = run_dir / "logs" / version / "metrics.csv"
        try:
            supervisor.run(
                args,
                run_dir / "log.txt",
                threads,
                heartbeat=(lambda seconds: heartbeat(metrics_csv, seconds)) if heartbeat else None,
            )
        finally:  # interrupted attempts count too: the wall time is the reproduction's
            progress["fit_seconds"] += time.perf_counter() - started
            write_json_atomic(progress_path, progress)
    require_output(run_dir / "export" / "metrics.json", "pretrain fit", run_dir / "log.txt")
    metrics = json.loads((run_dir / "export" / "metrics.json").read_text())
    return {
        "fit_seconds": round(progress["fit_seconds"], 1),
        "global_step": metrics.get("global_step"),
        "tokens_seen": metrics.get("tokens_seen"),
        "best_val_ppl": metrics.get("best_score"),
    }


def pretrain(preset: Preset, wandb: dict[str, Any] | None, supervisor: Supervisor | None = None) -> dict[str, Any]:
    """Pretrain (or resume pretraining) the biLM; returns its record (export folder, perplexities, time)."""
    supervisor = supervisor or Supervisor()
    run_dir = Path(preset.work_dir) / "pretrain"
    fit = pretrain_config(preset, run_dir, wandb, "fit")
    print_ = fingerprint(fit)
    done = finished_record(run_dir, print_)
    if done is not None:
        log.info("reproduce: pretraining already done (%s): skipped", run_dir)
        return done
    stamp = run_dir / "fingerprint"
    if run_dir.exists() and any(run_dir.iterdir()) and not stamp.is_file():
        raise CannotProceed(
            f"reproduce: {run_dir} holds a pretraining run that reproduce did not start (no fingerprint); to use "
            f"its biLM pass --bilm {run_dir / 'export'}, or move the folder away to pretrain again"
        )
    if stamp.is_file() and stamp.read_text().strip() != print_:
        raise CannotProceed(
            f"reproduce: {run_dir} holds a pretraining run of another config (its config.yaml differs from the "
            f"preset's; the paths in it are as seen from the directory it was started in). Nothing was deleted: "
            f"move the folder away (or pass --work-dir) to pretrain again, or use it: --bilm {run_dir / 'export'}"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    stamp.write_text(print_ + "\n")
    record: dict[str, Any] = {"export": str(run_dir / "export"), "fingerprint": print_}
    budget = (fit.get("trainer") or {}).get("max_time")
    record.update(
        fit_bilm(
            run_dir,
            lambda version: pretrain_config(preset, run_dir, wandb, version),
            preset.pretrain_threads,
            supervisor,
            f"pretraining the biLM ({preset.pretrain.config})",
            heartbeat=lambda csv_path, seconds: pretrain_progress(csv_path, seconds, budget),
        )
    )
    if preset.test_pretrain and fit.get("data", {}).get("test_sources"):
        test = pretrain_config(preset, run_dir, wandb, "test")
        write_yaml(run_dir / "test.yaml", test)
        log.info("reproduce: test perplexity of the best checkpoint")
        seconds = supervisor.run(
            ["pretrain", "test", "--config", str(run_dir / "test.yaml"), "--ckpt_path", "best"],
            run_dir / "log.txt",
            preset.pretrain_threads,
        )
        record["test_seconds"] = round(seconds, 1)
        require_output(run_dir / "logs" / "test" / "metrics.csv", "pretrain test", run_dir / "log.txt")
        record["test"] = last_metrics(run_dir / "logs" / "test" / "metrics.csv", "test/")
    write_json_atomic(run_dir / "results.json", record)
    return record


def _tail_rows(path: Path, size: int = 16384) -> list[dict[str, str]]:
    """The last rows of a (possibly large) CSVLogger file, read from its end."""
    import csv
    import io

    try:
        with open(path, "rb") as f:
            header = f.readline().decode()
            f.seek(0, os.SEEK_END)
            f.seek(max(len(header), f.tell() - size))
            tail = f.read().decode(errors="replace").split("\n", 1)[-1]
    except OSError:
        return []
    return list(csv.DictReader(io.StringIO(header + tail)))


def pretrain_progress(metrics_csv: Path, seconds: float, budget: str | None) -> None:
    rows = [r for r in _tail_rows(metrics_csv) if r.get("train/tokens_seen")]
    if not rows:
        print(f"pretraining: {seconds / 60:.1f} min (starting)", flush=True)
        return
    row = rows[-1]
    print(
        f"pretraining: step {int(float(row['step'])):,}, {float(row['train/tokens_seen']) / 1e6:.2f}M tokens, "
        f"loss {float(row['train/loss']):.3f}, {float(row['train/tokens_per_s']):,.0f} tokens/s; "
        f"{seconds / 60:.1f} min" + (f" of a {budget} budget" if budget else ""),
        flush=True,
    )


def last_metrics(path: Path, prefix: str) -> dict[str, float]:
    """The last logged value of each ``prefix`` metric in a CSVLogger file."""
    out: dict[str, float] = {}
    for row in read_metrics(path):
        out.update({key.removeprefix(prefix): value for key, value in row.items() if key.startswith(prefix)})
    return out


# ---- finetuning ----------------------------------------------------------------------------------
def bilm_identity(bilm: str | None) -> str:
    """A hash of the biLM's weight files (:meth:`BiLMSource.identity`); empty without a biLM.

    Part of each biLM arm's fingerprint, so retraining the biLM in place reruns the runs that used it.
    """
    return BiLMSource.parse(bilm).identity() if bilm else ""


def plan(
    preset: Preset,
    bilm: str | None,
    wandb: dict[str, Any] | None,
    identity: str = "",
    task_bilms: dict[str, str] | None = None,
) -> list[Run]:
    """Every finetuning run, task by task, then seed by seed, then arm by arm.

    ``task_bilms`` maps a task to its biLM tuned on the task's text (the ``elmo_task`` arm); a task
    without one has no ``elmo_task`` runs.
    """
    runs = []
    task_bilms = task_bilms or {}
    for task in preset.tasks:
        tuned = task_bilms.get(task.name)
        tuned_identity = bilm_identity(tuned) if tuned else ""
        for seed in range(preset.seeds):
            for arm in preset.arms:
                if arm == "elmo_task" and not tuned:
                    continue
                run_bilm, run_identity = (tuned, tuned_identity) if arm == "elmo_task" else (bilm, identity)
                run_dir = Path(preset.work_dir) / task.name / arm / f"seed{seed}"
                config = finetune_config(preset, task, arm, seed, run_bilm, run_dir, wandb)
                runs.append(Run(task, arm, seed, run_dir, config, run_identity))
    return runs


def after_the_choice(runs: list[Run], choice_seeds: int) -> Callable[[int, dict[int, dict[str, Any]]], bool | None]:
    """Which runs to start, for :func:`execute`, when +ELMo's biLM is chosen on the first ``choice_seeds`` seeds.

    Both ``elmo`` and ``elmo_task`` run on seeds below ``choice_seeds``. A later seed's run of either
    waits until those of its task have finished, then runs only if its arm has the higher mean dev
    score on them (:func:`~elmo_pipeline.reproduce.table.choose_elmo`, the rule the table uses).
    Returns ``admit(i, results)``: True (start run ``i``), False (skip it) or None (not decided yet).
    """

    def admit(i: int, results: dict[int, dict[str, Any]]) -> bool | None:
        run = runs[i]
        if choice_seeds <= 0 or run.arm not in ("elmo", "elmo_task") or run.seed < choice_seeds:
            return True
        deciding = [
            j
            for j, other in enumerate(runs)
            if other.task is run.task and other.arm in ("elmo", "elmo_task") and other.seed < choice_seeds
        ]
        if not any(runs[j].arm == "elmo_task" for j in deciding):
            return True  # no tuned biLM for this task: nothing to choose
        if any(j not in results for j in deciding):
            return None
        records = [{**results[j], "task": run.task.name, "arm": runs[j].arm, "seed": runs[j].seed} for j in deciding]
        _, choice = choose_elmo(records, run.task.name)
        return choice is None or run.arm == choice["chosen"]

    return admit


def keep_logs(run_dir: Path) -> Path | None:
    """Move an unfinished run's logs (log.txt, logs/) to ``<task>/<arm>/.attempts/<seed>-<n>`` before it restarts."""
    logs = [run_dir / name for name in ("log.txt", "logs") if (run_dir / name).exists()]
    if not logs:
        return None
    attempts = run_dir.parent / ".attempts"
    n = 1
    while (attempts / f"{run_dir.name}-{n}").exists():
        n += 1
    keep = attempts / f"{run_dir.name}-{n}"
    keep.mkdir(parents=True)
    for path in logs:
        shutil.move(str(path), str(keep / path.name))
    log.info("reproduce: %s was unfinished; its logs are kept in %s", run_dir, keep)
    return keep


def start(
    run: Run, threads: int, env_extra: dict[str, str] | None = None, supervisor: Supervisor | None = None
) -> dict[str, Any]:
    """Run one finetuning run from scratch (a child of ``supervisor``) and return its results."""
    supervisor = supervisor or Supervisor()
    if run.run_dir.exists():  # an unfinished run (interrupted or of another config) starts again
        keep_logs(run.run_dir)
        shutil.rmtree(run.run_dir)
    run.run_dir.mkdir(parents=True)
    write_yaml(run.run_dir / "config.yaml", run.config)
    seconds = supervisor.run(
        [
            "finetune",
            "--config",
            str(run.run_dir / "config.yaml"),
            "--results_path",
            str(run.run_dir / "results.json"),
        ],
        run.run_dir / "log.txt",
        threads,
        env_extra=env_extra,
    )
    require_output(run.run_dir / "results.json", f"finetune ({run.label})", run.run_dir / "log.txt")
    record = json.loads((run.run_dir / "results.json").read_text())
    if not record.get("test"):
        raise RunFailed(
            f"{run.label}: finished without a test score (test_after_fit false or fast_dev_run in the preset?); "
            f"a reproduction needs one per run. Log: {run.run_dir / 'log.txt'}"
        )
    record["wall_seconds"] = round(seconds, 1)
    record["arm"] = run.arm  # the reproduction's arm (finetune knows elmo, not which biLM of two)
    write_json_atomic(run.run_dir / "results.json", record)
    (run.run_dir / "fingerprint").write_text(run.fingerprint + "\n")  # last: marks the run finished
    return record


class RunsFailed(RuntimeError):
    """Some finetuning runs failed; ``failures`` maps each run's label to its error."""

    def __init__(self, failures: dict[str, BaseException]) -> None:
        self.failures = failures
        lines = "\n\n".join(f"- {label}: {error}" for label, error in failures.items())
        super().__init__(f"{len(failures)} run(s) failed:\n{lines}")


def _next_admitted(
    queue: list[int],
    results: dict[int, dict[str, Any]],
    admit: Callable[[int, dict[int, dict[str, Any]]], bool | None] | None,
    runs: list[Run],
) -> int | None:
    """Take the first run of ``queue`` that ``admit`` lets start (dropping those it skips); None if none can yet."""
    for i in list(queue):
        verdict = True if admit is None else admit(i, results)
        if verdict is None:
            continue
        queue.remove(i)
        if verdict:
            return i
        log.info("reproduce: %s is not run (its +ELMo arm was not chosen on dev)", runs[i].label)
    return None


def gpu_slots() -> list[str]:
    """The visible GPUs, one per concurrent job (``CUDA_VISIBLE_DEVICES`` of each child); empty on CPU."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d for d in visible.split(",") if d.strip()]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # no usable CUDA: CPU jobs
        return []


def execute(
    runs: list[Run],
    jobs: int,
    threads: int,
    on_done: Callable[[Run, dict[str, Any], bool], None] | None = None,
    starter: Callable[..., dict[str, Any]] | None = None,
    selected: set[int] | None = None,
    supervisor: Supervisor | None = None,
    admit: Callable[[int, dict[int, dict[str, Any]]], bool | None] | None = None,
) -> dict[int, dict[str, Any]]:
    """Run what is not finished yet, ``jobs`` at a time; returns each run's results by index.

    Finished runs are reported through ``on_done(run, record, reused=True)`` without running (but for
    those ``admit`` skips); runs not in ``selected`` (when given) are only reported if finished.
    ``admit(i, results)``, when given, decides each unfinished run when a slot is free: True starts
    it, False skips it, None leaves it waiting for other runs' results (:func:`after_the_choice`); the
    first startable run in order starts.
    With several GPUs visible, each concurrent job gets its own (``CUDA_VISIBLE_DEVICES``). A failure
    stops the scheduling of new runs; the running ones end, then :class:`RunsFailed` lists every
    failure. An interrupt stops every child of ``supervisor``. ``starter(run, threads, env)`` runs one
    run (default :func:`start`).
    """
    supervisor = supervisor or Supervisor()
    starter = starter or functools.partial(start, supervisor=supervisor)
    results: dict[int, dict[str, Any]] = {}
    todo = []
    for i, run in enumerate(runs):
        record = run.finished()
        if record is not None and admit is not None and admit(i, results) is False:
            log.info("reproduce: %s finished before but its +ELMo arm was not chosen on dev; not counted", run.label)
        elif record is not None:
            results[i] = record
            if on_done:
                on_done(run, record, True)
        elif selected is None or i in selected:
            todo.append(i)
    if todo:
        log.info("reproduce: %d of %d finetuning runs to do (%d finished before)", len(todo), len(runs), len(results))
    jobs = max(1, jobs)
    gpus = gpu_slots()
    free_slots = list(range(jobs))
    failures: dict[str, BaseException] = {}
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        pending: dict[Future, tuple[int, int]] = {}
        queue = list(todo)
        try:
            while queue or pending:
                while queue and free_slots and not failures:
                    i = _next_admitted(queue, results, admit, runs)
                    if i is None:
                        break
                    slot = free_slots.pop(0)
                    env = {"CUDA_VISIBLE_DEVICES": gpus[slot % len(gpus)]} if gpus and jobs > 1 else None
                    log.info("reproduce: start %s (%s)", runs[i].label, runs[i].run_dir)
                    pending[pool.submit(starter, runs[i], threads, env)] = (i, slot)
                if not pending:
                    if queue and not failures:
                        raise RuntimeError(
                            "reproduce: runs wait for a choice that no running run can make: "
                            + ", ".join(runs[i].label for i in queue)
                        )
                    break
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    i, slot = pending.pop(future)
                    free_slots.append(slot)
                    try:
                        results[i] = future.result()
                    except Exception as error:  # let the running ones finish, then report them all
                        log.error("reproduce: %s failed: %s", runs[i].label, str(error).splitlines()[0])
                        failures[runs[i].label] = error
                        continue
                    if on_done:
                        on_done(runs[i], results[i], False)
        except BaseException:
            queue.clear()
            supervisor.stop()
            raise
    if failures:
        raise RunsFailed(failures)
    return results
