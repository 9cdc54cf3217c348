"""`elmo-pipeline bench`: training throughput of a biLM, fp32 against bf16, on batches like the real loop's.

The batches come from the pretraining data pipeline itself (``LMDataModule``: the config's sources,
weights, tokenizer, sentence cut, shuffle buffer, length bucketing and vocabulary), so they have the
real loop's lengths, distinct tokens and softmax targets; without a config's data, the same pipeline
reads the bundled sample corpus. Every variant trains from the same initial weights on the same
batches, **interleaved step by step** (step i of every variant, then step i + 1), so that a change
in the machine's speed during the run hits every variant alike, and the losses of the variants can
be compared step for step. Each step is a full training step: forward, backward, gradient
clipping, Adam update.

It reports tokens/s (real tokens, boundaries included, over the measured steps), the ratio to the
first variant, the achieved GFLOP/s (FLOPs of a step counted by ``torch.utils.flop_counter``: matrix
multiplies and convolutions, forward and backward) next to a 2048³ matrix multiply in the variant's
dtype, and the peak memory of the process (one figure for the whole run, with every variant's model
in it, on a CPU and on a GPU alike). It also measures **the host's bf16/fp32 matrix-multiply ratio at the
recurrence's own shapes** (the four products of a step, forward and backward, at B x P x 4H x H), the
ceiling of what bf16 can give on this processor, and the loss of every variant at every step.

    elmo-pipeline bench --config configs/pretrain/cpu_1h.yaml --threads 2     # fp32 against bf16
    elmo-pipeline bench --preset tiny --variants today,fast,fast-bf16         # today's step too
    elmo-pipeline bench --preset tiny --cells lstmp,lstm,coupled,peephole,gru,layernorm_lstm

Variants (``--variants``): ``fast`` the training step in fp32 (the character CNN once per distinct
token, the clipped LSTMP's hand-written backward); ``fast-bf16`` the same with
``--trainer.precision bf16-mixed`` (bf16 matrix multiplies, fp32 element-wise work, cell state,
loss and weights); ``today`` the step before the fast path (per-occurrence character CNN,
autograd-traced recurrence, sampled softmax with 512 negatives); ``plain`` that step with the
config's softmax; ``fused`` unclipped, on PyTorch's fused LSTM kernel (cuDNN on a GPU);
``compiled`` the clipped recurrence under ``torch.compile`` (CUDA graphs on a GPU;
``compile_recurrence``); ``-adaptive`` swaps in the adaptive softmax; ``-serial`` runs the two
directions of each depth one after the other on every thread, not side by side
(``parallel_directions``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from elmo_pipeline.data.lm_datamodule import LMDataModule
from elmo_pipeline.errors import InputError
from elmo_pipeline.machine import describe_machine
from elmo_pipeline.models.bilm import BiLM
from elmo_pipeline.models.config import BiLMConfig
from elmo_pipeline.modules.cells import CELLS
from elmo_pipeline.text.vocab import Vocabulary

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
SAMPLE_TEXT = Path(__file__).resolve().parent.parent / "data" / "sample"
VARIANTS = (
    "today",
    "plain",
    "fused",
    "fast",
    "fast-bf16",
    "fast-adaptive",
    "fast-adaptive-bf16",
    "compiled",
    "compiled-bf16",
    "fast-serial",
    "fast-bf16-serial",
)


def variant_config(base: BiLMConfig, name: str) -> tuple[BiLMConfig, str]:
    """The biLM config and precision of a named variant (see the module docstring)."""
    if name == "today":  # the step pretraining ran before the fast path and the adaptive softmax existed
        return replace(base, fast=False, softmax="sampled", num_samples=512), "fp32"
    if name == "plain":
        return replace(base, fast=False), "fp32"
    if name == "fused":
        return replace(base, fast=False, cell_clip=None, proj_clip=None), "fp32"
    if name.startswith("compiled"):
        return replace(base, fast=True, compile_recurrence=True), "bf16" if name.endswith("-bf16") else "fp32"
    if not name.startswith("fast"):
        raise ValueError(f"bench: unknown variant {name!r}; choose from {list(VARIANTS)} (--variants)")
    config = replace(base, fast=True, parallel_directions=not name.endswith("-serial"))
    name = name.removesuffix("-serial")
    if "-adaptive" in name:
        config = replace(config, softmax="adaptive")
    return config, "bf16" if name.endswith("-bf16") else "fp32"


def real_batches(data: dict[str, Any], count: int) -> tuple[list[dict[str, torch.Tensor]], Vocabulary]:
    """The first ``count`` training batches, and the vocabulary, of the ``LMDataModule`` that ``data`` describes.

    ``data`` is a pretraining config's ``data:`` section, so the batches are the pretraining loop's own
    (the vocabulary built from the sources when its file is missing, as pretraining builds it).
    """
    module = LMDataModule(**data)
    batches = list(itertools.islice(iter(module.train_dataloader()), count))
    if len(batches) < count:
        raise InputError(
            f"bench: the corpus {data['sources']} gives {len(batches)} batches, fewer than {count} (--steps + --warmup)"
        )
    return batches, module.vocab


def sample_data(batch_size: int, vocab_path: Path) -> dict[str, Any]:
    """A ``data:`` section over the bundled sample corpus (for presets, and configs without data)."""
    return {
        "sources": sorted(str(p) for p in SAMPLE_TEXT.glob("*.txt.gz")),
        "vocab_path": str(vocab_path),
        "vocab_max_size": 20_000,
        "batch_size": batch_size,
        "max_tokens": 40,
        "shuffle_buffer": 2000,
    }


def batch_statistics(batches: list[dict[str, torch.Tensor]], cutoff: int | None) -> dict[str, float]:
    """Mean tokens per sentence (boundaries included), distinct-token fraction, share of targets past ``cutoff``."""
    tokens = distinct = sentences = targets = tail = 0
    for batch in batches:
        mask = (batch["chars"] > 0).any(dim=-1)  # (B, T)
        real = batch["chars"][mask]  # (N, C)
        tokens += real.shape[0]
        sentences += mask.shape[0]
        distinct += torch.unique(real, dim=0).shape[0]
        ids = batch["forward_targets"][batch["forward_targets"] >= 0]
        targets += ids.numel()
        tail += int((ids >= cutoff).sum()) if cutoff else 0
    return {
        "tokens_per_sentence": tokens / sentences,
        "distinct_fraction": distinct / tokens,
        "tail_target_fraction": tail / targets if cutoff else 0.0,
    }


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


def recurrence_matmul_ratio(config: BiLMConfig, batch_size: int, device: torch.device, seconds: float = 1.0) -> dict:
    """bf16 over fp32 matrix-multiply speed at the recurrence's shapes, the four products of one step.

    Forward ``h W_hh^T`` (B x P @ P x 4H) and ``m W_hr^T`` (B x H @ H x P); backward ``dg W_hh``
    (B x 4H @ 4H x P) and ``dh W_hr`` (B x P @ P x H). The ratio is of their summed times, interleaved.
    """
    B, P, H = batch_size, config.projection_dim, config.cell_dim
    shapes = [(B, P, 4 * H), (B, H, P), (B, 4 * H, P), (B, P, H)]
    operands = {
        dtype: [
            (torch.randn(m, k, device=device).to(dtype), torch.randn(k, n, device=device).to(dtype))
            for m, k, n in shapes
        ]
        for dtype in (torch.float32, torch.bfloat16)
    }
    elapsed = {torch.float32: 0.0, torch.bfloat16: 0.0}
    flops = sum(2 * m * k * n for m, k, n in shapes)
    rounds, begin = 0, time.perf_counter()
    while time.perf_counter() - begin < 2 * seconds or rounds < 3:
        for dtype, pairs in operands.items():
            _sync(device)
            start = time.perf_counter()
            for _ in range(10):
                for a, b in pairs:
                    a @ b
            _sync(device)
            elapsed[dtype] += time.perf_counter() - start
        rounds += 1
    gflops = {d: 10 * rounds * flops / t / 1e9 for d, t in elapsed.items()}
    return {
        "fp32_gflops": gflops[torch.float32],
        "bf16_gflops": gflops[torch.bfloat16],
        "ratio": gflops[torch.bfloat16] / gflops[torch.float32],
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


class TrainingStep:
    """One variant's model and optimizer; :meth:`__call__` runs one full training step on a batch."""

    def __init__(self, config: BiLMConfig, precision: str, device: torch.device, seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.model = BiLM(config).to(device).train()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=2e-3)
        self.device, self.precision = device, precision
        self.seconds, self.tokens, self.losses = 0.0, 0, []
        self.rng = torch.get_rng_state()  # each variant draws its own dropout masks: the same ones as the others

    def __call__(self, batch: dict[str, torch.Tensor], timed: bool = True) -> float:
        chars = batch["chars"].to(self.device)  # (B, T, C)
        forward_targets = batch["forward_targets"].to(self.device)  # (B, T)
        backward_targets = batch["backward_targets"].to(self.device)  # (B, T)
        torch.set_rng_state(self.rng)
        _sync(self.device)
        start = time.perf_counter()
        with torch.autocast(self.device.type, dtype=DTYPES[self.precision], enabled=self.precision != "fp32"):
            loss = self.model(chars, forward_targets, backward_targets).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        _sync(self.device)
        self.rng = torch.get_rng_state()
        if timed:
            self.seconds += time.perf_counter() - start
            self.tokens += int(batch["num_tokens"])
        self.losses.append(float(loss.detach()))
        return self.losses[-1]

    @staticmethod
    def count_flops(config: BiLMConfig, precision: str, device: torch.device, batch: dict[str, torch.Tensor]) -> float:
        """FLOPs of one step, on a model of its own (so that the compared runs stay in step).

        The directions run one after the other here: the counter sees only the calling thread's work,
        and side by side the same products run on two others.
        """
        probe = TrainingStep(replace(config, parallel_directions=False), precision, device)
        with FlopCounterMode(display=False) as counter:
            probe(batch, timed=False)
        return counter.get_total_flops()


