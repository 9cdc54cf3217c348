"""`elmo-pipeline bench`: training throughput of a biLM preset, and how close it is to the hardware.

For each variant it runs full training steps (forward, backward, gradient clipping, optimizer
update) on batches of a fixed shape cut from real text (the bundled sample corpus, or ``--text``:
real text matters, since the fast step encodes each *distinct* token once), and reports tokens/s,
peak memory, and the achieved GFLOP/s — FLOPs of the step counted by ``torch.utils.flop_counter``
(matrix multiplies and convolutions, forward and backward) — next to the GFLOP/s of a plain square
matrix multiply measured in the same run, in the variant's dtype. The ratio says how much of the
machine the model's step uses.

    elmo-pipeline bench --preset tiny                                    # today's step against the fast ones
    elmo-pipeline bench --config configs/pretrain/tiny_1h.yaml --threads 2  # a config's biLM
    elmo-pipeline bench --preset small --device cuda --variants fast,fast-bf16
    elmo-pipeline bench --preset tiny --cells lstmp,lstm,coupled,peephole,gru,layernorm_lstm

Variants (``--variants``): ``today`` is the step pretraining ran before this fast path existed
(per-occurrence character CNN, autograd-traced clipped recurrence, sampled softmax with 512
negatives, fp32); ``plain`` is that step with the config's softmax; ``fused`` the same
without clipping, on PyTorch's fused LSTM kernel; ``fast`` the fast path (distinct tokens, the
hand-written clipped recurrence); ``-adaptive`` swaps in the adaptive softmax and ``-bf16`` adds
bf16 autocast (fp32 weights and loss).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from elmo_pipeline.data.corpus import iter_lines
from elmo_pipeline.data.lm import make_batch, sentences_from_lines
from elmo_pipeline.machine import describe_machine
from elmo_pipeline.models.bilm import BiLM
from elmo_pipeline.models.config import BiLMConfig
from elmo_pipeline.modules.cells import CELLS
from elmo_pipeline.text.vocab import Vocabulary

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
SAMPLE_TEXT = Path(__file__).resolve().parent.parent / "data" / "sample"
VARIANTS = ("today", "plain", "fused", "fast", "fast-bf16", "fast-adaptive", "fast-adaptive-bf16")


def variant_config(base: BiLMConfig, name: str) -> tuple[BiLMConfig, str]:
    """The biLM config and precision of a named variant (see the module docstring)."""
    if name == "today":  # the step pretraining ran before the fast path and the adaptive softmax existed
        return replace(base, fast=False, softmax="sampled", num_samples=512), "fp32"
    if name == "plain":
        return replace(base, fast=False), "fp32"
    if name == "fused":
        return replace(base, fast=False, cell_clip=None, proj_clip=None), "fp32"
    if not name.startswith("fast"):
        raise ValueError(f"bench: unknown variant {name!r}; choose from {list(VARIANTS)} (--variants)")
    config = replace(base, fast=True)
    if "-adaptive" in name:
        config = replace(config, softmax="adaptive")
    return config, "bf16" if name.endswith("-bf16") else "fp32"


def text_batch(
    batch_size: int, seq_len: int, vocab_size: int, text: list[str] | None = None
) -> dict[str, torch.Tensor]:
    """One batch of ``batch_size`` real sentences of exactly ``seq_len`` tokens (boundaries included).

    Sentences come from ``text`` (files; default: the bundled sample corpus), cut as pretraining
    cuts them; targets are ids in a vocabulary of the text's ``vocab_size`` most frequent words.
    """
    files = text or sorted(str(p) for p in SAMPLE_TEXT.glob("*.txt.gz"))
    sentences = [s for f in files for s in sentences_from_lines(iter_lines(f), "regex", seq_len - 2)]
    if not sentences:
        raise ValueError(f"bench: no sentences in {files} (--text)")
    vocab = Vocabulary.from_counts(Counter(w for s in sentences for w in s), max_size=vocab_size)
    full = [s for s in sentences if len(s) == seq_len - 2]
    if len(full) < batch_size:
        raise ValueError(
            f"bench: {files} has {len(full)} sentences of {seq_len - 2} tokens, fewer than --batch-size "
            f"{batch_size}; give more text (--text) or a shorter --seq-len"
        )
    stride = len(full) // batch_size  # spread over the whole text
    return make_batch(full[::stride][:batch_size], vocab)


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
    batch: dict[str, torch.Tensor],
    steps: int,
    device: torch.device,
    precision: str,
    warmup: int = 2,
) -> dict[str, float]:
    """Tokens/s, GFLOP/s and peak memory of full training steps of ``config`` on ``batch``."""
    torch.manual_seed(0)
    model = BiLM(config).to(device).train()
    opt = torch.optim.Adagrad(model.parameters(), lr=0.2, initial_accumulator_value=1.0)
    chars = batch["chars"].to(device)  # (B, T, C)
    forward_targets, backward_targets = batch["forward_targets"].to(device), batch["backward_targets"].to(device)
    batch_size, seq_len = chars.shape[:2]
    autocast = torch.autocast(device.type, dtype=DTYPES[precision], enabled=precision != "fp32")

    def step() -> None:
        with autocast:
            loss = model(chars, forward_targets, backward_targets).loss
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
    parser.add_argument("--config", default=None, help="take the biLM from this pretraining config (model.bilm)")
    parser.add_argument("--vocab-size", type=int, default=50_000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seq-len", type=int, default=40, help="tokens per sentence, boundaries included")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--variants",
        default="today,fused,fast,fast-bf16,fast-adaptive,fast-adaptive-bf16",
        help=f"comma-separated, from {','.join(VARIANTS)} (see above)",
    )
    parser.add_argument("--text", nargs="+", default=None, help="text files to cut the batch from")
    parser.add_argument(
        "--cells",
        default=None,
        help=f"compare recurrent cells instead (comma-separated, from {','.join(CELLS)}); clipping is lstmp's only",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--precision", default="fp32", choices=sorted(DTYPES), help="precision of --cells runs")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.config:
        import yaml

        bilm = (yaml.safe_load(Path(args.config).read_text()).get("model") or {}).get("bilm") or {}
        base = BiLMConfig.from_dict({**bilm, "vocab_size": args.vocab_size})
        source = args.config
    else:
        base = BiLMConfig.preset(args.preset, vocab_size=args.vocab_size)
        source = f"preset {args.preset}"
    if args.cells:
        cells = [c.strip() for c in args.cells.split(",") if c.strip()]
        unknown = [c for c in cells if c not in CELLS]
        if unknown:
            raise ValueError(f"bench: unknown cells {unknown}; choose from {list(CELLS)} (--cells)")
        variants = {c: (replace(base, cell=c), args.precision) for c in cells}
    else:
        names = [v.strip() for v in args.variants.split(",") if v.strip()]
        variants = {name: variant_config(base, name) for name in names}
    batch = text_batch(args.batch_size, args.seq_len, args.vocab_size, args.text)
    distinct = len(torch.unique(batch["chars"].flatten(0, 1), dim=0))

    peak = {p: matmul_gflops(device, DTYPES[p]) for p in sorted({p for _, p in variants.values()})}
    machine = describe_machine() if device.type == "cpu" else torch.cuda.get_device_name(device)
    print(
        f"# elmo-pipeline bench: {source}, batch {args.batch_size} x {args.seq_len} tokens of real text "
        f"({distinct} distinct), vocab {args.vocab_size}, {device} ({machine}), torch {torch.__version__}"
    )
    for p, rate in peak.items():
        print(f"# matmul 2048^3 {p}: {rate:.1f} GFLOP/s")
    variant = "cell" if args.cells else "step"
    print(
        f"| {variant} | dtype | params | tokens/s | x first | step ms | GFLOP/step | GFLOP/s | "
        "% of matmul (same dtype) | peak MiB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    results = {
        "source": source,
        "device": str(device),
        "machine": machine,
        "threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
        "distinct_tokens": distinct,
        "matmul_gflops": peak,
        "variants": {},
    }
    first = None
    for name, (config, precision) in variants.items():
        r = bench_training(config, batch, args.steps, device, precision)
        r["precision"] = precision
        r["matmul_fraction"] = r["gflops"] / peak[precision]
        first = first or r["tokens_per_s"]
        r["speedup"] = r["tokens_per_s"] / first
        results["variants"][name] = r
        print(
            f"| {name} | {precision} | {r['parameters'] / 1e6:.2f}M | {r['tokens_per_s']:.0f} | "
            f"{r['speedup']:.2f} | {r['step_ms']:.0f} | {r['gflop_per_step']:.2f} | {r['gflops']:.1f} | "
            f"{100 * r['matmul_fraction']:.1f}% | {r['peak_memory_mib']:.0f} |"
        )
        sys.stdout.flush()
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
    return 0
