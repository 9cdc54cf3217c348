"""`elmo-pipeline reproduce`: the ELMo results table (Peters et al. 2018, Table 1) from one command.

    elmo-pipeline reproduce --preset demo                                  # bundled samples, minutes on CPU
    elmo-pipeline reproduce --preset small --data-root ../shared/data      # real data, ~90 min on 2 cores
    elmo-pipeline reproduce --preset small --bilm path/to/options.json,path/to/weights.hdf5   # published biLM
    elmo-pipeline reproduce --preset original --dry-run                    # parse every config, build every model

Pretrains the biLM (unless ``--bilm`` names one), then trains every task in three arms (baseline,
random-biLM control, +ELMo) over ``--seeds`` seeds, and writes ``table.md``, ``results.json`` and the
pictures to ``results/<preset>/``. Running the same command again resumes: finished runs are kept.
Every run goes to W&B under one group per reproduction (offline without an API key; ``wandb sync``
uploads later), with the final table as a W&B Table. See docs/reproduce.md.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import json
import logging
import os
import platform
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from elmo_pipeline.files import write_json_atomic
from elmo_pipeline.reproduce.preset import PRESETS, Preset, finetune_config, pretrain_config
from elmo_pipeline.reproduce.report import (
    log_table_to_wandb,
    markdown_table,
    plot_layer_weights,
    plot_learning_curves,
    run_score,
    table_rows,
)
from elmo_pipeline.reproduce.runner import (
    Run,
    RunFailed,
    RunsFailed,
    bilm_identity,
    execute,
    hold_in_children,
    plan,
    pretrain,
    release_in_children,
    reset_stop,
    write_yaml,
)

log = logging.getLogger(__name__)

__all__ = ["main", "reproduce", "Preset"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="elmo-pipeline reproduce",
        description="Pretrain a biLM and transfer it to every task (baseline / random biLM / +ELMo), "
        "over seeds; write the paper's table with ours beside it. Re-running resumes.",
    )
    parser.add_argument("--preset", default="demo", help=f"{' | '.join(PRESETS)} or a preset YAML (default demo)")
    parser.add_argument(
        "--data-root", help="folder of the task data (the layout of ../shared/data); 'hub' reads the hub"
    )
    parser.add_argument(
        "--bilm",
        help="use this biLM instead of pretraining: an export folder, a folder with "
        "options.json + weights.hdf5, or OPTIONS,WEIGHTS",
    )
    parser.add_argument("--seeds", type=int, help="finetuning seeds per task and arm (default: the preset's)")
    parser.add_argument("--tasks", help="comma-separated subset of the preset's tasks")
    parser.add_argument("--jobs", type=int, help="finetuning runs at once (default: the preset's)")
    parser.add_argument("--threads", type=int, help="torch threads per finetuning run (default: the preset's)")
    parser.add_argument("--output", help="where table.md, results.json and pictures go (default results/<preset>)")
    parser.add_argument("--work-dir", help="where the runs go (default runs/reproduce/<preset>)")
    parser.add_argument("--no-wandb", action="store_true", help="do not log to W&B (CSV logs only)")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="write and parse the pretraining config and each task x arm's (seed 0), build every model; train nothing",
    )
    return parser


def apply_arguments(preset: Preset, args: argparse.Namespace) -> Preset:
    if args.data_root is not None:
        preset.data_root = None if args.data_root == "hub" else args.data_root
    if args.bilm:
        preset.bilm = args.bilm
    for name in ("seeds", "jobs", "threads"):
        value = getattr(args, name)
        if value is not None:
            if value < 1:
                raise SystemExit(f"reproduce: --{name} must be at least 1, got {value}")
            setattr(preset, name, value)
    if args.tasks:
        wanted = [t.strip() for t in args.tasks.split(",") if t.strip()]
        known = [t.name for t in preset.tasks]
        unknown = sorted(set(wanted) - set(known))
        if unknown:
            raise SystemExit(f"reproduce: --tasks {','.join(unknown)}: not in the preset; its tasks are {known}")
        preset.only_tasks = wanted
    if args.output:
        preset.output_dir = args.output
    if args.work_dir:
        preset.work_dir = args.work_dir
    if preset.data_root is None:  # the hub has no local files: per-split file overrides cannot apply
        local = [t.name for t in preset.tasks if t.set.get("data.split_files")]
        if local:
            raise SystemExit(
                f"reproduce: the preset's {', '.join(local)} read local files (data.split_files), which the hub "
                "does not have: give --data-root, or copy the preset and remove data.split_files"
            )
    return preset


def machine() -> dict[str, Any]:
    """Where the reproduction ran (for the table's wall time)."""
    import torch

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return info


def _state(preset: Preset) -> dict[str, Any]:
    """The reproduction's state (its W&B group and accumulated wall time), kept across resumes."""
    path = Path(preset.work_dir) / "reproduce.json"
    if path.is_file():
        return json.loads(path.read_text())
    return {"group": f"reproduce-{preset.name}-{time.strftime('%Y%m%d-%H%M%S')}", "wall_seconds": 0.0, "calls": 0}


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
        "machine": machine(),
    }
    text = markdown_table(rows, preset.name, preset.description, preset.meaningful, pretrain_record)
    text += (
        f"\nWall time {state['wall_seconds'] / 60:.1f} min on {summary['machine'].get('cpu', '?')} "
        f"({summary['machine']['cpus']} CPUs{', ' + summary['machine']['cuda'] if summary['machine']['cuda'] else ''})"
        f"; {len(done)} of {len(runs)} finetuning runs. Every run: `results.json`. W&B group `{state['group']}`.\n"
    )
    if pictures:
        text += "\n" + "\n".join(f"![{p.stem}]({p.name})" for p in pictures) + "\n"
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