def run(args: argparse.Namespace) -> int:
    """Run the benchmark that ``args`` describe (the options of ``elmo-pipeline bench``: ``commands/bench.py``)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    data: dict[str, Any] = {}
    if args.config:
        import yaml

        loaded = yaml.safe_load(Path(args.config).read_text()) or {}
        data = dict(loaded.get("data") or {})
        bilm = (loaded.get("model") or {}).get("bilm") or {}
        source = args.config
    else:
        bilm, source = {}, f"preset {args.preset}"
    batch_size = args.batch_size or data.get("batch_size", 64)
    from_sample = args.sample_data or not data.get("sources")
    with tempfile.TemporaryDirectory() as tmp:  # the sample corpus's vocabulary lives only for this run
        data = sample_data(batch_size, Path(tmp) / "vocab.txt") if from_sample else {**data, "batch_size": batch_size}
        batches, vocab = real_batches(data, args.warmup + args.steps)
    base = (
        BiLMConfig.from_dict({**bilm, "vocab_size": len(vocab)})
        if args.config
        else BiLMConfig.preset(args.preset, vocab_size=len(vocab))
    )
    if args.cells:
        cells = [c.strip() for c in args.cells.split(",") if c.strip()]
        unknown = [c for c in cells if c not in CELLS]
        if unknown:
            raise InputError(f"bench: unknown cells {unknown}; choose from {list(CELLS)} (--cells)")
        variants = {c: (replace(base, cell=c), args.precision) for c in cells}
    else:
        names = [v.strip() for v in args.variants.split(",") if v.strip()]
        variants = {name: variant_config(base, name) for name in names}
    stats = batch_statistics(batches, base.adaptive_cutoffs[0] if base.softmax == "adaptive" else None)
    precisions = sorted({p for _, p in variants.values()})
    peak = {p: matmul_gflops(device, DTYPES[p]) for p in precisions}
    ratio = recurrence_matmul_ratio(base, batch_size, device)
    target = 1.8 if ratio["ratio"] >= 3 else 0.6 * ratio["ratio"]
    machine = describe_machine() if device.type == "cpu" else torch.cuda.get_device_name(device)
    print(
        f"# elmo-pipeline bench: {source}, {args.steps} batches of up to {batch_size} sentences from "
        f"{'the sample corpus' if from_sample else 'the config corpus'} "
        f"({stats['tokens_per_sentence']:.1f} tokens a sentence, {100 * stats['distinct_fraction']:.1f}% distinct, "
        f"{100 * stats['tail_target_fraction']:.1f}% adaptive-softmax tail targets), vocab {len(vocab)}, "
        f"{device} ({machine}), {torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    for p, rate in peak.items():
        print(f"# matmul 2048^3 {p}: {rate:.1f} GFLOP/s")
    print(
        f"# matmul at the recurrence's shapes (B {batch_size}, P {base.projection_dim}, H {base.cell_dim}): "
        f"fp32 {ratio['fp32_gflops']:.1f}, bf16 {ratio['bf16_gflops']:.1f} GFLOP/s, ratio {ratio['ratio']:.2f}; "
        f"the bf16 step's target: {target:.2f}x the fp32 step (1.8, or 60% of the ratio where it is under 3)"
    )
    runners = {name: TrainingStep(config, precision, device) for name, (config, precision) in variants.items()}
    flops = {name: TrainingStep.count_flops(*variants[name], device, batches[0]) for name in runners}
    for i, batch in enumerate(batches):  # interleaved: step i of every variant, then step i + 1
        for runner in runners.values():
            runner(batch, timed=i >= args.warmup)
    variant = "cell" if args.cells else "step"
    print(
        f"| {variant} | dtype | params | tokens/s | x first | step ms | GFLOP/step | GFLOP/s | "
        "% of matmul (same dtype) | final loss | peak MiB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    results: dict[str, Any] = {
        "source": source,
        "device": str(device),
        "machine": machine,
        "threads": torch.get_num_threads(),
        "batch_size": batch_size,
        "steps": args.steps,
        "batches": stats,
        "matmul_gflops": peak,
        "recurrence_matmul": ratio,
        "bf16_target": target,
        "variants": {},
    }
    first = None
    for name, runner in runners.items():
        tokens_per_s = runner.tokens / runner.seconds
        first = first or tokens_per_s
        precision = runner.precision
        step_s = runner.seconds / args.steps
        r = {
            "precision": precision,
            "parameters": sum(p.numel() for p in runner.model.parameters()),
            "tokens_per_s": tokens_per_s,
            "speedup": tokens_per_s / first,
            "step_ms": 1000 * step_s,
            "gflop_per_step": flops[name] / 1e9,
            "gflops": flops[name] / step_s / 1e9,
            "peak_memory_mib": _peak_memory_mib(device),
            "losses": runner.losses,
        }
        r["matmul_fraction"] = r["gflops"] / peak[precision]
        results["variants"][name] = r
        print(
            f"| {name} | {precision} | {r['parameters'] / 1e6:.2f}M | {tokens_per_s:.0f} | {r['speedup']:.2f} | "
            f"{r['step_ms']:.0f} | {r['gflop_per_step']:.2f} | {r['gflops']:.1f} | "
            f"{100 * r['matmul_fraction']:.1f}% | {runner.losses[-1]:.3f} | {r['peak_memory_mib']:.0f} |"
        )
    names = list(runners)
    if len(names) > 1:
        reference = runners[names[0]].losses
        for name in names[1:]:
            gap = max(abs(a - b) / a for a, b in zip(reference, runners[name].losses, strict=True))
            results["variants"][name]["max_relative_loss_gap"] = gap
            print(
                f"# loss of {name} against {names[0]}, step for step over {len(reference)} steps: "
                f"max relative gap {100 * gap:.2f}%"
            )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
    return 0
