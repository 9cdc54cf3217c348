"""The work of ``elmo-pipeline embed`` (its options: ``commands/embed.py``): sentences -> HDF5 in bilm-tf's layout.

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

import gzip
import logging
import os
import sys
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import h5py
import numpy as np
import torch
from tqdm import tqdm

from elmo_pipeline.errors import CannotProceed, InputError, MissingFileError, WouldOverwriteError
from elmo_pipeline.files import (
    SPACE_MARGIN,
    OutputLock,
    check_free_space,
    disk_full,
    free_bytes,
    is_disk_full,
)
from elmo_pipeline.models.bilm import BiLM
from elmo_pipeline.models.elmo import bilm_layers
from elmo_pipeline.models.streaming import LAYER_MODES, PRECISIONS, LayerMode, Precision, StreamingBiLM
from elmo_pipeline.modules.lstm import bf16_supported
from elmo_pipeline.text.batching import length_sorted_batches
from elmo_pipeline.text.chars import is_truncated

log = logging.getLogger(__name__)


class InputFileError(InputError):
    """A line of the input file cannot be embedded; the message names the file and the line."""


class DiskFullWhileWriting(CannotProceed):
    """The disk filled up while HDF5 was writing: the output is removed, and the process must end.

    HDF5 crashes when it later closes a file whose writes failed, so ``elmo-pipeline embed`` ends at
    once after reporting this; a Python caller should end its process too.
    """


@dataclass(frozen=True)
class WriteOptions:
    """How :func:`write_embeddings` batches and writes (the options of ``embed`` of the same names).

    Attributes:
        layers: ``all`` (L + 1, tokens, 2P), ``average`` of the layers or the ``top`` layer (tokens, 2P).
        batch_size: sentences per biLM call, at most.
        max_batch_tokens: padded tokens per biLM call, at most (the streamed path writes longer sentences
            chunk by chunk).
        precision: ``fp32``, or ``bf16`` matrix multiplies.
        buffer_size: sentences read ahead and sorted by length (None: 32 batches).
        progress: show a tqdm progress bar.
    """

    layers: LayerMode = "all"
    batch_size: int = 256
    max_batch_tokens: int = 8192
    precision: Precision = "fp32"
    buffer_size: int | None = None
    progress: bool = True


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


def _open_input(path: Path) -> BinaryIO:
    """The input as bytes, gunzipped when its name ends in ``.gz``; a folder or a missing file is named."""
    if path.is_dir():
        raise InputError(f"--input {path} is a folder; give a text file, one sentence per line (plain or .gz)")
    try:
        return gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")
    except FileNotFoundError:
        raise MissingFileError(f"--input {path}: input file not found") from None


def _lines(path: Path) -> Iterator[bytes]:
    with _open_input(path) as handle:  # bytes: lines end at b"\n" only
        try:
            yield from handle
        except (OSError, EOFError, zlib.error) as err:  # a .gz that is not gzip, or is cut short
            raise InputFileError(f"--input {path}: cannot read it as gzip ({err}); is the file complete?") from None


def scan_input(path: str | Path) -> tuple[int, int]:
    """Check every line of ``path`` (streamed); return how many sentences and tokens it holds."""
    path = Path(path)
    count = tokens = 0
    for count, raw in enumerate(_lines(path), start=1):
        tokens += len(_decode(raw, path, count))
    if count == 0:
        raise InputFileError(f"{path}: the input file is empty (--input)")
    return count, tokens


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
    for index, raw in enumerate(_lines(path)):
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
    """``auto`` is CUDA when available, else the CPU; ``cpu``, ``cuda``, ``cuda:N``, ``mps``, ``xpu`` where present."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise InputError(f"--device {device!r}: not a device; use auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cpu":
        return resolved
    backend = getattr(torch, resolved.type, None)
    available = getattr(backend, "is_available", None)
    if resolved.type not in ("cuda", "mps", "xpu") or available is None or not available():
        raise InputError(f"--device {device}: there is no {resolved.type.upper()} on this machine; use --device cpu")
    count = getattr(backend, "device_count", lambda: 1)()
    if resolved.index is not None and resolved.index >= count:
        raise InputError(f"--device {device}: this machine has {count} {resolved.type.upper()} device(s), 0-based")
    return resolved


def _dataset_bytes(bilm: BiLM, layers: LayerMode, tokens: int) -> int:
    """Bytes of float32 data that ``tokens`` tokens take in the output."""
    rows = bilm.config.num_layers + 1 if layers == "all" else 1
    return rows * tokens * bilm.config.output_dim * 4


# HDF5's own bytes per dataset (its header and its name in the group's index): about 375 measured; a bound
DATASET_OVERHEAD = 1024


_ABANDONED: list[h5py.File] = []  # files left open on purpose after a failed write (see DiskFullWhileWriting)


class _DiskFull(Exception):
    """HDF5 failed a write because the disk filled up (seen through the errors it cannot raise)."""


