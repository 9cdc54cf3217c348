"""``elmo-pipeline embed``: a file of sentences -> an HDF5 file of biLM layers in bilm-tf's dump layout.

    elmo-pipeline embed --input sentences.txt --output elmo.hdf5 --bilm runs/tiny/export
    elmo-pipeline embed --input sentences.txt --output elmo.hdf5 --options options.json --weights weights.hdf5

The input holds one sentence per line, tokens separated by spaces. The output holds one float32
dataset per sentence, keyed by the sentence's 0-based line number as a string (``"0"``, ``"1"``, ...),
shaped (L + 1, tokens, 2P) for ``--layers all`` (as bilm-tf's ``dump_bilm_embeddings``) and
(tokens, 2P) for ``average`` or ``top``; sentence boundaries are added for the biLM and left out of
the output.

Memory stays flat however long the input and however long a line: the file is streamed,
``--buffer-size`` sentences at a time are sorted by length and cut into batches of at most
``--batch-size`` sentences and ``--max-batch-tokens`` tokens, and every batch is written out before
the next is read. biLMs of LSTMP cells (every published ELMo, every preset) run on
:class:`~elmo_pipeline.models.streaming.StreamingBiLM`: each distinct token is encoded once, the
recurrence runs packed and in chunks of ``--chunk-tokens`` row-steps with its state carried
exactly, and a sentence longer than ``--max-batch-tokens`` is written chunk by chunk straight into
its HDF5 dataset, so a 5,000-token line needs no more memory than a short one. ``--precision bf16``
runs the matrix multiplies in bfloat16 (the cell state stays float32) where the CPU or GPU
supports it. Other cells run :meth:`BiLM.forward` per batch.

A first pass over the file checks every line (empty lines and bytes that are not UTF-8 are errors
naming the line) and counts them for the progress bar, so a bad line
stops the run before any work; the output appears only when the run succeeds.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
from tqdm import tqdm

from elmo_pipeline.errors import InputError, WouldOverwriteError
from elmo_pipeline.models.bilm import BiLM
from elmo_pipeline.models.elmo import bilm_layers
from elmo_pipeline.models.source import BILM_HELP, BiLMSource
from elmo_pipeline.models.streaming import LAYER_MODES, PRECISIONS, LayerMode, Precision, StreamingBiLM
from elmo_pipeline.modules.lstm import bf16_supported
from elmo_pipeline.text.batching import length_sorted_batches
from elmo_pipeline.text.chars import is_truncated

log = logging.getLogger(__name__)


class InputFileError(InputError):
    """A line of the input file cannot be embedded; the message names the file and the line."""


@dataclass
class EmbedStats:
    """What a run did: sentences and tokens embedded, seconds spent (loading the model excluded)."""

    sentences: int
    tokens: int
    seconds: float
    truncated_tokens: int = 0


def _decode(raw: bytes, path: Path, number: int) -> list[str]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputFileError(
            f"{path}:{number}: the line is not valid UTF-8 (bad byte at offset {err.start} of the line); "
            "re-encode the file as UTF-8, e.g. `iconv -f latin1 -t utf-8`"
        ) from None
    tokens = text.split()
    if not tokens:
        raise InputFileError(
            f"{path}:{number}: empty line; every line must hold one sentence, tokens separated by spaces "
            "(remove blank lines first, e.g. `grep -v '^[[:space:]]*$'`)"
        )
    return tokens


def check_input(path: str | Path) -> int:
    """Check every line of ``path`` (streamed) and return how many sentences it holds."""
    path = Path(path)
    count = 0
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: input file not found (--input)") from None
    with handle:
        for count, raw in enumerate(handle, start=1):
            _decode(raw, path, count)
    if count == 0:
        raise InputFileError(f"{path}: the input file is empty (--input)")
    return count


def check_output(input_path: str | Path, output_path: str | Path, overwrite: bool = False) -> None:
    """Refuse an output that would destroy a file: the input itself, a folder, or (unasked) an existing file."""
    input_path, output_path = Path(input_path), Path(output_path)
    if output_path.is_dir():
        raise InputError(f"--output {output_path} is a folder; give a file path, e.g. {output_path / 'elmo.hdf5'}")
    if output_path.exists():
        if input_path.exists() and output_path.resolve() == input_path.resolve():
            raise WouldOverwriteError(
                f"--output {output_path} is the input file; writing the embeddings there would destroy the text. "
                "Give another --output"
            )
        if not overwrite:
            raise WouldOverwriteError(
                f"--output {output_path} exists; pass --overwrite to replace it, or give another --output"
            )


def read_sentences(path: str | Path) -> Iterator[tuple[int, list[str]]]:
    """Stream ``(0-based line number, tokens)`` from a file of one sentence per line."""
    path = Path(path)
    with path.open("rb") as handle:  # bytes: lines end at b"\n" only, as in check_input
        for index, raw in enumerate(handle):
            yield index, _decode(raw, path, index + 1)


def _buffers(items: Iterator[tuple[int, list[str]]], size: int) -> Iterator[list[tuple[int, list[str]]]]:
    buffer: list[tuple[int, list[str]]] = []
    for item in items:
        buffer.append(item)
        if len(buffer) == size:
            yield buffer
            buffer = []
    if buffer:
        yield buffer


def length_batches(
    buffer: list[tuple[int, list[str]]], batch_size: int, max_batch_tokens: int
) -> Iterator[list[tuple[int, list[str]]]]:
    """The buffer's ``(index, sentence)`` items in batches of similar length (:func:`length_sorted_batches`):
    <= ``batch_size`` sentences and <= ``max_batch_tokens`` padded tokens, boundaries included."""
    for batch in length_sorted_batches([len(sentence) for _, sentence in buffer], batch_size, max_batch_tokens):
        yield [buffer[i] for i in batch]


def resolve_device(device: str) -> torch.device:
    """``auto`` is CUDA when available, else the CPU; anything else is passed to ``torch.device``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
    return resolved


