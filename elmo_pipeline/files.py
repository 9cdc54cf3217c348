"""Small file helpers shared by the commands."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from elmo_pipeline.errors import CannotProceed, InputError


def write_json_atomic(path: str | Path, record: Any) -> None:
    """Write ``record`` as JSON so that ``path``, once it exists, is complete (a temporary file, then a rename).

    ``reproduce`` treats a run's ``results.json`` as the proof that the run finished, so a crash in the
    middle of a write must never leave a partial file under that name.
    """
    write_bytes_atomic(path, (json.dumps(record, indent=2, sort_keys=True) + "\n").encode("utf-8"))


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename: complete, or not there at all."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def file_digest(path: str | Path) -> str:
    """The first 16 hex digits of the sha256 of a file's bytes: what a record keeps to name a file's version."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def read_utf8(path: str | Path, option: str) -> str:
    """The text of ``path``; a byte that is not UTF-8 is one error naming the file, the line and the fix."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{option} {path} is a folder; give a file")
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise InputError(
            f"{path}:{line}: not UTF-8 (byte 0x{data[err.start]:02x}); re-encode the file as UTF-8, "
            f"e.g. `iconv -f latin1 -t utf-8` ({option})"
        ) from None


# ---- full disks -------------------------------------------------------------------------------------

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# kept free beside what a write needs: room for the metadata a file format flushes when it closes
SPACE_MARGIN = 8 * 2**20


def _megabytes(count: int) -> str:
    return f"{count / 2**20:,.1f} MB"


def free_bytes(folder: str | Path) -> int:
    """Bytes free for this user on the filesystem of ``folder`` (of its nearest existing parent)."""
    folder = Path(folder).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free


def is_disk_full(err: BaseException) -> bool:
    """True for an ``OSError`` that says the filesystem (or the user's quota) is full."""
    return isinstance(err, OSError) and err.errno in DISK_FULL_ERRNOS


def disk_full(path: str | Path, needed: int | None = None) -> CannotProceed:
    """The one-line error for a write to ``path`` that does not fit on its disk."""
    path = Path(path)
    free = free_bytes(path.parent)
    need = f"it needs about {_megabytes(needed)}, " if needed is not None else ""
    return CannotProceed(
        f"{path}: the disk is full ({need}{_megabytes(free)} free on the filesystem of {path.parent}); "
        "nothing was written there. Free some space or write to another disk"
    )


def check_free_space(path: str | Path, needed: int) -> None:
    """Refuse, before any work, a write of ``needed`` bytes to ``path`` that would not fit on its disk."""
    if free_bytes(Path(path).parent) < needed + SPACE_MARGIN:
        raise disk_full(path, needed)


# ---- one writer per output ---------------------------------------------------------------------------


class OutputLock:
    """Hold ``<output>.lock`` while a run writes ``output``: a second run on the same output is refused.

    The lock is the kernel's (``flock``), so it goes when its process does, ``kill -9`` included, and
    a stale lock file from a killed run never keeps a later run out. Used as a context manager;
    leaving it removes the lock file.

    Args:
        output: the file the run writes.
        option: how the user named it, for the message (``--output``).
        wait: wait for the holder instead of refusing (ranks that build one shared file: the first
            builds it, the others wait, then read it).
    """

    def __init__(self, output: str | Path, option: str = "--output", wait: bool = False) -> None:
        self.output = Path(output)
        self.path = self.output.with_name(self.output.name + ".lock")
        self.option = option
        self.wait = wait
        self._fd: int | None = None

    def __enter__(self) -> OutputLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX if self.wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "?"
                os.close(fd)
                raise CannotProceed(
                    f"{self.option} {self.output}: another run (pid {holder}) is writing it now; "
                    f"wait for it to finish, or give another {self.option}"
                ) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:  # not a lock file that its holder removed between our open and our flock
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            self.path.unlink(missing_ok=True)  # while still held: no other run can hold this file
            os.close(self._fd)
            self._fd = None


# ---- SIGTERM as Ctrl-C -------------------------------------------------------------------------------


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is, so that the same cleanup as Ctrl-C's runs."""


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` (a ``KeyboardInterrupt``) in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
