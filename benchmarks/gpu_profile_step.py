"""Where one training step of a config's biLM spends its GPU (or CPU) time, per `bench` variant.

    python benchmarks/gpu_profile_step.py --config configs/pretrain/original.yaml --variants fast,fast-bf16,fused
    python benchmarks/gpu_profile_step.py --config CONFIG --sample-data   # the bundled sample corpus
    python benchmarks/gpu_profile_step.py --device cpu --threads 2 --config configs/pretrain/cpu_1h.yaml \
        --variants fast,fast-bf16 --steps 7   # on the CPU: operators by self CPU time

For each variant it runs `elmo-pipeline bench`'s own step (``bench.TrainingStep``) on the config's own
batches (the bundled sample corpus with ``--sample-data``, or when the config names no sources): a
few warm-up steps, then a few steps under ``torch.profiler``. It prints, per step, the wall time, the
GPU kernels' summed time (and so the fraction of the wall time the GPU was busy), the kernel
launches, and the kernels that took the most time. The profiler slows the host's launches, so the
busy fraction it shows is a low bound; time the step without it with `elmo-pipeline bench`.

With ``--device cpu`` the same steps run on the CPU, and the list is of operators (autograd Functions
such as the recurrence's, and aten ops) by their self CPU time, summed over threads' wall time as the
profiler counts it: where the step's time goes, and which parts a precision speeds up.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
import yaml
from torch.profiler import ProfilerActivity, profile

from elmo_pipeline.bench import TrainingStep, real_batches, sample_data, variant_config
from elmo_pipeline.machine import describe_machine
from elmo_pipeline.models import BiLMConfig


def profiled_steps(step: TrainingStep, batches: list[dict], warmup: int, activities: list) -> tuple:
    """Run ``warmup`` batches, then the rest under ``torch.profiler``.

    Returns the profiler, the wall seconds a profiled step (the GPU's queue drained), and the profiled batches.
    """
    for batch in batches[:warmup]:
        step(batch, timed=False)
    timed = batches[warmup:]
    cuda = step.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    with profile(activities=activities) as prof:
        for batch in timed:
            step(batch, timed=False)
        if cuda:
            torch.cuda.synchronize()
    return prof, (time.perf_counter() - start) / len(timed), timed


def profile_cpu_variant(step: TrainingStep, batches: list[dict], warmup: int, top: int) -> dict:
    """Profile ``step`` on the CPU: wall ms a step, and the ``top`` operators by self CPU time a step."""
    prof, wall, timed = profiled_steps(step, batches, warmup, [ProfilerActivity.CPU])
    ranked = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:top]
    return {
        "wall_ms": 1e3 * wall,
        "tokens_per_step": sum(int(b["num_tokens"]) for b in timed) / len(timed),
        "top": [
            {
                "op": e.key[:90],
                "ms_per_step": e.self_cpu_time_total / 1e3 / len(timed),
                "calls_per_step": e.count / len(timed),
            }
            for e in ranked
        ],
    }


def profile_variant(step: TrainingStep, batches: list[dict], warmup: int, top: int) -> dict:
    """Profile ``step`` on ``batches`` after ``warmup`` of them.

    Args:
        step: one variant's model and optimizer.
        batches: the warm-up batches, then the profiled ones.
        warmup: how many batches run before the profiler starts.
        top: how many kernels to list, by their summed time.

    Returns:
        Per step: wall and GPU-busy milliseconds, the busy fraction, kernel launches, real tokens, and the
        ``top`` kernels with their milliseconds and calls.
    """
    prof, wall, timed = profiled_steps(step, batches, warmup, [ProfilerActivity.CPU, ProfilerActivity.CUDA])
    kernels: dict[str, list[float]] = defaultdict(list)
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA and not event.is_user_annotation:  # kernels only
            kernels[event.name].append(event.device_time)  # microseconds
    busy = sum(sum(times) for times in kernels.values()) / 1e6 / len(timed)
    launches = sum(len(times) for times in kernels.values()) / len(timed)
    ranked = sorted(kernels.items(), key=lambda item: -sum(item[1]))[:top]
    return {
        "wall_ms": 1e3 * wall,
        "gpu_busy_ms": 1e3 * busy,
        "gpu_busy_fraction": busy / wall,
        "kernels_per_step": launches,
        "tokens_per_step": sum(int(b["num_tokens"]) for b in timed) / len(timed),
        "top": [
            {"kernel": name[:90], "ms_per_step": sum(t) / 1e3 / len(timed), "calls_per_step": len(t) / len(timed)}
            for name, t in ranked
        ],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/pretrain/original.yaml")
    parser.add_argument("--variants", default="fast,fast-bf16,fused")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--sample-data", action="store_true", help="the bundled sample corpus, not the config's")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (CPU)")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_profile_step: needs a CUDA GPU (or --device cpu)", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    loaded = yaml.safe_load(Path(args.config).read_text()) or {}
    bilm = (loaded.get("model") or {}).get("bilm") or {}
    data = dict(loaded.get("data") or {})
    batch_size = data.get("batch_size", 64)
    with tempfile.TemporaryDirectory() as tmp:  # the sample corpus's vocabulary lives only for this run
        if args.sample_data or not data.get("sources"):
            data = sample_data(batch_size, Path(tmp) / "vocab.txt")
        batches, vocab = real_batches(data, args.warmup + args.steps)
    base = BiLMConfig.from_dict({**bilm, "vocab_size": len(vocab)})
    machine = torch.cuda.get_device_name(device) if device.type == "cuda" else describe_machine()
    found = {"config": args.config, "device": machine, "threads": torch.get_num_threads(), "torch": torch.__version__}
    for name in [v.strip() for v in args.variants.split(",") if v.strip()]:
        config, precision = variant_config(base, name)
        step = TrainingStep(config, precision, device)
        if device.type == "cpu":
            result = found[name] = profile_cpu_variant(step, batches, args.warmup, args.top)
            print(
                f"\n## {name} on {machine}, {found['threads']} threads: {result['wall_ms']:.1f} ms a step under the "
                f"profiler, {result['tokens_per_step']:.0f} tokens a step"
            )
            for row in result["top"]:
                print(f"  {row['ms_per_step']:8.2f} ms  {row['calls_per_step']:7.0f} x  {row['op']}")
            continue
        result = profile_variant(step, batches, args.warmup, args.top)
        found[name] = result
        print(
            f"\n## {name}: {result['wall_ms']:.1f} ms a step, GPU busy {result['gpu_busy_ms']:.1f} ms "
            f"({100 * result['gpu_busy_fraction']:.0f}%), {result['kernels_per_step']:.0f} kernels a step, "
            f"{result['tokens_per_step']:.0f} tokens a step"
        )
        for row in result["top"]:
            print(f"  {row['ms_per_step']:8.2f} ms  {row['calls_per_step']:7.0f} x  {row['kernel']}")
    if args.json:
        args.json.write_text(json.dumps(found, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
