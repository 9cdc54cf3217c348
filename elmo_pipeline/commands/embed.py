"""``elmo-pipeline embed``: the command's arguments, and its two paths (one HDF5 file, or shards).

    elmo-pipeline embed --input sentences.txt --output elmo.hdf5 --bilm runs/tiny/export
    elmo-pipeline embed --input a.txt b.txt --output shards/ --bilm runs/tiny/export --shard-lines 100000

The work is done below: :func:`elmo_pipeline.embed.embed_file` writes one file,
:func:`elmo_pipeline.embed_shards.embed_sharded` the shards (Lightning loads only on that path).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from elmo_pipeline.embed import DiskFullWhileWriting, check_output, embed_file
from elmo_pipeline.embed_shards import embed_sharded
from elmo_pipeline.errors import UserError
from elmo_pipeline.files import terminate_as_interrupt
from elmo_pipeline.models.bilm import BiLM
from elmo_pipeline.models.source import BILM_HELP, BiLMSource
from elmo_pipeline.models.streaming import LAYER_MODES, PRECISIONS

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="elmo-pipeline embed",
        description="Embed a file of sentences (one per line, tokens separated by spaces) with a biLM into an "
        "HDF5 file in bilm-tf's layout: one float32 dataset per sentence, keyed by its 0-based line number.",
    )
    parser.add_argument(
        "--input",
        required=True,
        type=Path,
        nargs="+",
        help="text file(s), one tokenised sentence per line (plain or .gz); several only with --shard-lines",
    )
    parser.add_argument(
        "--output", required=True, type=Path, help="HDF5 file to write (with --shard-lines: a folder of shards)"
    )
    parser.add_argument(
        "--shard-lines",
        type=int,
        help="write one HDF5 file per this many input lines into the --output folder, with a manifest; "
        "rerunning the command resumes (docs/embeddings.md, 'Many processes and nodes')",
    )
    parser.add_argument(
        "--devices", type=int, default=1, help="with --shard-lines: processes on this machine (default: 1)"
    )
    parser.add_argument("--num-nodes", type=int, default=1, help="with --shard-lines: machines (default: 1)")
    parser.add_argument(
        "--bilm",
        help=BILM_HELP,
    )
    parser.add_argument("--options", type=Path, help="published ELMo options.json (with --weights)")
    parser.add_argument("--weights", type=Path, help="published ELMo weights.hdf5 (with --options)")
    parser.add_argument(
        "--layers",
        choices=LAYER_MODES,
        default="all",
        help="all: (layers, tokens, dim) per sentence; average or top: (tokens, dim) (default: all)",
    )
    parser.add_argument("--batch-size", type=int, default=256, help="sentences per biLM call (default: 256)")
    parser.add_argument(
        "--max-batch-tokens",
        type=int,
        default=8192,
        help="padded tokens per biLM call; a longer sentence is written chunk by chunk (default: 8192)",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="bf16: matrix multiplies in bfloat16, about 2x faster on CPUs with AVX-512 BF16, "
        "layers within about 0.5%% of fp32 on average (docs/embeddings.md) (default: fp32)",
    )
    parser.add_argument(
        "--chunk-tokens",
        type=int,
        default=1024,
        help="row-steps per chunk of the recurrence; bounds its memory (default: 1024)",
    )
    parser.add_argument(
        "--buffer-size",
        type=int,
        default=None,
        help="sentences read ahead and sorted by length; bounds memory (default: 32 batches)",
    )
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:N (default: auto)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.bilm is not None and (args.options is not None or args.weights is not None):
        parser.error("pass either --bilm or --options with --weights, not both")
    if args.bilm is None and (args.options is None or args.weights is None):
        parser.error("pass --bilm EXPORT_DIR, or both --options options.json and --weights weights.hdf5")
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    if args.shard_lines is None and len(args.input) > 1:
        parser.error("several --input files need --shard-lines (one file per shard, numbered across the inputs)")
    if args.shard_lines is None and (args.devices != 1 or args.num_nodes != 1):
        parser.error("--devices and --num-nodes need --shard-lines")
    return _reporting_errors(_single_file if args.shard_lines is None else _sharded, args)


def _reporting_errors(job: Callable[[argparse.Namespace, BiLM], object], args: argparse.Namespace) -> int:
    """Load the biLM and run ``job``: a user's error is one line (exit 1); SIGTERM cleans up as Ctrl-C does."""
    try:
        if args.shard_lines is None:  # before the model loads: fail fast
            check_output(args.input[0], args.output, args.overwrite)
        bilm = BiLMSource.parse(args.bilm if args.bilm is not None else (args.options, args.weights)).load()
        with terminate_as_interrupt():  # no .partial left behind
            job(args, bilm)
    except DiskFullWhileWriting as err:
        sys.stderr.write(f"elmo-pipeline embed: error: {err}\n")
        sys.stderr.flush()
        os._exit(1)  # HDF5 would crash closing the file whose writes failed (already removed)
    except (UserError, ValueError, OSError) as err:
        sys.stderr.write(f"elmo-pipeline embed: error: {err}\n")
        return 1
    return 0


def _run_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options that both paths take the same way, from the command line."""
    return {
        "layers": args.layers,
        "batch_size": args.batch_size,
        "max_batch_tokens": args.max_batch_tokens,
        "device": args.device,
        "precision": args.precision,
        "chunk_tokens": args.chunk_tokens,
        "buffer_size": args.buffer_size,
        "progress": not args.no_progress,
    }


def _single_file(args: argparse.Namespace, bilm: BiLM) -> None:
    embed_file(bilm, args.input[0], args.output, overwrite=args.overwrite, **_run_options(args))


def _sharded(args: argparse.Namespace, bilm: BiLM) -> None:
    shards = embed_sharded(
        bilm,
        list(args.input),
        args.output,
        args.shard_lines,
        devices=args.devices,
        num_nodes=args.num_nodes,
        **_run_options(args),
    )
    log.info("%s: this process is done; %d shard(s) finished so far", args.output, len(shards))


if __name__ == "__main__":
    raise SystemExit(main())
