"""Running a reproduction: the pretraining stage, then every task x arm x seed, each as its own process.

Every run lives in its own folder under the work folder with the complete config it ran
(``config.yaml``), its log (``log.txt``), checkpoints and CSV logs, and -- once it has finished --
its ``results.json`` (written atomically by ``elmo-pipeline finetune``) next to ``fingerprint``.
A run whose ``results.json`` exists with an unchanged fingerprint is finished and never run
again, so an interrupted reproduction (Ctrl-C, a lost machine) resumes where it stopped; a run
that was cut off is started again from scratch (finetuning runs are minutes long), while the
pretraining run resumes from its ``last.ckpt``.

Each run is a subprocess (``python -m elmo_pipeline.cli ...``): its memory, threads and RNG state
are its own, a crash is reported with the tail of its log, and ``jobs`` of them run side by side.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from elmo_pipeline.reproduce.preset import Preset, StageSpec, finetune_config, fingerprint, pretrain_config

log = logging.getLogger(__name__)


class RunFailed(RuntimeError):
    """A run's process exited with an error; the message holds the end of its log."""


@dataclass
class Run:
    """One finetuning run of a reproduction."""

    task: StageSpec
    arm: str
    seed: int
    run_dir: Path
    config: dict[str, Any]

    @property
    def label(self) -> str:
        return f"{self.task.name} {self.arm} seed {self.seed}"

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.config)

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