def embed_file(
    bilm: BiLM,
    input_path: str | Path,
    output_path: str | Path,
    layers: LayerMode = "all",
    batch_size: int = 256,
    max_batch_tokens: int = 8192,
    device: str = "auto",
    precision: Precision = "fp32",
    chunk_tokens: int = 1024,
    buffer_size: int | None = None,
    progress: bool = True,
    on_batch: Callable[[int], None] | None = None,
    overwrite: bool = False,
) -> EmbedStats:
    """Embed every line of ``input_path`` into ``output_path`` (bilm-tf's embedding-dump layout).

    Args:
        bilm: the biLM; it is moved to ``device`` and put in eval mode.
        input_path: one sentence per line, tokens separated by spaces.
        output_path: the HDF5 file to write (replaced only when the run succeeds).
        layers: ``all`` (L + 1, tokens, 2P), ``average`` of the layers or the ``top`` layer (tokens, 2P).
        batch_size: sentences per biLM call, at most.
        max_batch_tokens: padded tokens per biLM call (sentences x longest, boundaries included), at most;
            a longer sentence is written chunk by chunk into its dataset.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1``, ...
        precision: ``fp32``, or ``bf16`` matrix multiplies (the cell state stays fp32).
        chunk_tokens: row-steps per chunk of the recurrence; bounds its memory (LSTMP biLMs).
        buffer_size: sentences read ahead and sorted by length (default 32 batches); bounds the memory.
        progress: show a tqdm progress bar.
        on_batch: called with the number of sentences done after every batch (for benchmarks).
        overwrite: replace ``output_path`` if it exists (never when it is the input file or a folder).

    Returns:
        EmbedStats of the run.
    """
    if layers not in LAYER_MODES:
        raise ValueError(f"--layers must be one of {LAYER_MODES}, got {layers!r}")
    if batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {batch_size}")
    if max_batch_tokens < 1:
        raise ValueError(f"--max-batch-tokens must be at least 1, got {max_batch_tokens}")
    buffer_size = buffer_size or 32 * batch_size
    if buffer_size < 1:
        raise ValueError(f"--buffer-size must be at least 1, got {buffer_size}")
    input_path, output_path = Path(input_path), Path(output_path)
    check_output(input_path, output_path, overwrite)
    if chunk_tokens < 1:
        raise ValueError(f"--chunk-tokens must be at least 1, got {chunk_tokens}")
    if precision not in PRECISIONS:
        raise ValueError(f"--precision must be one of {PRECISIONS}, got {precision!r}")
    target = resolve_device(device)
    if precision == "bf16" and not bf16_supported(target):
        raise ValueError(
            f"--precision bf16: this {target.type.upper()} has no native bfloat16 matrix multiply "
            "(a CPU needs AVX-512 BF16 or AMX); use --precision fp32"
        )
    total = check_input(input_path)
    bilm = bilm.to(target).eval()
    runner = StreamingBiLM(bilm, precision, chunk_tokens) if StreamingBiLM.supports(bilm) else None
    output_path.parent.mkdir(parents=True, exist_ok=True)
    partial = output_path.with_name(output_path.name + ".partial")
    done = tokens = truncated = 0
    start = time.perf_counter()
    try:
        with (
            h5py.File(partial, "w") as out,
            torch.inference_mode(),
            tqdm(total=total, unit="sent", desc="embed", disable=not progress, mininterval=1.0) as bar,
        ):
            for buffer in _buffers(read_sentences(input_path), buffer_size):
                for batch in length_batches(buffer, batch_size, max_batch_tokens):
                    sentences = [sentence for _, sentence in batch]
                    if runner is None:
                        values = _forward_batch(bilm, sentences, layers, precision)
                    else:
                        values = _stream_batch(runner, batch, layers, out, max_batch_tokens)
                    for (index, sentence), value in zip(batch, values, strict=True):
                        if value is not None:  # None: already written into its dataset
                            out.create_dataset(str(index), data=value)  # ([L+1,] n, 2P)
                        tokens += len(sentence)
                        truncated += sum(map(is_truncated, sentence))
                    done += len(batch)
                    bar.update(len(batch))
                    if on_batch is not None:
                        on_batch(done)
        os.replace(partial, output_path)
    finally:
        partial.unlink(missing_ok=True)
    seconds = time.perf_counter() - start
    if truncated:
        log.warning("%d tokens were longer than 48 UTF-8 bytes and were truncated (ELMo's character limit)", truncated)
    log.info("embedded %d sentences (%d tokens) in %.1f s into %s", done, tokens, seconds, output_path)
    return EmbedStats(sentences=done, tokens=tokens, seconds=seconds, truncated_tokens=truncated)