@contextmanager
def _watch_hdf5_writes() -> Iterator[list[BaseException]]:
    """Collect the errors h5py can only report as "unraisable" (a failed flush when a dataset is released).

    Without this, a full disk prints one traceback per dataset; with it they are kept, and the caller
    stops at the first one.
    """
    seen: list[BaseException] = []
    previous = sys.unraisablehook

    def hook(unraisable: sys.UnraisableHookArgs) -> None:
        if unraisable.exc_value is not None:
            seen.append(unraisable.exc_value)

    sys.unraisablehook = hook
    try:
        yield seen
    finally:
        sys.unraisablehook = previous


def _says_disk_full(err: BaseException) -> bool:
    text = str(err)
    return is_disk_full(err) or "errno = 28" in text or "No space left on device" in text


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
    total, total_tokens = scan_input(input_path)
    bilm = bilm.to(target).eval()
    runner = StreamingBiLM.for_bilm(bilm, precision, chunk_tokens)
    options = WriteOptions(layers, batch_size, max_batch_tokens, precision, buffer_size, progress)
    return write_embeddings(
        bilm, runner, read_sentences(input_path), total, total_tokens, output_path, options, on_batch=on_batch
    )


def write_embeddings(
    bilm: BiLM,
    runner: StreamingBiLM | None,
    items: Iterable[tuple[int, list[str]]],
    total: int,
    total_tokens: int,
    output_path: Path,
    options: WriteOptions,
    on_batch: Callable[[int], None] | None = None,
    desc: str = "embed",
) -> EmbedStats:
    """Write ``items`` (``(key, tokens)``, already checked: ``total`` sentences, ``total_tokens`` tokens)
    into the HDF5 file ``output_path``, one dataset per sentence named by its key.

    The one writer of embeddings: the whole output must fit on its disk before any work; it holds
    ``<output>.lock`` while it writes ``<output>.partial``, and renames that into place only when complete.
    """
    layers = options.layers
    needed = _dataset_bytes(bilm, layers, total_tokens) + DATASET_OVERHEAD * total
    check_free_space(output_path, needed)  # before any work: the whole output must fit
    partial = output_path.with_name(output_path.name + ".partial")
    done = tokens = truncated = 0
    start = time.perf_counter()
    with OutputLock(output_path):  # a second run on this output is refused, and never touches our files
        partial.unlink(missing_ok=True)  # a killed run's: nobody else holds this output
        try:
            with _watch_hdf5_writes() as failed:
                out = h5py.File(partial, "w")
                try:
                    with (
                        torch.inference_mode(),
                        tqdm(total=total, unit="sent", desc=desc, disable=not options.progress, mininterval=1.0) as bar,
                    ):
                        for buffer in _buffers(iter(items), options.buffer_size or 32 * options.batch_size):
                            for batch in length_batches(buffer, options.batch_size, options.max_batch_tokens):
                                # what the batch adds, and the metadata HDF5 may flush when it closes the file
                                batch_tokens = sum(len(sentence) for _, sentence in batch)
                                adds = _dataset_bytes(bilm, layers, batch_tokens) + DATASET_OVERHEAD * (
                                    done + len(batch)
                                )
                                if free_bytes(partial.parent) < adds + SPACE_MARGIN:  # stop while HDF5 can close
                                    raise disk_full(output_path, needed)
                                sentences = [sentence for _, sentence in batch]
                                if runner is None:
                                    values = _forward_batch(bilm, sentences, layers, options.precision)
                                else:
                                    values = _stream_batch(runner, batch, layers, out, options.max_batch_tokens)
                                for (index, sentence), value in zip(batch, values, strict=True):
                                    if value is not None:  # None: already written into its dataset
                                        out.create_dataset(str(index), data=value)  # ([L+1,] n, 2P)
                                    tokens += len(sentence)
                                    truncated += sum(map(is_truncated, sentence))
                                if failed:
                                    raise _DiskFull() if any(map(_says_disk_full, failed)) else failed[0]
                                done += len(batch)
                                bar.update(len(batch))
                                if on_batch is not None:
                                    on_batch(done)
                except BaseException as err:
                    if isinstance(err, _DiskFull) or _says_disk_full(err):
                        _ABANDONED.append(out)  # HDF5 crashes closing a file whose writes failed: never closed
                    else:
                        out.close()
                    raise
                out.close()
                if failed and any(map(_says_disk_full, failed)):  # the last flush, at close
                    raise _DiskFull()
            os.replace(partial, output_path)
        except (_DiskFull, OSError, ValueError, RuntimeError) as err:
            if not isinstance(err, _DiskFull) and not _says_disk_full(err):
                raise
            # the disk filled up under HDF5 (another process took the space after the check above)
            partial.unlink(missing_ok=True)
            raise DiskFullWhileWriting(str(disk_full(output_path, needed))) from None
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
