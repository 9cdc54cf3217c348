"""What the readers share: the example types, the error that names file and line, and the format registry.

Each reader module (``conll``, ``sst``, ``snli``) imports this and declares its :class:`Format`;
the package face (``elmo_pipeline.data.readers``) collects them into :data:`FORMATS`.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from elmo_pipeline.errors import InputError, MissingFileError
from elmo_pipeline.tasks import TaskSpec


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


@dataclass(frozen=True)
class ReadOptions:
    """Per-run choices a format may use.

    Attributes:
        tag_scheme: tagging: ``IOB1`` or ``IOB2`` tags in the file (None: the task spec's).
        subtrees: SST: one example per labelled subtree instead of per sentence.
    """

    tag_scheme: str | None = None
    subtrees: bool = False


Counts = dict[str, int]


@dataclass(frozen=True)
class Format:
    """One file format of the downstream tasks (``format:`` in a ``task.yaml``).

    Attributes:
        name: the name a task spec gives.
        read_file: ``(path, spec, options) -> (examples, counts)`` from a local file.
        read_hub_rows: ``(rows, spec, name, options) -> (examples, counts)`` from the rows of a hub dataset.
    """

    name: str
    read_file: Callable[[Path, TaskSpec, ReadOptions], tuple[list[Any], Counts]]
    read_hub_rows: Callable[[list[dict[str, Any]], TaskSpec, str, ReadOptions], tuple[list[Any], Counts]]
