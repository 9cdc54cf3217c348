"""Pretraining recipes at equal wall time: which one reaches the lowest held-out perplexity?

Each candidate is a set of overrides of one base pretraining config. Every candidate trains for
the same ``--minutes`` (``trainer.max_time``) with every core, one after the other on an
otherwise idle machine, and is judged on the base config's validation set (WikiText-2 valid for
``configs/pretrain/tiny_shared_lm.yaml``): the best validation perplexity the run reached.
Test sets are not touched. The table goes to ``--output`` (markdown + JSON), with tokens seen,
tokens/s and the validation curve of each candidate.

    .venv/bin/python benchmarks/sweep_pretrain.py --minutes 10            # every candidate below
    .venv/bin/python benchmarks/sweep_pretrain.py --minutes 10 --only adam,adam-sched-adaptive
    .venv/bin/python benchmarks/sweep_pretrain.py --minutes 10 --val-every 500 \
        --only cpu1h-fp32,cpu1h-bf16,cpu1h-bf16-dropout0 --output results/pretrain_sweep_bf16   # the bf16 sweep
    .venv/bin/python benchmarks/sweep_pretrain.py --minutes 9 --val-every 500 \
        --only cpu1h-now,cpu1h-lr3e-3,cpu1h-lr4e-3,cpu1h-batch128-lr3e-3,cpu1h-h1024 \
        --output results/pretrain_sweep_lr_size                                                  # lr, batch, width
    .venv/bin/python benchmarks/sweep_pretrain.py --minutes 9 --val-every 500 \
        --only cpu1h-now,cpu1h-lr3e-3,cpu1h-lr4e-3,cpu1h-lr6e-3 --output results/pretrain_sweep_lr  # lr, undisturbed
    .venv/bin/python benchmarks/sweep_pretrain.py --steps 1500 --val-every 500 \
        --only cpu1h-4e-3,cpu1h-beta2-0.98,cpu1h-div2 --output results/pretrain_sweep_steps  # at equal steps
    .venv/bin/python benchmarks/sweep_pretrain.py --steps 1500 --val-every 500 --seed 1 \
        --only cpu1h-4e-3,cpu1h-div2 --output results/pretrain_sweep_steps_seed1             # a replicate
    .venv/bin/python benchmarks/sweep_pretrain.py --steps 1500 --val-every 500 \
        --only cpu1h-div2,cpu1h-div1.5,cpu1h-highway2 --output results/pretrain_sweep_steps2   # tails, highway
    .venv/bin/python benchmarks/sweep_pretrain.py --minutes 8 --val-every 1000 \
        --only cpu1h-loop-bf16,cpu1h-loop-fp32 --output results/pretrain_loop_precision        # bf16 vs fp32

Candidates named ``cpu1h-*`` override ``configs/pretrain/cpu_1h.yaml`` (the one-hour recipe), the
others ``configs/pretrain/tiny_shared_lm.yaml``. Besides the last-50-steps rate, each run reports its
mean tokens/s: tokens seen over the training seconds (validation excluded), from the run's CSV log.

``--steps N`` compares at equal steps instead: every candidate trains exactly N steps with the
learning-rate decay ending at step N (``model.schedule_steps``), so neither the host's speed nor its
drift within minutes moves the curves. It judges the levers that do not change the step's cost; the
cost of the others is ``elmo-pipeline bench``'s to measure, interleaved in one process.

A finished candidate (its ``summary.json`` exists) is not rerun: interrupt and rerun freely.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
BASE = "configs/pretrain/tiny_shared_lm.yaml"
CPU_1H = "configs/pretrain/cpu_1h.yaml"  # the base of the cpu1h-* candidates

# a candidate: name -> (what it tests, overrides as dotted keys)
ADAM = {"model.optimizer": "adam", "model.lr": 2e-3, "trainer.gradient_clip_val": 1.0}
SCHEDULE = {"model.warmup_steps": 200, "model.lr_schedule": "linear", "model.min_lr_ratio": 0.05}
ADAPTIVE = {"model.bilm.softmax": "adaptive", "model.bilm.adaptive_cutoffs": [2000, 10000]}
WIDER = {"model.bilm.projection_dim": 128, "model.bilm.cell_dim": 512}
CANDIDATES: dict[str, tuple[str, dict[str, Any]]] = {
    "adagrad-bilmtf": (
        "the paper's Adagrad with bilm-tf's scale: lr 0.2, accumulator 1/400, clip 0.5 (= bilm-tf's 1.0 and 10 "
        "on the loss summed over 20 steps); sampled softmax",
        {"model.initial_accumulator_value": 0.0025, "trainer.gradient_clip_val": 0.5},
    ),
    "adam": ("Adam lr 2e-3, constant; sampled softmax", ADAM),
    "adam-sched-adaptive": (
        "Adam 2e-3, warm-up 200 steps then linear decay to 5% at the end of the budget; adaptive softmax",
        {**ADAM, **SCHEDULE, **ADAPTIVE},
    ),
    "wide-adam-sched-adaptive": (
        "the same with P 128, H 512 (ELMo vectors 256-d)",
        {**ADAM, **SCHEDULE, **ADAPTIVE, **WIDER},
    ),
    "wide-adam-sched-adaptive-bf16": (
        "the same in bf16 autocast (fp32 master weights, loss and LSTM state)",
        {**ADAM, **SCHEDULE, **ADAPTIVE, **WIDER, "trainer.precision": "bf16-mixed"},
    ),
    # the one-hour recipe, after the bf16 training path (one owner of the recurrence, bf16 backend)
    "cpu1h-fp32": (
        "the one-hour recipe as it was before the bf16 sweep (P 128, H 512, Adam 2e-3, linear decay, adaptive "
        "softmax), fp32, dropout 0.1",
        {"trainer.precision": "32-true", "model.bilm.dropout": 0.1, "model.lr": 2e-3},
    ),
    "cpu1h-bf16": (
        "the same with --trainer.precision bf16-mixed: bf16 matrix multiplies, fp32 gates, cell state and loss",
        {"trainer.precision": "bf16-mixed", "model.bilm.dropout": 0.1, "model.lr": 2e-3},
    ),
    "cpu1h-bf16-dropout0": (
        "bf16, dropout 0 (an hour sees a third of an epoch)",
        {"trainer.precision": "bf16-mixed", "model.bilm.dropout": 0.0, "model.lr": 2e-3},
    ),
    # the bf16 recipe (configs/pretrain/cpu_1h.yaml since the bf16 sweep: bf16, dropout 0): its learning rate,
    # batch and width, the levers the bf16 sweep left unswept
    "cpu1h-now": (
        "the one-hour recipe as it was: bf16, dropout 0, Adam 2e-3, batch 64, P 128, H 512",
        {"model.lr": 2e-3},
    ),
    "cpu1h-lr3e-3": ("the same with Adam 3e-3", {"model.lr": 3e-3}),
    "cpu1h-lr4e-3": ("the same with Adam 4e-3", {"model.lr": 4e-3}),
    "cpu1h-lr6e-3": ("the same with Adam 6e-3", {"model.lr": 6e-3}),
    "cpu1h-batch128-lr3e-3": (
        "Adam 3e-3, batches of 128 sentences (wider products for the bf16 units)",
        {"model.lr": 3e-3, "data.batch_size": 128},
    ),
    "cpu1h-h1024": (
        "Adam 2e-3, H 1024 (the cell twice as wide; ELMo vectors stay 256-d)",
        {"model.bilm.cell_dim": 1024, "model.lr": 2e-3},
    ),
    # the recipe with Adam 4e-3 (configs/pretrain/cpu_1h.yaml from 2026-12-03 to 2026-12-04), at equal steps
    # (--steps): the optimizer's second moment and the adaptive softmax's tail width
    "cpu1h-4e-3": (
        "the one-hour recipe: Adam 4e-3 (beta2 0.999), adaptive softmax tails 32 and 8 wide",
        {"model.bilm.adaptive_div_value": 4.0},
    ),
    "cpu1h-beta2-0.98": (
        "the same with Adam beta2 0.98",
        {"model.bilm.adaptive_div_value": 4.0, "model.betas": [0.9, 0.98]},
    ),
    "cpu1h-div2": (
        "the same with the adaptive softmax's tails 64 and 32 wide (div_value 2)",
        {"model.bilm.adaptive_div_value": 2.0},
    ),
    # with tails 64 and 32 wide (cpu1h-div2): a decay to zero, a looser clip, a wider character CNN
    "cpu1h-div2-min-lr0": (
        "tails 64 and 32 wide, the decay ending at 0 instead of 5%",
        {"model.bilm.adaptive_div_value": 2.0, "model.min_lr_ratio": 0.0},
    ),
    "cpu1h-div2-clip2": (
        "tails 64 and 32 wide, gradients clipped at norm 2 instead of 1",
        {"model.bilm.adaptive_div_value": 2.0, "trainer.gradient_clip_val": 2.0},
    ),
    "cpu1h-div2-chars256": (
        "tails 64 and 32 wide, the character CNN's filters doubled (256)",
        {"model.bilm.adaptive_div_value": 2.0, "model.bilm.filters": [[1, 32], [2, 32], [3, 64], [4, 128]]},
    ),
    # the recipe with tails 64 and 32 wide (configs/pretrain/cpu_1h.yaml since 2026-12-04): wider tails still, and a
    # second highway layer (the paper's biLM has two)
    "cpu1h-div1.5": (
        "the adaptive softmax's tails 85 and 57 wide (div_value 1.5)",
        {"model.bilm.adaptive_div_value": 1.5},
    ),
    "cpu1h-highway2": ("two highway layers instead of one", {"model.bilm.num_highway": 2}),
    # the recipe as it is, in each precision: the real loop's bf16 / fp32 tokens/s (issue 24), at equal wall time
    "cpu1h-loop-fp32": ("the one-hour recipe as it is, in fp32", {"trainer.precision": "32-true"}),
    "cpu1h-loop-bf16": ("the one-hour recipe as it is, in bf16", {"trainer.precision": "bf16-mixed"}),
}


def set_dotted(config: dict[str, Any], key: str, value: Any) -> None:
    node = config
    *parents, last = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def renamed(value: Any, old: str, new: str) -> Any:
    """Every string in a nested config with the path prefix ``old`` replaced by ``new``."""
    if isinstance(value, str):
        return value.replace(old, new)
    if isinstance(value, list):
        return [renamed(v, old, new) for v in value]
    if isinstance(value, dict):
        return {k: renamed(v, old, new) for k, v in value.items()}
    return value


def candidate_config(
    base: dict[str, Any], name: str, overrides: dict[str, Any], minutes: float, steps: int | None = None
) -> dict[str, Any]:
    # the base config's output folder, renamed per candidate
    config = renamed(copy.deepcopy(base), base["trainer"]["default_root_dir"], f"runs/sweep/{name}")
    for key, value in overrides.items():
        set_dotted(config, key, value)
    if steps:  # equal steps: a fixed budget and a decay that ends with it, whatever the host's speed
        config["trainer"].pop("max_time", None)
        config["trainer"]["max_steps"] = steps
        config["model"]["schedule_steps"] = steps
        return config
    seconds = int(minutes * 60)
    config["trainer"]["max_time"] = f"00:{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
    return config


def read_curve(run_dir: Path) -> tuple[list[dict[str, float]], dict[str, float]]:
    """Validation points (step, tokens, ppl) and the last training figures from the run's CSV log."""
    files = sorted(run_dir.glob("logs/version_*/metrics.csv"))
    if not files:
        raise FileNotFoundError(f"sweep: no metrics.csv under {run_dir}/logs")
    curve, last, tokens, rates = [], {}, 0.0, []
    with open(files[-1]) as fh:
        for row in csv.DictReader(fh):
            if row.get("train/tokens_seen"):
                tokens = float(row["train/tokens_seen"])
                last["tokens_seen"] = tokens
                last["step"] = float(row["step"])
            if row.get("train/tokens_per_s"):
                last["tokens_per_s"] = float(row["train/tokens_per_s"])
                rates.append(last["tokens_per_s"])
            if row.get("val/ppl"):
                curve.append({"step": float(row["step"]), "tokens": tokens, "ppl": float(row["val/ppl"])})
    if rates:  # the mean of the logged last-50-steps rates: training steps only, validation excluded
        last["mean_tokens_per_s"] = sum(rates) / len(rates)
    return curve, last


