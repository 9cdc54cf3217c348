"""``embed --shard-lines N``: one HDF5 file per N input lines, resumable, on one process or many.

    elmo-pipeline embed --input a.txt b.txt --output emb/ --bilm EXPORT --shard-lines 100000 [--devices 4]
    elmo-pipeline merge-embeddings emb/ --output all.hdf5

The output folder holds ``manifest.json`` and ``shard-00000.hdf5``, ``shard-00001.hdf5``, ...: the
inputs are read as one sequence of lines (numbered from 0 across the files, in the order given), and
each shard holds the datasets of its N lines, keyed by their global line number, in ``embed``'s
layout. The manifest records the inputs (path, size, sha256 of their lines, line count), every
shard's line range, the biLM's fingerprint and the options that change the vectors.

A shard is written as ``shard-*.hdf5.partial`` under a lock and renamed when complete, so a shard
file that exists is finished. Rerunning the same command skips finished shards and redoes the rest;
a rerun with other inputs, another biLM or other options into the same folder is refused, naming the
difference. ``kill -9`` of any rank loses only its unfinished shard. Ranks come from Lightning
(``systems/embed_predict.py``): ``--devices K`` processes on one machine, ``--num-nodes``, torchrun
or SLURM; rank r takes shards r, r + W, ...

:class:`ShardedEmbeddings` reads the folder as one mapping from line number to array, without
merging; ``merge-embeddings`` writes the single file a one-process ``embed`` writes.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from elmo_pipeline.data.activation_cache import bilm_fingerprint
from elmo_pipeline.embed import (
    DATASET_OVERHEAD,
    InputFileError,
    WriteOptions,
    _dataset_bytes,
    _decode,
    _lines,
    resolve_device,
    write_embeddings,
)
from elmo_pipeline.errors import InputError, MissingFileError, WouldOverwriteError
from elmo_pipeline.files import OutputLock, check_free_space, write_json_atomic
from elmo_pipeline.models.bilm import BiLM
from elmo_pipeline.models.streaming import LayerMode, Precision, StreamingBiLM

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


def shard_path(folder: Path, index: int) -> Path:
    return folder / f"shard-{index:05d}.hdf5"


@dataclass(frozen=True)
class Shard:
    """N consecutive lines of one input file."""

    index: int
    input: int  # which input file
    first_line: int  # global line number of its first sentence
    lines: int
    tokens: int
    line_in_file: int  # the first sentence's 0-based line in its file
    offset: int | None  # its byte offset (None for .gz: read from the start)


def plan(inputs: list[Path], shard_lines: int) -> tuple[list[dict[str, Any]], list[Shard]]:
    """Check every line of every input (streamed) and cut them into shards of ``shard_lines`` lines."""
    records: list[dict[str, Any]] = []
    shards: list[Shard] = []
    global_line = 0
    for number, path in enumerate(inputs):
        digest = hashlib.sha256()
        offset = count = 0
        start: tuple[int, int] | None = None  # (line_in_file, offset) of the shard being cut
        tokens = 0
        for count, raw in enumerate(_lines(path), start=1):
            if start is None:
                start, tokens = (count - 1, offset), 0
            tokens += len(_decode(raw, path, count))
            digest.update(raw)
            offset += len(raw)
            if count - start[0] == shard_lines:
                shards.append(_shard(len(shards), number, global_line, start, count, tokens, path))
                global_line += count - start[0]
                start = None
        if count == 0:
            raise InputFileError(f"{path}: the input file is empty (--input)")
        if start is not None:
            shards.append(_shard(len(shards), number, global_line, start, count, tokens, path))
            global_line += count - start[0]
        records.append(
            {"path": str(path.resolve()), "size": path.stat().st_size, "sha256": digest.hexdigest(), "lines": count}
        )
    return records, shards


def _shard(index: int, number: int, global_line: int, start: tuple[int, int], end: int, tokens: int, path: Path):
    seekable = path.suffix != ".gz"
    return Shard(index, number, global_line, end - start[0], tokens, start[0], start[1] if seekable else None)


def shard_sentences(path: Path, shard: Shard) -> Iterator[tuple[int, list[str]]]:
    """``(global line number, tokens)`` of the shard's lines, read from its input file."""
    if shard.offset is not None:
        with path.open("rb") as handle:
            handle.seek(shard.offset)
            for i in range(shard.lines):
                yield shard.first_line + i, _decode(handle.readline(), path, shard.line_in_file + i + 1)
        return
    for number, raw in enumerate(_lines(path)):
        if number >= shard.line_in_file + shard.lines:
            return
        if number >= shard.line_in_file:
            yield shard.first_line + number - shard.line_in_file, _decode(raw, path, number + 1)


