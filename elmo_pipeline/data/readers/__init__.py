"""Readers of the downstream datasets: the same examples from the Hugging Face hub or from local files.

    read_split(spec, "train", data_root="../shared/data")   # local files in the standard format
    read_split(spec, "train")                                # the hub id of the task spec

Each reader returns a list of examples and a dict of counts (what was read, what was dropped and
why). Malformed input raises :class:`ReaderError`, which names the file, the line and the problem.
"""

from __future__ import annotations

import gzip
import logging
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from elmo_pipeline.errors import CannotProceed, InputError, MissingFileError
from elmo_pipeline.tasks import SPLITS, TaskSpec

log = logging.getLogger(__name__)


class ReaderError(InputError):
    """Malformed input: ``<file>:<line>: <problem>``."""

    def __init__(self, path: str | Path, line: int, problem: str) -> None:
        super().__init__(f"{path}:{line}: {problem}")
        self.path, self.line, self.problem = str(path), line, problem


@dataclass
class TaggedSentence:
    """A sentence with one tag per token (BIOUL after reading)."""

    tokens: list[str]
    tags: list[str]


@dataclass
class LabelledText:
    """A text (a sentence or, for SST training, a phrase) with one label."""

    tokens: list[str]
    label: str


@dataclass
class LabelledPair:
    """A premise/hypothesis pair with one label."""

    premise: list[str]
    hypothesis: list[str]
    label: str


Example = TaggedSentence | LabelledText | LabelledPair


def open_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """``(line number from 1, line without its newline)`` of a plain or gzipped UTF-8 file.

    Each line is decoded on its own, so a byte that is not UTF-8 is reported on its own line; a
    truncated or corrupt gzip file is reported after the last line that could be read.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: no such file (check --data.data_root and --data.split_files)")
    line_no = 0
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as handle:
            for line_no, raw in enumerate(handle, start=1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as error:
                    raise ReaderError(
                        path, line_no, f"not UTF-8 (byte 0x{raw[error.start]:02x} at column {error.start + 1})"
                    ) from None
                yield line_no, line.rstrip("\r\n")
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise ReaderError(
            path, line_no + 1, f"the gzip file is truncated or corrupt ({error}); download or copy it again"
        ) from None


def _hub_rows(spec: TaskSpec, split: str) -> tuple[str, list[dict[str, Any]]]:
    """The rows of a split on the hub (``datasets.load_dataset``), and a name for error messages."""
    from datasets import load_dataset

    hub_split = spec.hub.splits.get(split, split)
    try:
        dataset = load_dataset(spec.hub.id, spec.hub.config, split=hub_split)
    except Exception as error:  # no network, no such dataset, ...: say how to read local files instead
        raise CannotProceed(
            f"{spec.name}: could not load {spec.hub.id} ({hub_split}) from the Hugging Face hub ({error}); "
            f"offline, pass --data.data_root with the local files {spec.local.files}"
        ) from error
    return f"hf:{spec.hub.id}[{hub_split}]", list(dataset)


def read_split(
    spec: TaskSpec,
    split: str,
    data_root: str | Path | None = None,
    path: str | Path | None = None,
    tag_scheme: str | None = None,
    subtrees: bool = False,
) -> tuple[list[Example], dict[str, int]]:
    """Read one split of a task from local files or from the hub.

    Args:
        spec: the task.
        split: ``train``, ``validation`` or ``test``.
        data_root: folder the spec's local files are relative to; None reads the hub.
        path: this split's file (absolute, or relative to ``data_root``) instead of the spec's.
        tag_scheme: tagging only: ``IOB1`` or ``IOB2`` tags in the file (default: the spec's); always
            BIOUL out.
        subtrees: SST only: one example per labelled subtree instead of per sentence.

    Returns:
        The examples and a dict of counts.
    """
    if split not in SPLITS:
        raise ValueError(f"{spec.name}: unknown split {split!r}; splits are {list(SPLITS)}")
    from elmo_pipeline.data.readers import conll, snli, sst

    if data_root is None and path is None:
        name, rows = _hub_rows(spec, split)
        if spec.format == "conll":
            return conll.from_hub_rows(rows, spec, name)
        if spec.format == "sst_ptb":
            return sst.from_hub_rows(rows, spec, name, subtrees=subtrees)
        return snli.from_hub_rows(rows, spec, name)
    file = Path(path if path is not None else spec.local.files[split])
    if data_root is not None and not file.is_absolute():
        file = Path(data_root) / file
    if spec.format == "conll":
        examples, counts = conll.read_conll(file, spec.labels, tag_scheme or spec.local.tag_scheme or "IOB2")
    elif spec.format == "sst_ptb":
        examples, counts = sst.read_sst(file, spec.labels, subtrees=subtrees)
    else:
        examples, counts = snli.read_snli(file, spec.labels)
    if not examples:
        raise InputError(
            f"{file}: the {split} split of {spec.name} has no examples ({counts}); check the file, or "
            "--data.data_root and --data.split_files"
        )
    return examples, counts


__all__ = [
    "Example",
    "LabelledPair",
    "LabelledText",
    "ReaderError",
    "TaggedSentence",
    "open_lines",
    "read_split",
]
