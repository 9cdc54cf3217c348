"""`embed` against a per-step reference reader, and against the machine: tokens/s, share of the matmul rate, bf16.

    .venv/bin/python benchmarks/bench_embed_speed.py --preset original --sentences 200 --threads 1 --repeat 3

In one run, on the same WikiText-2 sentences and the same random weights (they run exactly the
computation trained ones do), interleaved ``--repeat`` times, medians reported:

- ``reference``: benchmarks/reference_reader.py, a straightforward per-step reader (three thin matrix
  multiplies a step, the character CNN on every padded position), fed the same length-sorted
  batches of ``--reference-batch-size`` sentences, writing the same HDF5 layout;
- ``embed fp32`` and ``embed bf16``: ``embed_file``, the function behind ``elmo-pipeline embed``, with
  its defaults (``--precision bf16`` only where the CPU has native bf16).

The matmul rate is measured in the same process: the best of three timings of a 2048 x 2048 x 2048
float32 (and bfloat16) matrix multiply with the same threads. The share of the rate is
``tokens/s x FLOP per token / matmul rate``, where FLOP per token is the nominal cost of one token
through the whole biLM (character CNN over all 50 character positions, highway, projection, both
LSTM stacks; 204 MFLOP for ``original``) and only real tokens are counted (not ``<S>``/``</S>``).
Encoding each distinct token once is part of what ``embed`` does, so it counts toward its rate.
The layers of every engine are compared with fp32 ``embed``: the reference checks correctness, bf16
shows its error.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch

from elmo_pipeline.embed import embed_file
from elmo_pipeline.machine import cpu_name
from elmo_pipeline.models import BiLM, BiLMConfig
from elmo_pipeline.models.source import BiLMSource
from elmo_pipeline.modules.lstm import bf16_supported
from elmo_pipeline.text.batching import length_sorted_batches

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_embed import DEFAULT_DATA, wikitext_sentences  # noqa: E402
from reference_reader import ReferenceReader  # noqa: E402

log = logging.getLogger("bench_embed_speed")


def flops_per_token(config: BiLMConfig) -> int:
    """Nominal FLOP (2 per multiply-add) of one token through the biLM, without the softmax."""
    C, D, P, H, L = (
        config.max_chars_per_token,
        config.char_embed_dim,
        config.projection_dim,
        config.cell_dim,
        config.num_layers,
    )
    cnn = sum(2 * width * D * count * (C - width + 1) for width, count in config.filters)
    F = sum(count for _, count in config.filters)
    highway = config.num_highway * 2 * F * 2 * F
    projection = 2 * F * P
    lstm = 2 * L * 2 * (P * 4 * H + P * 4 * H + H * P)  # directions x layers x (input, recurrent, projection)
    return cnn + highway + projection + lstm


def matmul_gflops(dtype: torch.dtype, size: int = 2048) -> float:
    """Best of three timings of a size^3 matrix multiply, GFLOP/s."""
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    a @ b  # warm up
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(4):
            a @ b
        best = min(best, (time.perf_counter() - start) / 4)
    return 2 * size**3 / best / 1e9


def reference_embed(reader: ReferenceReader, sentences: list[list[str]], output: Path, batch_size: int) -> None:
    """The reference reader over length-sorted batches, into the same HDF5 layout as `embed`."""
    with h5py.File(output, "w") as out:
        for batch in length_sorted_batches([len(s) for s in sentences], batch_size):
            layers, _ = reader.layers([sentences[i] for i in batch])
            values = torch.stack(layers, dim=1).numpy()  # (B, L+1, n_max, 2P)
            for i, value in zip(batch, values, strict=True):
                out.create_dataset(str(i), data=value[:, : len(sentences[i])])


def compare(path: Path, baseline: Path) -> dict[str, float]:
    """Largest and mean absolute difference from the baseline's layers, and the baseline's largest and mean |value|."""
    worst = scale = 0.0
    total = magnitude = count = 0.0
    with h5py.File(path) as a, h5py.File(baseline) as b:
        for key in b:
            x, y = a[key][...], b[key][...]
            diff = np.abs(x - y)
            worst, scale = max(worst, float(diff.max())), max(scale, float(np.abs(y).max()))
            total, magnitude, count = total + float(diff.sum()), magnitude + float(np.abs(y).sum()), count + diff.size
    return {
        "max_abs_diff": worst,
        "mean_abs_diff": total / count,
        "max_abs_value": scale,
        "mean_abs_value": magnitude / count,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="original", help="biLM preset, random weights (default: original)")
    parser.add_argument(
        "--bilm", help="a trained biLM instead (export folder or OPTIONS,WEIGHTS), e.g. for bf16's error"
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="WikiText file (default: shared valid.txt)")
    parser.add_argument("--sentences", type=int, default=200, help="how many sentences (default: 200)")
    parser.add_argument("--max-tokens", type=int, default=60, help="cut longer sentences (default: 60)")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds; medians are reported")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    parser.add_argument("--reference-batch-size", type=int, default=64, help="sentences per reference batch")
    parser.add_argument("--no-reference", action="store_true", help="skip the (slow) reference reader")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("elmo_pipeline").setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    if not args.data.is_file():
        parser.error(f"--data {args.data}: file not found (WikiText-2 valid.txt is in ../shared/data/wikitext2)")

    lines = wikitext_sentences(args.data, args.sentences, args.max_tokens)
    sentences = [line.split() for line in lines]
    tokens = sum(map(len, sentences))
    torch.manual_seed(0)
    if args.bilm:
        bilm, args.preset = BiLMSource.parse(args.bilm).load().eval(), args.bilm
    else:
        bilm = BiLM(BiLMConfig.preset(args.preset, vocab_size=0)).eval()
    flop = flops_per_token(bilm.config)
    rates = {"fp32": matmul_gflops(torch.float32)}
    engines = ["embed fp32"]
    if bf16_supported(torch.device("cpu")):
        rates["bf16"] = matmul_gflops(torch.bfloat16)
        engines.append("embed bf16")
    if not args.no_reference:
        engines.insert(0, "reference")
    log.info(
        "%s, %d threads; %d sentences, %d tokens; %.1f MFLOP/token",
        args.preset,
        args.threads,
        len(lines),
        tokens,
        flop / 1e6,
    )
    log.info("matmul rate: %s", ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in rates.items()))

    seconds: dict[str, list[float]] = {engine: [] for engine in engines}
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "sentences.txt"
        source.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        outputs = {engine: Path(tmp) / f"{engine.replace(' ', '_')}.hdf5" for engine in engines}
        for round_ in range(args.repeat):
            for engine in engines:
                start = time.perf_counter()
                if engine == "reference":
                    reference_embed(ReferenceReader(bilm), sentences, outputs[engine], args.reference_batch_size)
                else:
                    precision = engine.split()[1]
                    embed_file(
                        bilm, source, outputs[engine], precision=precision, device="cpu", progress=False, overwrite=True
                    )
                seconds[engine].append(time.perf_counter() - start)
                log.info("round %d  %-11s %6.2f s", round_ + 1, engine, seconds[engine][-1])
        errors = {
            engine: compare(outputs[engine], outputs["embed fp32"]) for engine in engines if engine != "embed fp32"
        }

    figures: dict = {
        "preset": args.preset,
        "threads": args.threads,
        "sentences": len(lines),
        "tokens": tokens,
        "mflop_per_token": round(flop / 1e6, 1),
        "matmul_gflops": {k: round(v, 1) for k, v in rates.items()},
        "engines": {},
        "cpu": cpu_name(),
        "torch": torch.__version__,
    }
    fp32_rate = tokens / statistics.median(seconds["embed fp32"])
    for engine in engines:
        median = statistics.median(seconds[engine])
        rate = tokens / median
        figures["engines"][engine] = {
            "seconds_median": round(median, 2),
            "seconds_all": [round(s, 2) for s in seconds[engine]],
            "tokens_per_s": round(rate, 1),
            "share_of_fp32_matmul_rate": round(rate * flop / 1e9 / rates["fp32"], 3),
            "vs_embed_fp32": round(rate / fp32_rate, 3),
            **({"difference_from_fp32": errors[engine]} if engine in errors else {}),
        }
    log.info("%-11s %9s %8s %12s %9s  %s", "engine", "median s", "tok/s", "share fp32", "vs fp32", "max |diff| vs fp32")
    for engine, f in figures["engines"].items():
        diff = f.get("difference_from_fp32", {}).get("max_abs_diff")
        log.info(
            "%-11s %9.2f %8.1f %11.0f%% %8.2fx  %s",
            engine,
            f["seconds_median"],
            f["tokens_per_s"],
            100 * f["share_of_fp32_matmul_rate"],
            f["vs_embed_fp32"],
            "-" if diff is None else f"{diff:.2e}",
        )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