def _identity(manifest: dict[str, Any]) -> dict[str, Any]:
    return {k: manifest[k] for k in ("format_version", "inputs", "shard_lines", "bilm", "options")}


def _difference(old: dict[str, Any], new: dict[str, Any]) -> str:
    """What makes two manifests' runs different, in words."""
    if old.get("format_version") != new["format_version"]:
        return f"an embed of format version {old.get('format_version')}"
    if [i["path"] for i in old["inputs"]] != [i["path"] for i in new["inputs"]]:
        return f"other inputs ({', '.join(i['path'] for i in old['inputs'])})"
    for before, now in zip(old["inputs"], new["inputs"], strict=True):
        if before != now:
            return f"another version of {now['path']} (its size or sha256 differs)"
    if old["shard_lines"] != new["shard_lines"]:
        return f"a run with --shard-lines {old['shard_lines']}"
    if old["bilm"] != new["bilm"]:
        return "another biLM (its fingerprint differs)"
    for key, value in new["options"].items():
        if old["options"].get(key) != value:
            return f"a run with --{key} {old['options'].get(key)}"
    return "another run"


def prepare_folder(folder: Path, manifest: dict[str, Any]) -> None:
    """Write the manifest of a new folder, or check that an existing folder's run is this one."""
    if folder.exists() and not folder.is_dir():
        raise WouldOverwriteError(f"--output {folder} is a file; with --shard-lines give a folder")
    path = folder / MANIFEST
    if path.is_file():
        try:
            old = json.loads(path.read_text())
            _identity(old)
        except (ValueError, KeyError, TypeError):
            raise InputError(f"{path}: not a manifest of elmo-pipeline embed; give another --output") from None
        if _identity(old) != _identity(manifest):
            raise WouldOverwriteError(
                f"--output {folder} holds the shards of {_difference(old, manifest)}; rerun that command to "
                "finish it, or give another --output"
            )
        return
    if folder.is_dir() and any(p.name != MANIFEST for p in folder.iterdir()):
        raise WouldOverwriteError(
            f"--output {folder} holds other files and no {MANIFEST}; give a new or empty folder for the shards"
        )
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, manifest)  # every rank writes the same bytes; each write is atomic


def embed_sharded(
    bilm: BiLM,
    inputs: list[Path],
    folder: Path,
    shard_lines: int,
    layers: LayerMode = "all",
    precision: Precision = "fp32",
    device: str = "auto",
    devices: int = 1,
    num_nodes: int = 1,
    batch_size: int = 256,
    max_batch_tokens: int = 8192,
    chunk_tokens: int = 1024,
    buffer_size: int | None = None,
    progress: bool = True,
) -> list[Path]:
    """Embed ``inputs`` into ``folder``, one shard file per ``shard_lines`` lines (resumable); returns the shards."""
    if shard_lines < 1:
        raise InputError(f"--shard-lines must be at least 1, got {shard_lines}")
    if devices < 1 or num_nodes < 1:
        raise InputError("--devices and --num-nodes must be at least 1")
    records, shards = plan(inputs, shard_lines)
    manifest = {
        "format_version": FORMAT_VERSION,
        "inputs": records,
        "shard_lines": shard_lines,
        "bilm": bilm_fingerprint(bilm),
        "options": {"layers": layers, "precision": precision},
        "shards": [
            {"file": shard_path(folder, s.index).name, "first_line": s.first_line, "lines": s.lines} for s in shards
        ],
    }
    prepare_folder(folder, manifest)
    left = [s for s in shards if not shard_path(folder, s.index).exists()]
    check_free_space(  # before any work: every shard left must fit
        folder / "shard.hdf5",
        _dataset_bytes(bilm, layers, sum(s.tokens for s in left)) + DATASET_OVERHEAD * sum(s.lines for s in left),
    )
    options = WriteOptions(layers, batch_size, max_batch_tokens, precision, buffer_size, progress)
    runner: list[StreamingBiLM | None] = []  # made once per process, on its device, at its first shard

    def work(index: int, rank_device: torch.device) -> None:
        shard, output = shards[index], shard_path(folder, index)
        if output.exists():  # finished by an earlier run: never rewritten
            return
        if not runner:
            bilm.to(resolve_device(device) if device != "auto" else rank_device).eval()
            runner.append(StreamingBiLM.for_bilm(bilm, precision, chunk_tokens))
        sentences = shard_sentences(inputs[shard.input], shard)
        write_embeddings(bilm, runner[0], sentences, shard.lines, shard.tokens, output, options, desc=output.name)

    from elmo_pipeline.systems.embed_predict import run_shards  # Lightning: only for a sharded run

    accelerator = "cpu" if device == "cpu" or (device == "auto" and not torch.cuda.is_available()) else "auto"
    run_shards(work, len(shards), devices=devices, num_nodes=num_nodes, accelerator=accelerator)
    return [shard_path(folder, s.index) for s in shards if shard_path(folder, s.index).exists()]