def ppl_text(summary: dict[str, Any]) -> str:
    """The best validation perplexity and its step, or a dash for a run that never validated."""
    if summary.get("best_val_ppl") is None:
        return "- (no validation)"
    return f"**{summary['best_val_ppl']:.1f}** ({summary['best_step']:,.0f})"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="training time of each candidate")
    parser.add_argument("--steps", type=int, default=None, help="train each candidate exactly this many steps")
    parser.add_argument(
        "--seed", type=int, default=None, help="initialisation and data-order seed (a replicate: runs/sweep/NAME-seedN)"
    )
    parser.add_argument("--only", default=None, help="comma-separated candidate names (default: all)")
    parser.add_argument("--val-every", type=int, default=400, help="validate every N steps")
    parser.add_argument("--output", default="results/pretrain_sweep", help="where the table and JSON go")
    args = parser.parse_args(argv)
    os.chdir(ROOT)
    names = args.only.split(",") if args.only else list(CANDIDATES)
    unknown = [n for n in names if n not in CANDIDATES]
    if unknown:
        parser.error(f"unknown candidates {unknown}; choose from {list(CANDIDATES)}")
    bases = {path: yaml.safe_load(Path(path).read_text()) for path in (BASE, CPU_1H)}
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in names:
        what, overrides = CANDIDATES[name]
        run_name = name if args.seed is None else f"{name}-seed{args.seed}"
        run_dir = Path("runs/sweep") / run_name
        summary_path = run_dir / "summary.json"
        if not summary_path.is_file():
            base = bases[CPU_1H if name.startswith("cpu1h-") else BASE]
            config = candidate_config(base, run_name, overrides, args.minutes, args.steps)
            if args.seed is not None:  # another draw of the initial weights and of the data order
                config["seed_everything"] = args.seed
                config["data"]["seed"] = args.seed
            config["trainer"]["val_check_interval"] = args.val_every
            run_dir.mkdir(parents=True, exist_ok=True)
            config_path = run_dir / "config.yaml"
            config_path.write_text(yaml.safe_dump(config, sort_keys=False))
            print(f"[sweep] {name}: {what}", flush=True)
            started = time.perf_counter()
            with open(run_dir / "stdout.log", "w") as log:
                cmd = [sys.executable, "-m", "elmo_pipeline.cli", "pretrain", "--config", str(config_path)]
                subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=True)
            curve, last = read_curve(run_dir)
            best = min(curve, key=lambda p: p["ppl"]) if curve else None
            summary = {
                "name": run_name,
                "seed": args.seed,
                "what": what,
                "overrides": overrides,
                "minutes": None if args.steps else args.minutes,
                "steps": args.steps,
                "wall_s": time.perf_counter() - started,
                "best_val_ppl": best["ppl"] if best else None,
                "best_step": best["step"] if best else None,
                "curve": curve,
                **last,
            }
            summary_path.write_text(json.dumps(summary, indent=2))
        summary = json.loads(summary_path.read_text())
        rows.append(summary)
        print(f"[sweep] {name}: best val ppl {ppl_text(summary)}", flush=True)
    budget = (
        f"{args.steps:,} steps with the decay ending there (`trainer.max_steps`, `model.schedule_steps`)"
        if args.steps
        else f"{args.minutes:g} minutes of training (`trainer.max_time`)"
    )
    lines = [
        f"Each candidate: {budget}, every core, "
        f"judged on the best WikiText-2 valid perplexity (first 3,000 sentences) of validations every "
        f"{args.val_every} steps. Base: `{CPU_1H}` for `cpu1h-*`, else `{BASE}`.",
        "",
        "| candidate | what | steps | tokens seen | mean tokens/s | best val ppl (step) |",
        "|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["best_val_ppl"] is None, r["best_val_ppl"] or 0.0)):
        lines.append(
            f"| {r['name']} | {r['what']} | {r.get('step', 0):,.0f} | {r.get('tokens_seen', 0) / 1e6:.2f}M | "
            f"{r.get('mean_tokens_per_s', r.get('tokens_per_s', 0)):,.0f} | {ppl_text(r)} |"
        )
    (out / "table.md").write_text("\n".join(lines) + "\n")
    (out / "results.json").write_text(json.dumps(rows, indent=2))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
