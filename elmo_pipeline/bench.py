"""`elmo-pipeline bench`: training throughput of a biLM preset, and how close it is to the hardware.

For each variant it runs full training steps (forward, backward, Adagrad update) on synthetic
batches of a fixed shape and reports tokens/s, peak memory, and the achieved GFLOP/s — FLOPs of the
step counted by ``torch.utils.flop_counter`` (matrix multiplies and convolutions, forward and
backward) — next to the GFLOP/s of a plain square matrix multiply measured on the same machine in
the same dtype. The ratio says how much of the machine the model's step uses.

    elmo-pipeline bench --preset tiny --batch-size 64 --seq-len 40 --steps 20
    elmo-pipeline bench --preset small --device cuda --precision bf16
    elmo-pipeline bench --preset tiny --cells lstmp,lstm,coupled,peephole,gru,layernorm_lstm
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from dataclasses import replace

import torch
from torch.utils.flop_counter import FlopCounterMode

from elmo_pipeline.models.bilm import BiLM
from elmo_pipeline.models.config import BiLMConfig
from elmo_pipeline.modules.cells import CELLS

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def matmul_gflops(device: torch.device, dtype: torch.dtype, n: int = 2048, seconds: float = 2.0) -> float:
    """Sustained GFLOP/s of an n x n matrix multiply."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b  # warm-up
    _sync(device)
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        reps += 1
        if reps % 4 == 0:
            _sync(device)
    _sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def bench_training(
    config: BiLMConfig,
    batch_size: int,
    seq_len: int,
    steps: int,
    device: torch.device,
    precision: str,
    warmup: int = 2,
) -> dict[str, float]:
    """Tokens/s, GFLOP/s and peak memory of full training steps of ``config``."""
    torch.manual_seed(0)
    model = BiLM(config).to(device).train()
    opt = torch.optim.Adagrad(model.parameters(), lr=0.2, initial_accumulator_value=1.0)
    chars = torch.randint(1, config.num_chars, (batch_size, seq_len, config.max_chars_per_token), device=device)
    targets = torch.randint(0, config.vocab_size, (batch_size, seq_len), device=device)
    autocast = torch.autocast(device.type, dtype=DTYPES[precision], enabled=precision != "fp32")

    def step() -> None:
        with autocast:
            loss = model(chars, targets, targets).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    with FlopCounterMode(display=False) as counter:
        step()
    flops_per_step = counter.get_total_flops()
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    elapsed = time.perf_counter() - start
    tokens = batch_size * seq_len * steps
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else _peak_rss_mib()
    return {
        "tokens_per_s": tokens / elapsed,
        "step_ms": 1000 * elapsed / steps,
        "gflop_per_step": flops_per_step / 1e9,
        "gflops": flops_per_step * steps / elapsed / 1e9,
        "peak_memory_mib": peak,
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="elmo-pipeline bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="tiny", choices=["tiny", "small", "original"])
    parser.add_argument("--vocab-size", type=int, default=50_000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seq-len", type=int, default=40, help="tokens per sentence, boundaries included")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="fp32", choices=sorted(DTYPES))
    parser.add_argument(
        "--lstm",
        default="both",
        choices=["clipped", "fused", "both"],
        help="clipped: the step-by-step recurrence with clipping; fused: no clipping, torch.lstm",
    )
    parser.add_argument(
        "--cells",
        default=None,
        help=f"compare recurrent cells instead (comma-separated, from {','.join(CELLS)}); clipping is lstmp's only",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    base = BiLMConfig.preset(args.preset, vocab_size=args.vocab_size)
    variants = {"clipped": base, "fused": replace(base, cell_clip=None, proj_clip=None)}
    chosen = list(variants) if args.lstm == "both" else [args.lstm]
    if args.cells:
        cells = [c.strip() for c in args.cells.split(",") if c.strip()]
        unknown = [c for c in cells if c not in CELLS]
        if unknown:
            raise ValueError(f"bench: unknown cells {unknown}; choose from {list(CELLS)} (--cells)")
        variants = {c: replace(base, cell=c) for c in cells}
        chosen = cells

    peak_gflops = matmul_gflops(device, DTYPES[args.precision])
    machine = (
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
        if device.type == "cpu"
        else torch.cuda.get_device_name(device)
    )
    print(
        f"# elmo-pipeline bench: preset {args.preset}, batch {args.batch_size} x {args.seq_len} tokens, "
        f"vocab {args.vocab_size}, {args.precision}, {device} ({machine}), torch {torch.__version__}"
    )
    print(f"# matmul 2048^3 {args.precision}: {peak_gflops:.1f} GFLOP/s")
    variant = "cell" if args.cells else "lstm"
    print(f"| {variant} | params | tokens/s | step ms | GFLOP/step | GFLOP/s | % of matmul | peak MiB |")
    print("|---|---|---|---|---|---|---|---|")
    results = {
        "preset": args.preset,
        "device": str(device),
        "machine": machine,
        "precision": args.precision,
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
        "matmul_gflops": peak_gflops,
        "variants": {},
    }
    for name in chosen:
        r = bench_training(variants[name], args.batch_size, args.seq_len, args.steps, device, args.precision)
        results["variants"][name] = r
        print(
            f"| {name} | {r['parameters'] / 1e6:.2f}M | {r['tokens_per_s']:.0f} | {r['step_ms']:.0f} | "
            f"{r['gflop_per_step']:.2f} | {r['gflops']:.1f} | {100 * r['gflops'] / peak_gflops:.1f}% | "
            f"{r['peak_memory_mib']:.0f} |"
        )
        sys.stdout.flush()
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
    return 0