def _write_yaml(path: Path, config: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def _log_tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def run_command(
    args: list[str],
    log_path: Path,
    threads: int,
    heartbeat: Callable[[float], None] | None = None,
    every: float = 60.0,
) -> float:
    """``python -m elmo_pipeline.cli <args>`` with its output in ``log_path``; returns seconds taken.

    ``heartbeat(seconds_so_far)`` is called every ``every`` seconds while it runs (progress lines).
    """
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(threads)
    env["MKL_NUM_THREADS"] = str(threads)
    env.setdefault("PYTHONWARNINGS", "ignore::UserWarning:lightning.pytorch.cli")
    started = time.perf_counter()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") as out:
        out.write(f"$ {sys.executable} -m elmo_pipeline.cli {' '.join(args)}\n")
        out.flush()
        with subprocess.Popen(
            [sys.executable, "-m", "elmo_pipeline.cli", *args], stdout=out, stderr=out, env=env
        ) as process:
            while True:
                try:
                    code = process.wait(timeout=every)
                    break
                except subprocess.TimeoutExpired:
                    if heartbeat is not None:
                        heartbeat(time.perf_counter() - started)
    if code != 0:
        raise RunFailed(
            f"`elmo-pipeline {' '.join(args)}` exited with {code}; end of {log_path}:\n{_log_tail(log_path)}"
        )
    return time.perf_counter() - started


# ---- pretraining ---------------------------------------------------------------------------------
def pretrain(preset: Preset, wandb: dict[str, Any] | None) -> dict[str, Any]:
    """Pretrain (or resume pretraining) the biLM; returns its record (export folder, perplexities, time)."""
    run_dir = Path(preset.work_dir) / "pretrain"
    fit = pretrain_config(preset, run_dir, wandb, "fit")
    print_ = fingerprint(fit)
    done = finished_record(run_dir, print_)
    if done is not None:
        log.info("reproduce: pretraining already done (%s): skipped", run_dir)
        return done
    stamp = run_dir / "fingerprint"
    if run_dir.exists() and any(run_dir.iterdir()) and not stamp.is_file():
        raise RuntimeError(
            f"reproduce: {run_dir} holds a pretraining run that reproduce did not start (no fingerprint); to use "
            f"its biLM pass --bilm {run_dir / 'export'}, or move the folder away to pretrain again"
        )
    if stamp.is_file() and stamp.read_text().strip() != print_:
        log.warning("reproduce: %s holds a pretraining run of another config: starting it again", run_dir)
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    stamp.write_text(print_ + "\n")
    record: dict[str, Any] = {"export": str(run_dir / "export"), "fingerprint": print_}
    progress_path = run_dir / "progress.json"
    progress = json.loads(progress_path.read_text()) if progress_path.is_file() else {"fit_seconds": 0.0}
    if not (run_dir / "export" / "metrics.json").is_file():  # the export is written when fitting ends
        # each attempt logs to its own CSV folder (fit, fit-2, ...): a CSVLogger empties the one it reopens
        attempt = progress.get("attempts", 0) + 1
        version = "fit" if attempt == 1 else f"fit-{attempt}"
        _write_yaml(run_dir / "config.yaml", pretrain_config(preset, run_dir, wandb, version))
        progress["attempts"] = attempt
        args = ["pretrain", "fit", "--config", str(run_dir / "config.yaml")]
        if (run_dir / "checkpoints" / "last.ckpt").is_file():
            log.info("reproduce: resuming pretraining from %s", run_dir / "checkpoints" / "last.ckpt")
            args += ["--ckpt_path", "last"]
        log.info("reproduce: pretraining the biLM (%s; log %s)", preset.pretrain.config, run_dir / "log.txt")
        started = time.perf_counter()
        budget = (fit.get("trainer") or {}).get("max_time")
        metrics_csv = run_dir / "logs" / version / "metrics.csv"
        try:
            run_command(
                args,
                run_dir / "log.txt",
                preset.pretrain_threads,
                heartbeat=lambda seconds: _pretrain_progress(metrics_csv, seconds, budget),
            )
        finally:  # interrupted attempts count too: the wall time is the reproduction's
            progress["fit_seconds"] += time.perf_counter() - started
            _atomic_json(progress_path, progress)
    record["fit_seconds"] = round(progress["fit_seconds"], 1)
    metrics = json.loads((run_dir / "export" / "metrics.json").read_text())
    record["global_step"] = metrics.get("global_step")
    record["tokens_seen"] = metrics.get("tokens_seen")
    record["best_val_ppl"] = metrics.get("best_score")
    if preset.test_pretrain and fit.get("data", {}).get("test_sources"):
        test = pretrain_config(preset, run_dir, wandb, "test")
        _write_yaml(run_dir / "test.yaml", test)
        log.info("reproduce: test perplexity of the best checkpoint")
        seconds = run_command(
            ["pretrain", "test", "--config", str(run_dir / "test.yaml"), "--ckpt_path", "best"],
            run_dir / "log.txt",
            preset.pretrain_threads,
        )
        record["test_seconds"] = round(seconds, 1)
        record["test"] = last_metrics(run_dir / "logs" / "test" / "metrics.csv", "test/")
    _atomic_json(run_dir / "results.json", record)
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


def _pretrain_progress(metrics_csv: Path, seconds: float, budget: str | None) -> None:
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
    import csv

    out: dict[str, float] = {}
    if not path.is_file():
        return out
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            for key, value in row.items():
                if key and key.startswith(prefix) and value not in ("", None):
                    out[key.removeprefix(prefix)] = float(value)
    return out


def _atomic_json(path: Path, record: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


# ---- finetuning ----------------------------------------------------------------------------------
def plan(preset: Preset, bilm: str | None, wandb: dict[str, Any] | None) -> list[Run]:
    """Every finetuning run, task by task, then seed by seed, then arm by arm."""
    runs = []
    for task in preset.tasks:
        for seed in range(preset.seeds):
            for arm in preset.arms:
                run_dir = Path(preset.work_dir) / task.name / arm / f"seed{seed}"
                config = finetune_config(preset, task, arm, seed, bilm, run_dir, wandb)
                runs.append(Run(task, arm, seed, run_dir, config))
    return runs


def start(run: Run, threads: int) -> dict[str, Any]:
    """Run one finetuning run from scratch and return its results."""
    if run.run_dir.exists():
        shutil.rmtree(run.run_dir)  # an unfinished run (interrupted or of another config) starts again
    run.run_dir.mkdir(parents=True)
    _write_yaml(run.run_dir / "config.yaml", run.config)
    seconds = run_command(
        [
            "finetune",
            "--config",
            str(run.run_dir / "config.yaml"),
            "--results_path",
            str(run.run_dir / "results.json"),
        ],
        run.run_dir / "log.txt",
        threads,
    )
    record = json.loads((run.run_dir / "results.json").read_text())
    record["wall_seconds"] = round(seconds, 1)
    _atomic_json(run.run_dir / "results.json", record)
    (run.run_dir / "fingerprint").write_text(run.fingerprint + "\n")  # last: marks the run finished
    return record


def execute(
    runs: list[Run],
    jobs: int,
    threads: int,
    on_done: Callable[[Run, dict[str, Any], bool], None] | None = None,
    starter: Callable[[Run, int], dict[str, Any]] = start,
) -> dict[int, dict[str, Any]]:
    """Run what is not finished yet, ``jobs`` at a time; returns each run's results by index.

    Finished runs are reported through ``on_done(run, record, reused=True)`` without running.
    The first failure stops the scheduling of new runs and is raised once the running ones end.
    """
    results: dict[int, dict[str, Any]] = {}
    todo = []
    for i, run in enumerate(runs):
        record = run.finished()
        if record is None:
            todo.append(i)
        else:
            results[i] = record
            if on_done:
                on_done(run, record, True)
    if todo:
        log.info("reproduce: %d of %d finetuning runs to do (%d finished before)", len(todo), len(runs), len(results))
    failure: BaseException | None = None
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        pending: dict[Future, int] = {}
        queue = list(todo)
        try:
            while queue or pending:
                while queue and len(pending) < max(1, jobs) and failure is None:
                    i = queue.pop(0)
                    log.info("reproduce: start %s (%s)", runs[i].label, runs[i].run_dir)
                    pending[pool.submit(starter, runs[i], threads)] = i
                if not pending:
                    break
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    i = pending.pop(future)
                    try:
                        results[i] = future.result()
                    except Exception as error:  # keep the first; let the running ones finish
                        failure = failure or error
                        continue
                    if on_done:
                        on_done(runs[i], results[i], False)
        except KeyboardInterrupt:
            queue.clear()
            raise
    if failure is not None:
        raise failure
    return results