def reproduce(preset: Preset, wandb_enabled: bool = True) -> dict[str, Any]:
    """Run (or resume) a reproduction; returns the report."""
    work = Path(preset.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    with _locked(work):
        return _reproduce(preset, work, wandb_enabled)


@contextlib.contextmanager
def _locked(work: Path) -> Iterator[None]:
    """One reproduction per work folder at a time (two would delete each other's unfinished runs)."""
    import fcntl

    with open(work / "reproduce.lock", "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            raise SystemExit(
                f"reproduce: another reproduce is running in {work} (pid {lock.read().strip() or '?'}, or a run it "
                "started); wait for "
                "it, or give this one its own --work-dir"
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        hold_in_children(lock.fileno())  # the children hold the lock too: no rerun beside a live one
        try:
            yield
        finally:
            release_in_children(lock.fileno())
            fcntl.flock(lock, fcntl.LOCK_UN)


def _reproduce(preset: Preset, work: Path, wandb_enabled: bool) -> dict[str, Any]:
    reset_stop()
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
        else:
            pretrain_record = pretrain(preset, wandb)
            bilm = pretrain_record["export"]
        save_state()
        runs = plan(preset, bilm, wandb, bilm_identity(bilm))
        selected = None
        if preset.only_tasks:
            selected = {i for i, run in enumerate(runs) if run.task.name in preset.only_tasks}
        results: dict[int, dict[str, Any]] = {}
        total = len(runs)

        ran = 0  # runs finished by this call (the rate of the time-left estimate)
        finetune_started = time.perf_counter()

        def on_done(run: Run, record: dict[str, Any], reused: bool) -> None:
            nonlocal ran
            index = runs.index(run)
            results[index] = record
            save_state()
            if reused:
                how = "finished before, kept"
            else:
                ran += 1
                left = total - len(results)
                rate = (time.perf_counter() - finetune_started) / ran  # wall s per run, jobs included
                how = f"{record.get('wall_seconds', 0):.0f} s; about {left * rate / 60:.0f} min left"
            print(
                f"[{len(results)}/{total}] {run.label}: test {run_score(record):.2f} "
                f"(dev {100 * (record.get('best_val') or 0):.2f}; {how})",
                flush=True,
            )
            if not reused and all(i in results for i, r in enumerate(runs) if r.task is run.task):
                write_report(preset, state, pretrain_record, runs, results)  # partial table after each task

        try:
            results.update(execute(runs, preset.jobs, preset.threads, on_done=on_done, selected=selected))
        except RunsFailed:
            if results:
                write_report(preset, state, pretrain_record, runs, results)  # what did finish
            raise
        save_state()
        return write_report(preset, state, pretrain_record, runs, results, wandb)
    finally:
        save_state()


# ---- dry run -----------------------------------------------------------------------------------------
def _parse_only(cli_class: type, model_class: type, data_class: type, path: Path) -> None:
    """Parse (and type-check) a config with the command's own LightningCLI, instantiating nothing."""

    class ParseOnly(cli_class):  # type: ignore[misc, valid-type]
        def instantiate_classes(self) -> None:  # the data may not exist here (a GPU cluster's corpus)
            pass

    ParseOnly(model_class, data_class, args=["--config", str(path)], run=False)


def _count(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())


def dry_run(preset: Preset) -> list[dict[str, Any]]:
    """Write and parse the pretraining config and each task x arm's (seed 0); build every model. Trains nothing."""
    import torch

    from elmo_pipeline.data.lm_datamodule import LMDataModule
    from elmo_pipeline.data.readers.conll import bioul_tags
    from elmo_pipeline.data.task_datamodule import TaskDataModule, resolve_bilm
    from elmo_pipeline.systems.finetune import FinetuneSystem
    from elmo_pipeline.systems.finetune_cli import FinetuneCLI
    from elmo_pipeline.systems.pretrain import PretrainSystem
    from elmo_pipeline.systems.pretrain_cli import PretrainCLI
    from elmo_pipeline.tasks import load_task

    out = Path(preset.work_dir) / "dry_run"
    built = []
    if preset.bilm:  # loaded for real (outside the meta device): checks the files and their shapes
        bilm_config = resolve_bilm(preset.bilm).config
    with torch.device("meta"):  # sizes only: the Original biLM's softmax alone is 400M parameters
        if preset.bilm:
            bilm = preset.bilm
        else:
            assert preset.pretrain is not None
            config = pretrain_config(preset, Path(preset.work_dir) / "pretrain", None, "fit")  # launchable as is
            path = out / "pretrain.yaml"
            write_yaml(path, config)
            _parse_only(PretrainCLI, PretrainSystem, LMDataModule, path)
            vocab = Path(preset.pretrain.set.get("data.vocab_path", ""))
            vocab_size = sum(1 for _ in vocab.open()) if vocab.is_file() else preset.dry_run_vocab_size
            system = PretrainSystem(**config["model"], vocab_size=vocab_size)
            bilm_config = system.bilm.config
            built.append(
                {"run": "pretrain", "config": str(path), "parameters": _count(system), "vocab_size": vocab_size}
            )
            bilm = str(Path(preset.work_dir) / "pretrain" / "export")
        for task in preset.tasks:
            spec = load_task(task.name)
            labels = bioul_tags(spec.labels) if spec.kind == "tagging" else list(spec.labels)
            for arm in preset.arms:
                config = finetune_config(preset, task, arm, 0, bilm, out / task.name / arm, None)
                path = out / f"{task.name}-{arm}.yaml"
                write_yaml(path, config)
                _parse_only(FinetuneCLI, FinetuneSystem, TaskDataModule, path)
                model_args = dict(config["model"])
                head = model_args.pop("head")
                module, name = head["class_path"].rsplit(".", 1)
                head_class = getattr(importlib.import_module(module), name)
                elmo = model_args.get("elmo")
                system = FinetuneSystem(
                    head=functools.partial(head_class, **(head.get("init_args") or {})),
                    task=task.name,
                    labels=labels,
                    num_words=20_000,  # nominal: the real vocabulary comes from the training data
                    num_chars=100,
                    elmo_num_layers=bilm_config.num_layers + 1 if elmo else 0,
                    elmo_dim=bilm_config.output_dim if elmo else 0,
                    **{k: v for k, v in model_args.items() if k != "task"},
                )
                built.append({"run": f"{task.name} {arm}", "config": str(path), "parameters": _count(system)})
    return built


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    args = _parser().parse_args(argv)
    preset = apply_arguments(Preset.load(args.preset), args)
    if args.dry_run:
        for item in dry_run(preset):
            extra = f", vocabulary {item['vocab_size']:,}" if "vocab_size" in item else ""
            print(f"built {item['run']}: {item['parameters']:,} parameters{extra} ({item['config']})")
        if preset.launch:
            print("\nlaunch:\n" + preset.launch.rstrip())
        return 0
    signal.signal(signal.SIGTERM, _interrupt)  # `kill`, a scheduler's preemption: stop the runs, keep what finished
    try:
        report = reproduce(preset, wandb_enabled=not args.no_wandb)
    except (RunsFailed, RunFailed) as error:
        print(
            f"\nreproduce: {error}\n\nFix the cause and run the same command again: finished runs are kept.",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        print(
            "\nreproduce: interrupted; finished runs are kept. Run the same command again to resume.",
            file=sys.stderr,
        )
        return 130
    print("\n" + report["text"])
    print(f"wrote {preset.output_dir}/table.md, results.json" + "".join(f", {p.name}" for p in report["pictures"]))
    return 0
