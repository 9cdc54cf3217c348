"""Peak memory of `embed` against line length, up to a 44,000-character line: flat, where BiLM.forward grows.

    .venv/bin/python benchmarks/bench_embed_memory.py --preset original --plot docs/img/embed_memory.png

Each case is one line, embedded in a fresh process so that its peak is its own: lines of 100,
1,000, 2,500 and 5,000 WikiText-2 tokens, and one line of 44,000 characters (space-separated
WikiText-2 words, the size of the longest "sentence" reported to exhaust memory in reference readers).
Two engines:

- ``embed``: ``embed_file`` with its defaults, the command's path: the line is longer than
  ``--max-batch-tokens``, so :class:`StreamingBiLM` writes it chunk by chunk into its dataset;
- ``forward``: the whole line through :meth:`BiLM.forward` at once, as ``embed`` ran before, then
  written out.

Memory is the process's resident set size, sampled every 20 ms during the embedding; reported are
the RSS once the model is loaded and the peak above it. Random weights run the same computation
as trained ones.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import torch

from elmo_pipeline.embed import _forward_batch, embed_file
from elmo_pipeline.machine import cpu_name
from elmo_pipeline.models import BiLM, BiLMConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_embed import DEFAULT_DATA, RssSampler, rss_mib  # noqa: E402

from elmo_pipeline.text.tokenize import tokenize_wikitext  # noqa: E402

log = logging.getLogger("bench_embed_memory")
TOKEN_CASES = (100, 1000, 2500, 5000)
CHARS_CASE = 44_000


def long_lines(data: Path) -> dict[str, str]:
    """The cases: name -> one line of space-separated WikiText-2 tokens."""
    words: list[str] = []
    with data.open(encoding="utf-8") as handle:
        for line in handle:
            words.extend(tokenize_wikitext(line))
            if len(words) > 20_000:
                break
    cases = {f"{n} tokens": " ".join(words[:n]) for n in TOKEN_CASES}
    text, count = "", 0
    while len(text) < CHARS_CASE:
        text += (" " if text else "") + words[count]
        count += 1
    cases[f"{CHARS_CASE} chars"] = text[:CHARS_CASE].rstrip()
    return cases


def child(engine: str, preset: str, threads: int, source: Path) -> dict:
    """Embed the one line of ``source`` with ``engine``; the RSS after loading and the peak while embedding."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    bilm = BiLM(BiLMConfig.preset(preset, vocab_size=0)).eval()
    loaded = rss_mib()
    sampler = RssSampler(interval=0.02)
    sampler.start()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        output = Path(tmp) / "out.hdf5"
        if engine == "embed":
            embed_file(bilm, source, output, device="cpu", progress=False)
        else:
            sentence = source.read_text(encoding="utf-8").split()
            with torch.inference_mode():
                (value,) = _forward_batch(bilm, [sentence], "all", "fp32")
            with h5py.File(output, "w") as out:
                out.create_dataset("0", data=value)
        seconds = time.perf_counter() - start
        output_mib = output.stat().st_size / 2**20
    peak = sampler.stop()
    return {
        "rss_loaded_mib": round(loaded, 1),
        "peak_above_loaded_mib": round(peak - loaded, 1),
        "seconds": round(seconds, 2),
        "output_mib": round(output_mib, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="original", help="biLM preset (default: original)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="WikiText file (default: shared valid.txt)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    parser.add_argument("--engines", default="embed,forward", help="comma-separated: embed, forward")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--plot", type=Path, help="draw peak memory against line length into this PNG")
    parser.add_argument("--child", nargs=2, metavar=("ENGINE", "FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("elmo_pipeline").setLevel(logging.WARNING)
    if args.child:
        print(json.dumps(child(args.child[0], args.preset, args.threads, Path(args.child[1]))))
        return 0
    if not args.data.is_file():
        parser.error(f"--data {args.data}: file not found (WikiText-2 valid.txt is in ../shared/data/wikitext2)")

    figures: dict = {
        "preset": args.preset,
        "threads": args.threads,
        "cpu": cpu_name(),
        "torch": torch.__version__,
        "cases": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name, line in long_lines(args.data).items():
            source = Path(tmp) / "line.txt"
            source.write_text(line + "\n", encoding="utf-8")
            case = {"tokens": len(line.split()), "characters": len(line)}
            for engine in args.engines.split(","):
                command = [
                    sys.executable,
                    __file__,
                    "--preset",
                    args.preset,
                    "--threads",
                    str(args.threads),
                    "--child",
                    engine,
                    str(source),
                ]
                result = subprocess.run(command, capture_output=True, text=True, check=True)
                case[engine] = json.loads(result.stdout.strip().splitlines()[-1])
                log.info(
                    "%-13s %5d tokens %6d chars  %-8s peak +%7.1f MiB (loaded %.0f MiB), %6.1f s",
                    name,
                    case["tokens"],
                    case["characters"],
                    engine,
                    case[engine]["peak_above_loaded_mib"],
                    case[engine]["rss_loaded_mib"],
                    case[engine]["seconds"],
                )
            figures["cases"][name] = case
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    if args.plot:
        plot(figures, args.engines.split(","), args.plot)
    return 0


def plot(figures: dict, engines: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = sorted(figures["cases"].values(), key=lambda c: c["tokens"])
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    labels = {"embed": "embed (streaming, chunked)", "forward": "BiLM.forward on the whole line"}
    for engine in engines:
        ax.plot(
            [c["tokens"] for c in cases],
            [c[engine]["peak_above_loaded_mib"] for c in cases],
            "o-",
            label=labels[engine],
        )
    longest = cases[-1]
    ax.annotate(
        f"{longest['characters']:,} characters",
        (longest["tokens"], longest[engines[0]]["peak_above_loaded_mib"]),
        textcoords="offset points",
        xytext=(-90, 12),
    )
    ax.set_xlabel("tokens in the line")
    ax.set_ylabel("peak RSS above the loaded model (MiB)")
    ax.set_title(f"Peak memory of one long line, {figures['preset']} biLM, fp32, {figures['threads']} thread(s)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
