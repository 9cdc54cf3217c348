"""Process supervision of a reproduction: its child runs, the work folder's lock, and stopping them all.

Each run is a child process (``python -m elmo_pipeline.cli ...``) with its own memory, threads and
RNG state. A :class:`Supervisor` starts them, remembers the live ones and stops them together:

- Ctrl-C or SIGTERM of the reproduction interrupts every child (SIGINT: Lightning stops cleanly),
  then kills what is left after a grace period (:meth:`Supervisor.stop`);
- ``kill -9`` of the reproduction kills every child too: each child asks the kernel for SIGKILL
  when its parent dies (``ELMO_PIPELINE_PARENT_PID``, read by :func:`elmo_pipeline.cli.die_with_parent`);
- the work folder's lock (:meth:`Supervisor.locked`) is inherited by every child, so a rerun is
  refused while any of them still lives, and never works in a folder beside one.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

log = logging.getLogger(__name__)

PARENT_ENV = "ELMO_PIPELINE_PARENT_PID"  # a child with this set dies with that parent (elmo_pipeline.cli)


class RunFailed(RuntimeError):
    """A run's process exited with an error; the message holds the end of its log."""


def log_tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def child_command(args: list[str]) -> list[str]:
    """The command line of a child run: ``python -m elmo_pipeline.cli <args>``."""
    return [sys.executable, "-m", "elmo_pipeline.cli", *args]


class Supervisor:
    """Starts the child runs of one reproduction, tracks the live ones, and stops them together.

    Args:
        command: turns a run's arguments into its command line (tests replace the child).
        grace: seconds a child has to stop after SIGINT before it is killed.
    """

    def __init__(self, command: Callable[[list[str]], list[str]] = child_command, grace: float = 30.0) -> None:
        self.command = command
        self.grace = grace
        self._live: set[subprocess.Popen] = set()
        self._live_lock = threading.Lock()
        self._stopping = threading.Event()  # set once interrupted: nothing that finishes now counts
        self._held_fds: list[int] = []  # the work folder's lock, inherited by every child

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    @contextlib.contextmanager
    def locked(self, work: Path) -> Iterator[None]:
        """One reproduction per work folder at a time (two would delete each other's unfinished runs).

        The lock is an flock on ``work/reproduce.lock``. It belongs to the open file, which every
        child inherits: if this process is killed and a child somehow outlives it, a rerun still
        finds the folder locked.
        """
        with open(work / "reproduce.lock", "a+") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.seek(0)
                raise SystemExit(
                    f"reproduce: another reproduce is running in {work} (pid {lock.read().strip() or '?'}, or a run "
                    "it started); wait for it, or give this one its own --work-dir"
                ) from None
            lock.seek(0)
            lock.truncate()
            lock.write(f"{os.getpid()}\n")
            lock.flush()
            os.set_inheritable(lock.fileno(), True)
            self._held_fds.append(lock.fileno())
            try:
                yield
            finally:
                self._held_fds.remove(lock.fileno())
                fcntl.flock(lock, fcntl.LOCK_UN)

    def run(
        self,
        args: list[str],
        log_path: Path,
        threads: int,
        heartbeat: Callable[[float], None] | None = None,
        every: float = 60.0,
        env_extra: dict[str, str] | None = None,
    ) -> float:
        """Run ``elmo-pipeline <args>`` as a child with its output in ``log_path``; returns seconds taken.

        ``threads`` 0 gives the child every core this process may use. ``heartbeat(seconds_so_far)``
        is called every ``every`` seconds while it runs (progress lines).

        Raises:
            RunFailed: it exited non-zero (the message holds the end of its log), or the
                reproduction was interrupted while it ran.
        """
        env = dict(os.environ)
        threads = threads or len(os.sched_getaffinity(0))  # 0: every core this process may use
        env["OMP_NUM_THREADS"] = str(threads)
        env["MKL_NUM_THREADS"] = str(threads)
        env.setdefault("PYTHONWARNINGS", "ignore::UserWarning:lightning.pytorch.cli")
        env.update(env_extra or {})
        env[PARENT_ENV] = str(os.getpid())
        started = time.perf_counter()
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "a") as out:
            command = self.command(args)
            out.write(f"$ {' '.join(command)}\n")
            out.flush()
            process = subprocess.Popen(command, stdout=out, stderr=out, env=env, pass_fds=tuple(self._held_fds))
            with self._live_lock:
                self._live.add(process)
            try:
                while True:
                    try:
                        code = process.wait(timeout=every)
                        break
                    except subprocess.TimeoutExpired:
                        if heartbeat is not None:
                            try:
                                heartbeat(time.perf_counter() - started)
                            except Exception as error:  # a progress line must never stop the run
                                log.debug("reproduce: progress line failed: %s", error)
            except BaseException:
                self.stop()
                raise
            finally:
                with self._live_lock:
                    self._live.discard(process)
        if self.stopping:
            raise RunFailed(f"`elmo-pipeline {' '.join(args)}` was interrupted")
        if code != 0:
            raise RunFailed(
                f"`elmo-pipeline {' '.join(args)}` exited with {code}; end of {log_path}:\n{log_tail(log_path)}"
            )
        return time.perf_counter() - started

    def stop(self) -> None:
        """Interrupt every live child (SIGINT), then kill what is left after ``grace`` seconds."""
        self._stopping.set()
        with self._live_lock:
            live = list(self._live)
        for process in live:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + self.grace
        for process in live:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
