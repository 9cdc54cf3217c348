"""Errors a user can fix, and how every command reports them: one line, no traceback.

Each class also derives from the builtin its callers expect (``ValueError``, ``FileNotFoundError``,
...), so library code can catch them the ordinary way. ``elmo-pipeline`` prints any of them, and
the builtin errors of bad input (a ``ValueError``, an ``OSError``, a truncated file's ``EOFError``), as
``elmo-pipeline <command>: error: <message>`` and exits with status 1. ``--debug`` before the command
(``elmo-pipeline --debug pretrain ...``) or ``ELMO_PIPELINE_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import os
import zlib


class UserError(Exception):
    """Something the user can fix: a file, a flag, a folder. The message says which, and how."""


class InputError(UserError, ValueError):
    """A file's content or an option's value is wrong (the message names the file and line, or the option)."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the command needs is not there (the message says where it looked)."""


class WouldOverwriteError(UserError, FileExistsError):
    """The command would replace or destroy a file the user has; it asks instead."""


class UnsafeCheckpointError(UserError, ValueError):
    """A checkpoint holds more than tensors and plain data: loading it could run code."""


class CannotProceed(UserError, RuntimeError):
    """The command cannot go on as asked (data out of reach, a folder that belongs to another run)."""


class TrainingDiverged(UserError, RuntimeError):
    """Training stopped on a non-finite or exploding loss; nothing was exported."""


# what the top-level handler prints as one line: our errors, the builtin errors of bad input, and
# Lightning's error for a configuration it cannot run (named, so that this module needs no Lightning)
REPORTED = (UserError, ValueError, OSError, EOFError, zlib.error)
REPORTED_NAMES = ("MisconfigurationException",)


def unpickling_reason(err: BaseException) -> str:
    """The line of torch's weights-only refusal that says what was refused (``Unsupported global: ...``)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    for line in lines:
        if "GLOBAL" in line or "Unsupported" in line:
            return line[:200]
    return (lines[0] if lines else type(err).__name__)[:200]


def is_reported(err: BaseException) -> bool:
    """True for an error that ``elmo-pipeline`` prints as one line instead of a traceback."""
    return isinstance(err, REPORTED) or type(err).__name__ in REPORTED_NAMES


def debug_requested(argv: list[str]) -> bool:
    """True when the user asked for tracebacks: ``--debug`` first in ``argv``, or ``ELMO_PIPELINE_DEBUG``."""
    return (bool(argv) and argv[0] == "--debug") or os.environ.get("ELMO_PIPELINE_DEBUG", "") not in ("", "0")
