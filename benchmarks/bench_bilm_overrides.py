"""What a change to the biLM's config costs per training step: the config as it is against overrides of it.

One process, the same real batches (drawn by the pretraining pipeline, as ``elmo-pipeline bench``
draws them) and the variants interleaved step by step, so that a change in the host's speed hits all
alike. Each ``--set`` adds a variant: comma-separated ``key=value`` overrides of ``model.bilm``
(values read as YAML).

    .venv/bin/python benchmarks/bench_bilm_overrides.py --config configs/pretrain/cpu_1h.yaml \
        --set adaptive_div_value=2.0 --steps 36
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import torch
import yaml

from elmo_pipeline.bench import TrainingStep, real_batches
from elmo_pipeline.machine import describe_machine
from elmo_pipeline.models.config import BiLMConfig


def parse_overrides(text: str) -> dict:
    """``"a=1,b=[2, 3]"`` -> ``{"a": 1, "b": [2, 3]}`` (commas inside brackets stay with their value)."""
    out, depth, part = {}, 0, ""
    for ch in text + ",":
        depth += ch in "[{"
        depth -= ch in "]}"
        if ch == "," and depth == 0:
            key, sep, value = part.partition("=")
            if not sep:
                raise SystemExit(f"bench_bilm_overrides: {part!r} is not key=value (--set)")
            out[key.strip()] = yaml.safe_load(value)
            part = ""
        else:
            part += ch
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/pretrain/cpu_1h.yaml")
    parser.add_argument("--set", action="append", default=[], help="key=value[,key=value] of model.bilm")
    parser.add_argument("--steps", type=int, default=36)
    parser.add_argument("--warmup", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = yaml.safe_load(Path(args.config).read_text())
    batches, vocab = real_batches(dict(config["data"]), args.warmup + args.steps)
    base = BiLMConfig.from_dict({**config["model"]["bilm"], "vocab_size": len(vocab)})
    variants = {"as configured": base}
    for text in args.set:
        variants[text] = replace(base, **parse_overrides(text))
    runs = {name: TrainingStep(cfg, args.precision, torch.device("cpu")) for name, cfg in variants.items()}
    for i, batch in enumerate(batches):
        for step in runs.values():
            step(batch, timed=i >= args.warmup)
    print(f"# {args.config}, {args.precision}, {args.steps} steps after {args.warmup}, {describe_machine()}")
    print("| variant | params | tokens/s | x as configured | final loss |")
    print("|---|---|---|---|---|")
    first = runs["as configured"]
    for name, step in runs.items():
        rate = step.tokens / step.seconds
        params = sum(p.numel() for p in step.model.parameters())
        ratio = rate / (first.tokens / first.seconds)
        print(f"| {name} | {params / 1e6:.2f}M | {rate:,.0f} | {ratio:.3f} | {step.losses[-1]:.4f} |")


if __name__ == "__main__":
    main()