class ShardedEmbeddings(Mapping[int, np.ndarray]):
    """A sharded ``embed`` folder read as one mapping: global line number -> its array (no merging).

    Use as a context manager (or call :meth:`close`) to close the shard files it opened.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        path = self.folder / MANIFEST
        if not path.is_file():
            raise MissingFileError(f"{self.folder}: no {MANIFEST}; give a folder written by `embed --shard-lines`")
        self.manifest = json.loads(path.read_text())
        self.shards = self.manifest["shards"]
        self._starts = [s["first_line"] for s in self.shards]
        self._total = sum(s["lines"] for s in self.shards)
        missing = [s["file"] for s in self.shards if not (self.folder / s["file"]).is_file()]
        if missing:
            raise MissingFileError(
                f"{self.folder}: {len(missing)} shard(s) not finished ({missing[0]}, ...); rerun the embed command"
            )
        self._open: dict[int, h5py.File] = {}

    def _shard_of(self, line: int) -> int:
        if not isinstance(line, (int, np.integer)) or not 0 <= line < self._total:
            raise KeyError(line)
        return bisect.bisect_right(self._starts, int(line)) - 1

    def __getitem__(self, line: int) -> np.ndarray:
        index = self._shard_of(line)
        if index not in self._open:
            self._open[index] = h5py.File(self.folder / self.shards[index]["file"], "r")
        return self._open[index][str(int(line))][...]

    def __iter__(self) -> Iterator[int]:
        return iter(range(self._total))

    def __len__(self) -> int:
        return self._total

    def close(self) -> None:
        for handle in self._open.values():
            handle.close()
        self._open.clear()

    def __enter__(self) -> ShardedEmbeddings:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def merge_shards(folder: str | Path, output: str | Path, overwrite: bool = False) -> Path:
    """Write the shards of ``folder`` as the one file a one-process ``embed`` of the same inputs writes."""
    folder, output = Path(folder), Path(output)
    if output.is_dir():
        raise InputError(f"--output {output} is a folder; give a file path, e.g. {output / 'elmo.hdf5'}")
    if output.exists() and not overwrite:
        raise WouldOverwriteError(f"--output {output} exists; pass --overwrite to replace it, or give another --output")
    with ShardedEmbeddings(folder) as shards:
        needed = sum((folder / s["file"]).stat().st_size for s in shards.shards)
        check_free_space(output, needed)
        partial = output.with_name(output.name + ".partial")
        output.parent.mkdir(parents=True, exist_ok=True)
        with OutputLock(output):
            try:
                with h5py.File(partial, "w") as out:
                    for shard in shards.shards:
                        with h5py.File(folder / shard["file"], "r") as source:
                            for key in source:
                                source.copy(source[key], out, name=key)
                os.replace(partial, output)
            finally:
                partial.unlink(missing_ok=True)
    return output
