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


def _not_utf8(path: Path, line: int, column: int, byte: int) -> InputError:
    return InputError(
        f"{path}:{line}: byte 0x{byte:02x} at column {column} is not UTF-8; convert the file "
        "(e.g. `iconv -f latin1 -t utf-8`) or set --data.encoding_errors replace to replace and count such bytes"
    )


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
                raise _not_utf8(path, *bad) from None
        raise


def _caused_by(err: BaseException | None, kinds: tuple[type[BaseException], ...]) -> bool:
    while err is not None:
        if isinstance(err, kinds):
            return True
        err = err.__cause__ or err.__context__
    return False


def _decode(raw: bytes, path: Path, offset: int | None, line: int | None, encoding_errors: str) -> list[str]:
    """The lines of one raw line, split at universal newlines (``\\n``, ``\\r\\n``, ``\\r``) as the
    ``datasets`` text reader splits (so the parts hold exactly the lines of the whole file); a byte
    that is not UTF-8 is an error naming the file and line (``strict``) or U+FFFD (``replace``)."""
    try:
        text = raw.decode("utf-8", encoding_errors)
    except UnicodeDecodeError as err:
        number = line if line is not None else _line_at(path, offset or 0)
        raise _not_utf8(path, number, err.start + 1, raw[err.start]) from None
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return lines[:-1] if lines[-1] == "" else lines


def _line_at(path: Path, offset: int) -> int:
    """The 1-based number of the line that starts at byte ``offset`` of a plain file (for error messages)."""
    newlines, done = 0, 0
    with open(path, "rb") as fh:
        while done < offset:
            chunk = fh.read(min(1 << 20, offset - done))
            if not chunk:
                break
            newlines += chunk.count(b"\n")
            done += len(chunk)
    return newlines + 1


def _byte_range_lines(path: Path, start: int, end: int, encoding_errors: str) -> Iterator[str]:
    """The lines of a plain file that *start* in bytes ``[start, end)``: a line crossing ``end`` is
    read whole here, and the part that begins at ``end`` skips it, so parts never share or lose a line."""
    with open(path, "rb") as fh:
        position = start
        if start > 0:
            fh.seek(start - 1)
            if fh.read(1) != b"\n":  # mid-line: that line belongs to the part before
                position += len(fh.readline())
        while position < end:
            raw = fh.readline()
            if not raw:
                break
            yield from _decode(raw, path, position, None, encoding_errors)
            position += len(raw)


def _strided_lines(paths: list[Path], part: int, parts: int, encoding_errors: str) -> Iterator[str]:
    """Every ``parts``-th line of ``paths`` read one after another, from line ``part``: for files that
    cannot be split by bytes (gzip), read whole by every part but decoded and kept by one."""
    index = 0
    for path in paths:
        lines = 0
        try:
            with _open_text(path) as fh:
                for lines, raw in enumerate(fh, start=1):  # noqa: B007 (the count is the message)
                    if index % parts == part:
                        yield from _decode(raw, path, None, lines, encoding_errors)
                    index += 1
        except _GZIP_ERRORS as error:
            raise _corrupt_gzip(path, lines, error) from None


def iter_part_lines(source: str, part: int, parts: int, encoding_errors: str = "strict") -> Iterator[str]:
    """The lines of part ``part`` of ``parts`` disjoint parts of one source; together the parts hold
    every line of the source once.

    Plain files are split by byte ranges of the source's files laid end to end, each line going to
    the part its first byte falls in, so each part reads about 1/``parts`` of the bytes. Gzip files
    cannot be entered mid-stream: with at least ``parts`` of them, part k reads files k, k + parts, ...
    whole; with fewer, every part reads them and keeps every ``parts``-th line. A ``hf:`` source is
    strided the same way.

    Raises:
        InputError: naming the file and line of the first non-UTF-8 byte of this part (strict mode).
    """
    if not 0 <= part < parts:
        raise ValueError(f"corpus: part {part} of {parts} does not exist")
    if encoding_errors not in ("strict", "replace"):
        raise ValueError(f"corpus: encoding_errors must be 'strict' or 'replace', got {encoding_errors!r}")
    if source.startswith("hf:"):
        yield from (
            line
            for index, line in enumerate(iter_lines(source, encoding_errors=encoding_errors))
            if index % parts == part
        )
        return
    files = resolve_files(source)
    plain = [path for path in files if path.suffix != ".gz"]
    gzipped = [path for path in files if path.suffix == ".gz"]
    sizes = [path.stat().st_size for path in plain]
    total = sum(sizes)
    start, end = part * total // parts, (part + 1) * total // parts
    offset = 0
    for path, size in zip(plain, sizes):
        local_start, local_end = max(start - offset, 0), min(end - offset, size)
        if local_start < local_end:
            yield from _byte_range_lines(path, local_start, local_end, encoding_errors)
        offset += size
    if len(gzipped) >= parts:
        for path in gzipped[part::parts]:
            yield from _strided_lines([path], 0, 1, encoding_errors)
    elif gzipped:
        if part == 0:
            log.info(
                "%s: %d gzip file(s) for %d readers: each reads them whole and keeps every %d-th line "
                "(split the corpus into at least %d files, or un-gzip it, for each to read 1/%d)",
                source,
                len(gzipped),
                parts,
                parts,
                parts,
                parts,
            )
        yield from _strided_lines(gzipped, part, parts, encoding_errors)
