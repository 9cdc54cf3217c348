"""The training step with the recurrence's loops in Python or in TorchScript, directions serial or side by side.

One process, the same batches (drawn by the pretraining pipeline, as ``elmo-pipeline bench`` draws
them) and the same initial weights for every variant, the variants interleaved step by step so that
a change in the host's speed hits all alike. The Python variant runs the same source as the
TorchScript one, uncompiled (``modules/lstm.py``'s ``_scripted`` replaced by the identity for its
steps); it is how the fast path ran before the loops were compiled.

    .venv/bin/python benchmarks/bench_recurrence_paths.py --config configs/pretrain/cpu_1h.yaml --steps 36
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import torch
import yaml

from elmo_pipeline.bench import TrainingStep, real_batches
from elmo_pipeline.machine import describe_machine
from elmo_pipeline.models.config import BiLMConfig
from elmo_pipeline.modules import lstm

VARIANTS = {  # name: (loops in TorchScript, directions side by side)
    "python-serial": (False, False),
    "script-serial": (True, False),
    "script-side-by-side": (True, True),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/pretrain/cpu_1h.yaml")
    parser.add_argument("--steps", type=int, default=36)
    parser.add_argument("--warmup", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precisions", default="bf16,fp32")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = yaml.safe_load(Path(args.config).read_text())
    batches, vocab = real_batches(dict(config["data"]), args.warmup + args.steps)
    base = BiLMConfig.from_dict({**config["model"]["bilm"], "vocab_size": len(vocab)})
    compiled = lstm._scripted
    runs = {
        (name, precision): TrainingStep(replace(base, parallel_directions=side), precision, torch.device("cpu"))
        for precision in args.precisions.split(",")
        for name, (_, side) in VARIANTS.items()
    }
    for i, batch in enumerate(batches):
        for (name, _), step in runs.items():
            lstm._scripted = compiled if VARIANTS[name][0] else (lambda function: function)
            try:
                step(batch, timed=i >= args.warmup)
            finally:
                lstm._scripted = compiled
    print(f"# {args.config}, {args.steps} steps after {args.warmup}, {describe_machine()}, {args.threads} threads")
    print("| precision | variant | tokens/s | x python-serial | final loss |")
    print("|---|---|---|---|---|")
    table = {}
    for (name, precision), step in runs.items():
        rate = step.tokens / step.seconds
        first = runs[("python-serial", precision)]
        ratio = rate / (first.tokens / first.seconds)
        table[f"{precision}/{name}"] = {"tokens_per_s": rate, "ratio": ratio, "losses": step.losses}
        print(f"| {precision} | {name} | {rate:,.0f} | {ratio:.2f} | {step.losses[-1]:.4f} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": describe_machine(), "threads": args.threads, **table}, indent=1))


if __name__ == "__main__":
    main()