def _shape(bilm: BiLM, layers: LayerMode, n: int) -> tuple[int, ...]:
    """The dataset shape of an n-token sentence: (L + 1, n, 2P) for ``all``, else (n, 2P)."""
    width = bilm.config.output_dim
    return (bilm.config.num_layers + 1, n, width) if layers == "all" else (n, width)


def _stream_batch(
    runner: StreamingBiLM, batch: list[tuple[int, list[str]]], layers: LayerMode, out: h5py.File, max_tokens: int
) -> list[np.ndarray | None]:
    """Run a batch on the streaming runner: arrays to write, or None for a long sentence written in place."""
    sentences = [sentence for _, sentence in batch]
    if len(batch) == 1 and len(sentences[0]) + 2 > max_tokens:  # alone and long: stream into the file
        index, sentence = batch[0]
        dataset = out.create_dataset(str(index), shape=_shape(runner.bilm, layers, len(sentence)), dtype="float32")
        runner.run(sentences, [dataset], layers)
        return [None]
    values = [np.empty(_shape(runner.bilm, layers, len(sentence)), dtype=np.float32) for sentence in sentences]
    runner.run(sentences, values, layers)
    return values


def _forward_batch(bilm: BiLM, sentences: list[list[str]], layers: LayerMode, precision: Precision) -> list[np.ndarray]:
    """Run a batch through :meth:`BiLM.forward` (cells the streaming runner does not implement)."""
    device = next(bilm.parameters()).device
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        activations, _ = bilm_layers(bilm, sentences)  # (L+1) x (B, T, 2P)
    stacked = torch.stack(activations, dim=1)  # (B, L+1, T, 2P)
    if layers == "average":
        stacked = stacked.mean(dim=1)  # (B, T, 2P)
    elif layers == "top":
        stacked = stacked[:, -1]  # (B, T, 2P)
    values = stacked.float().cpu().numpy()
    return [value[..., : len(sentence), :] for sentence, value in zip(sentences, values, strict=True)]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="elmo-pipeline embed",
        description="Embed a file of sentences (one per line, tokens separated by spaces) with a biLM into an "
        "HDF5 file in bilm-tf's layout: one float32 dataset per sentence, keyed by its 0-based line number.",
    )
    parser.add_argument("--input", required=True, type=Path, help="text file, one tokenised sentence per line")
    parser.add_argument("--output", required=True, type=Path, help="HDF5 file to write")
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

    try:
        check_output(args.input, args.output, args.overwrite)  # before the model loads: fail fast
        source = BiLMSource.parse(args.bilm if args.bilm is not None else (args.options, args.weights))
        bilm = source.load()
        embed_file(
            bilm,
            args.input,
            args.output,
            layers=args.layers,
            batch_size=args.batch_size,
            max_batch_tokens=args.max_batch_tokens,
            device=args.device,
            precision=args.precision,
            chunk_tokens=args.chunk_tokens,
            buffer_size=args.buffer_size,
            progress=not args.no_progress,
            overwrite=args.overwrite,
        )
    except (ValueError, OSError) as err:
        sys.stderr.write(f"elmo-pipeline embed: error: {err}\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
