"""Loading Lightning checkpoints safely, and ``--ckpt_path`` that fails loudly.

A checkpoint is a pickle, and a pickle can run code when it is read. Every checkpoint this package
or its CLIs read is therefore loaded with ``torch.load(weights_only=True)``: tensors and plain data
(dicts, lists, numbers, strings) only, plus the types in :data:`SAFE_GLOBALS`. A checkpoint that
holds anything else is refused with a message; one that is truncated or corrupt is named.

``--ckpt_path last`` resumes from the ``last.ckpt`` of the run's ModelCheckpoint folders; with none
there it is an error that says where it looked, never a silent fresh start.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI

from elmo_pipeline.errors import InputError, MissingFileError
from elmo_pipeline.models.weights_only import load_weights_only

# types besides tensors and plain data that a checkpoint of this package may hold (none so far: the
# systems save their hyper-parameters as plain dicts). Add a type here only if it cannot run code.
SAFE_GLOBALS: list[Any] = []


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", mmap: bool = False) -> dict[str, Any]:
    """``torch.load`` with ``weights_only=True``, with errors that name the file and the fix.

    ``mmap=True`` maps the tensors instead of reading them (a cheap check of a large file).

    Raises:
        MissingFileError: there is no such file.
        UnsafeCheckpointError: it holds objects other than tensors and plain data.
        InputError: it is truncated, corrupt or not a checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"checkpoint {path}: no such file")
    checkpoint = load_weights_only(
        path,
        f"checkpoint {path}",
        damaged_fix="resume from an earlier checkpoint, or start a new run without --ckpt_path",
        unsafe_fix="Use only checkpoints you made or trust; to load a trusted one anyway, pass --weights_only false",
        map_location=map_location,
        mmap=mmap,
        safe_globals=SAFE_GLOBALS,
    )
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise InputError(f"checkpoint {path} is not a Lightning checkpoint (no state_dict in it)")
    return checkpoint


_KEYWORDS = ("best", "last", "hpc", "registry")  # --ckpt_path values that Lightning resolves itself


def _checkpoint_dirs(trainer) -> list[Path]:
    """Where the ModelCheckpoints write: their ``dirpath``, or, without one, the ``checkpoints`` folder of each
    version of the first logger (Lightning's default; a resumed run logs to a new version)."""
    dirs: list[Path] = []
    for callback in trainer.checkpoint_callbacks:
        if not isinstance(callback, ModelCheckpoint):
            continue
        if callback.dirpath:
            dirs.append(Path(callback.dirpath))
        elif trainer.loggers and getattr(trainer.loggers[0], "root_dir", None):
            dirs += sorted(Path(trainer.loggers[0].root_dir).glob("version_*/checkpoints"))
        else:
            dirs.append(Path(trainer.default_root_dir) / "checkpoints")
    return dirs


def find_last(trainer) -> Path:
    """The ``last.ckpt`` that ``--ckpt_path last`` means, or an error that says where it looked."""
    dirs = list(dict.fromkeys(_checkpoint_dirs(trainer)))  # two callbacks may share a folder
    found = [d / "last.ckpt" for d in dirs if (d / "last.ckpt").is_file()]
    if not found:
        where = ", ".join(str(d) for d in dirs) or "(the config has no ModelCheckpoint with a dirpath)"
        raise MissingFileError(
            f"--ckpt_path last: no last.ckpt in {where}; nothing to resume. Leave out --ckpt_path to start a "
            "new run, or pass a checkpoint file"
        )
    return max(found, key=lambda p: p.stat().st_mtime)


class SafeCheckpointCLI(LightningCLI):
    """A LightningCLI whose ``--ckpt_path`` is resolved and checked before Lightning loads it.

    Subclasses call :meth:`check_checkpoint` from their ``before_<subcommand>`` hooks.
    """

    def __init__(self, *args, **kwargs) -> None:
        self._checked: set[str] = set()  # checkpoint paths already loaded weights-only (set before parsing)
        super().__init__(*args, **kwargs)

    def _parse_ckpt_path(self) -> None:
        # LightningCLI reads a checkpoint file's hyper-parameters while it parses the arguments: check the
        # file first, so that a crafted, truncated or missing one gets our message, not a library traceback
        subcommand = self.config.get("subcommand")
        if subcommand:
            self._check(self.config[subcommand].get("ckpt_path"), self.config[subcommand].get("weights_only"))
        super()._parse_ckpt_path()

    def check_checkpoint(self, subcommand: str) -> None:
        """Resolve ``last`` (or fail), load weights-only, and check a path resolved since parsing."""
        config = self.config_init[subcommand]
        if config.get("ckpt_path") == "last":
            config["ckpt_path"] = str(find_last(self.trainer))
        if config.get("weights_only") is None:
            config["weights_only"] = True  # Lightning then loads it the same way
        self._check(config.get("ckpt_path"), config["weights_only"])

    def _check(self, ckpt_path: str | None, weights_only: bool | None) -> None:
        """Refuse a bad checkpoint here, with a message, rather than deep inside Lightning; each path once."""
        if ckpt_path and ckpt_path not in _KEYWORDS and weights_only is not False and ckpt_path not in self._checked:
            load_checkpoint(ckpt_path, mmap=True)
            self._checked.add(ckpt_path)
