"""`elmo-pipeline reproduce`: its arguments, and the command itself (see the package docstring)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from typing import Any

from elmo_pipeline.reproduce.dry_run import dry_run
from elmo_pipeline.reproduce.loop import reproduce
from elmo_pipeline.reproduce.preset import PRESETS, Preset
from elmo_pipeline.reproduce.report import refresh_report
from elmo_pipeline.reproduce.runner import RunsFailed
from elmo_pipeline.reproduce.supervisor import RunFailed


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
    parser.add_argument(
        "--refresh-report",
        metavar="DIR",
        help="recompute table.md and results.json of a finished reproduction in DIR (its tests and goal, from its "
        "records and prediction files) without training anything; every other option is ignored",
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


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    args = _parser().parse_args(argv)
    if args.refresh_report:
        try:
            report = refresh_report(args.refresh_report)
        except (FileNotFoundError, KeyError, ValueError) as error:
            print(f"reproduce: --refresh-report {args.refresh_report}: {error}", file=sys.stderr)
            return 2
        print(report["text"])
        print(f"wrote {args.refresh_report}/table.md, results.json")
        return 0
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
