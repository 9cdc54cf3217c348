"""Reading a torch file (a checkpoint, an export's ``weights.pt``, a ``seq2seq.pt``) without running code.

A torch file is a pickle, and a pickle can run code when it is read, so every one this package reads
goes through :func:`load_weights_only`: ``torch.load(weights_only=True)`` (tensors and plain data
only), with one-line errors that name the file and the fix. A file holding anything else is refused
(:class:`UnsafeCheckpointError`, quoting what torch refused); a damaged one is named (:class:`InputError`).
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from elmo_pipeline.errors import InputError, UnsafeCheckpointError, unpickling_reason


def first_line(err: BaseException) -> str:
    """The error's type and the first line of its message, short enough for one line."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[0][:160]}" if lines else type(err).__name__


def load_weights_only(
    path: Path,
    label: str,
    damaged_fix: str,
    unsafe_fix: str,
    map_location: str | torch.device = "cpu",
    mmap: bool = False,
    safe_globals: Sequence[Any] = (),
) -> Any:
    """``torch.load(path, weights_only=True)``, every failure one error naming the file.

    Args:
        path: the file.
        label: how the messages name it (``"checkpoint x.ckpt"``, ``"--model run/seq2seq.pt:"``).
        damaged_fix: what to do about a truncated, corrupt or foreign file.
        unsafe_fix: what to do about a file holding objects that could run code.
        map_location, mmap: as for ``torch.load``.
        safe_globals: types besides tensors and plain data the file may hold.
    """
    try:
        with torch.serialization.safe_globals(list(safe_globals)):
            return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        if "weights only load failed" in str(err).lower():  # torch refused an object: it could run code
            raise UnsafeCheckpointError(
                f"{label} holds objects other than tensors and plain data, and loading it could run code; it was "
                f"not loaded ({unpickling_reason(err)}). {unsafe_fix}"
            ) from None
        raise InputError(f"{label} cannot be read (truncated or corrupt? {first_line(err)}); {damaged_fix}") from None
    except Exception as err:  # a truncated, empty or foreign file fails in many ways (EOFError, the zip
        # reader's RuntimeError, OSError [Errno 22], KeyError or IndexError of the legacy format, ...)
        raise InputError(f"{label} cannot be read (truncated or corrupt? {first_line(err)}); {damaged_fix}") from None
