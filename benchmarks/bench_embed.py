"""Benchmark `elmo-pipeline embed`: sentences/s and memory, for a preset biLM with random weights.

    .venv/bin/python benchmarks/bench_embed.py --preset small --sentences 200
    .venv/bin/python benchmarks/bench_embed.py --preset original --sentences 200
    .venv/bin/python benchmarks/bench_embed.py --preset tiny --sentences 0 --repeat 3   # memory profile, 27k lines
    .venv/bin/python benchmarks/bench_embed.py --preset original --device cuda --precision bf16   # on a GPU

The sentences come from WikiText-2 valid (``tokenize_wikitext``, paragraphs cut into sentences
with ``split_sentences``), written one per line to a temporary file, and embedded with the same
``embed_file`` the command runs (all layers, float32 HDF5 output). Timing covers the embedding
only (loading the data and building the model excluded). Memory is the process's resident set
size, sampled every 50 ms: its peak, and its value when 10%, 20%, ..., 100% of the sentences are done,
which shows whether it stays flat. Random weights run exactly the computation trained ones do.
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

from elmo_pipeline.embed import embed_file
from elmo_pipeline.machine import cpu_name
from elmo_pipeline.models import BiLM, BiLMConfig
from elmo_pipeline.text.tokenize import split_sentences, tokenize_wikitext

log = logging.getLogger("bench_embed")
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "wikitext2" / "valid.txt"


def rss_mib() -> float:
    """Current resident set size of this process, MiB (Linux)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class RssSampler(threading.Thread):
    """Samples the resident set size every ``interval`` seconds and keeps the peak."""

    def __init__(self, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.interval, self.peak, self._halt = interval, rss_mib(), threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.peak = max(self.peak, rss_mib())
            time.sleep(self.interval)

    def stop(self) -> float:
        self._halt.set()
        self.join()
        self.peak = max(self.peak, rss_mib())
        return self.peak


def wikitext_sentences(path: Path, limit: int, max_tokens: int) -> list[str]:
    """Up to ``limit`` (0: all) sentences of a WikiText file, tokens joined by spaces."""
    sentences: list[str] = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            tokens = tokenize_wikitext(line)
            for piece in split_sentences(tokens, max_tokens) if tokens else []:
                sentences.append(" ".join(piece))
                if limit and len(sentences) == limit:
                    return sentences
    return sentences


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small", help="biLM preset: tiny, small or original (default: small)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="WikiText file (default: shared valid.txt)")
    parser.add_argument("--sentences", type=int, default=200, help="how many sentences (0: the whole file)")
    parser.add_argument("--max-tokens", type=int, default=60, help="cut longer sentences (split_sentences)")
    parser.add_argument("--repeat", type=int, default=1, help="embed the sentences this many times (a longer input)")
    defaults = inspect.signature(embed_file).parameters  # the command's own defaults
    parser.add_argument("--batch-size", type=int, default=defaults["batch_size"].default)
    parser.add_argument("--max-batch-tokens", type=int, default=defaults["max_batch_tokens"].default)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument(
        "--buffer-size", type=int, default=None, help="sentences sorted at a time (default: 32 batches)"
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--device", default="cpu", help="where the biLM runs: cpu (default) or cuda[:i]")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: this torch sees no CUDA GPU")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.data.is_file():
        parser.error(f"--data {args.data}: file not found (WikiText-2 valid.txt is in ../shared/data/wikitext2)")

    sentences = wikitext_sentences(args.data, args.sentences, args.max_tokens) * args.repeat
    torch.manual_seed(0)
    bilm = BiLM(BiLMConfig.preset(args.preset, vocab_size=0)).eval()
    rss_at: dict[str, float] = {}  # RSS when 10%, 20%, ... 100% of the sentences are done

    def on_batch(done: int) -> None:
        for decile in range(1, 11):
            if done * 10 >= decile * len(sentences) and f"{10 * decile}%" not in rss_at:
                rss_at[f"{10 * decile}%"] = round(rss_mib(), 1)

    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "sentences.txt"
        source.write_text("".join(s + "\n" for s in sentences), encoding="utf-8")
        before = rss_mib()
        sampler = RssSampler()
        sampler.start()
        stats = embed_file(
            bilm,
            source,
            Path(tmp) / "out.hdf5",
            layers="all",
            batch_size=args.batch_size,
            max_batch_tokens=args.max_batch_tokens,
            precision=args.precision,
            buffer_size=args.buffer_size,
            device=args.device,
            progress=False,
            on_batch=on_batch,
        )
        peak = sampler.stop()
        output_mib = (Path(tmp) / "out.hdf5").stat().st_size / 2**20

    figures = {
        "preset": args.preset,
        "parameters_without_softmax": bilm.num_parameters(include_softmax=False),
        "sentences": stats.sentences,
        "tokens": stats.tokens,
        "seconds": round(stats.seconds, 2),
        "sentences_per_s": round(stats.sentences / stats.seconds, 1),
        "tokens_per_s": round(stats.tokens / stats.seconds, 1),
        "rss_before_embed_mib": round(before, 1),
        "rss_peak_during_embed_mib": round(peak, 1),
        "rss_at_progress_mib": rss_at,
        "process_max_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "output_mib": round(output_mib, 1),
        "batch_size": args.batch_size,
        "max_batch_tokens": args.max_batch_tokens,
        "precision": args.precision,
        "buffer_size": args.buffer_size or 32 * args.batch_size,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cpu": cpu_name(),
        "device": str(device),
    }
    if device.type == "cuda":
        figures["gpu"] = torch.cuda.get_device_name(device)
        figures["gpu_max_memory_allocated_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    for key, value in figures.items():
        log.info("%-28s %s", key, value)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
