"""Streaming text corpora through Hugging Face ``datasets``: local files (plain or gzip) or a hub id.

A *source* is one of:

* a local path or glob (``data/lm/bbc_news/*.txt.gz``): one sentence or paragraph per line, blank
  lines separating documents (they are skipped);
* ``hf:<dataset id>[:<config>]`` for a dataset on the Hugging Face hub with a ``text`` column.

Lines are read lazily (``streaming=True``), so memory does not grow with the corpus. Bad input is
reported with the file and line: an empty file, bytes that are not UTF-8 (``encoding_errors:
strict``, the default), or they are replaced by U+FFFD and counted (``replace``).
"""

from __future__ import annotations

import glob
import gzip
import logging
import os
import zlib
from collections.abc import Iterator
from pathlib import Path

from elmo_pipeline.errors import InputError, MissingFileError

log = logging.getLogger(__name__)


def _open_text(path: Path):
    opener = gzip.open if path.suffix == ".gz" else open
    return opener(path, "rb")


_GZIP_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error)


def _corrupt_gzip(path: Path, lines: int, error: BaseException) -> InputError:
    return InputError(
        f"{path}: the gzip file is truncated or corrupt after line {lines} ({error}); copy or download it again, "
        "or remove it from --data.sources"
    )


def find_corrupt_gzip(path: Path) -> InputError | None:
    """An error naming ``path`` and its last readable line if it is a truncated or corrupt gzip file, else None."""
    if path.suffix != ".gz":
        return None
    lines = 0
    try:
        with gzip.open(path, "rb") as fh:
            for lines, _ in enumerate(fh, start=1):  # noqa: B007 (the count is the message)
                pass
    except _GZIP_ERRORS as error:
        return _corrupt_gzip(path, lines, error)
    return None


def find_bad_utf8(path: Path) -> tuple[int, int, int] | None:
    """The first (line, column, byte) that is not UTF-8 in ``path``, or None."""
    with _open_text(path) as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as err:
                return number, err.start + 1, raw[err.start]
    return None


def resolve_files(source: str) -> list[Path]:
    """Expand a local source (path or glob) into existing, non-empty files, sorted."""
    matches = sorted(glob.glob(os.path.expanduser(source))) if any(c in source for c in "*?[") else [source]
    files = [Path(m) for m in matches]
    if not files:
        raise MissingFileError(f"corpus: no file matches {source!r}; check the path (--data.sources)")
    for path in files:
        if not path.is_file():
            raise MissingFileError(f"corpus: {path} does not exist; check the path (--data.sources)")
        lines = 0
        try:
            with _open_text(path) as fh:  # read up to the first line with text (the whole file if there is none)
                has_text = False
                for lines, line in enumerate(fh, start=1):  # noqa: B007 (the count is the message)
                    if line.strip():
                        has_text = True
                        break
        except _GZIP_ERRORS as error:
            raise _corrupt_gzip(path, lines, error) from None
        if not has_text:
            raise InputError(
                f"{path}: the corpus file is empty (no non-blank line in {lines} lines); remove it from --data.sources"
            )
    return files


def _hf_lines(source: str, split: str, encoding_errors: str) -> Iterator[str]:
    import datasets  # imported lazily: slow to import, and only the readers need it

    if source.startswith("hf:"):
        hub_id, _, config = source[3:].partition(":")
        ds = datasets.load_dataset(hub_id, config or None, split=split, streaming=True)
    else:
        files = [str(p) for p in resolve_files(source)]
        ds = datasets.load_dataset(
            "text", data_files={"train": files}, split="train", streaming=True, encoding_errors=encoding_errors
        )
    # ``iter`` rather than ``for row in ds``: inside a DataLoader worker the latter splits the files
    # among workers by itself, while our batch stream does its own sharding (see data/lm.py)
    for rows in ds.iter(batch_size=1000):
        yield from rows["text"]


def iter_lines(source: str, split: str = "train", encoding_errors: str = "strict") -> Iterator[str]:
    """Stream the lines of one source (blank lines included, trailing newlines stripped).

    Raises:
        ValueError: naming the file, line and column of the first non-UTF-8 byte (strict mode).
    """
    if encoding_errors not in ("strict", "replace"):
        raise ValueError(f"corpus: encoding_errors must be 'strict' or 'replace', got {encoding_errors!r}")
    try:
        yield from _hf_lines(source, split, encoding_errors)
    except Exception as err:  # datasets wraps the error; find the offending file and line ourselves
        if source.startswith("hf:"):
            raise
        if _caused_by(err, _GZIP_ERRORS):
            for path in resolve_files(source):
                corrupt = find_corrupt_gzip(path)
                if corrupt is not None:
                    raise corrupt from None
        if not _caused_by(err, (UnicodeDecodeError,)):
            raise
        for path in resolve_files(source):
            bad = find_bad_utf8(path)
            if bad is not None:
                line, column, byte = bad
                raise InputError(
                    f"{path}:{line}: byte 0x{byte:02x} at column {column} is not UTF-8; convert the file "
                    "(e.g. `iconv -f latin1 -t utf-8`) or set --data.encoding_errors replace "
                    "to replace and count such bytes"
                ) from None
        raise


def _caused_by(err: BaseException | None, kinds: tuple[type[BaseException], ...]) -> bool:
    while err is not None:
        if isinstance(err, kinds):
            return True
        err = err.__cause__ or err.__context__
    return False
