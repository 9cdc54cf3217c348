"""The export folder: what pretraining hands to every later stage.

<dir>/config.json   BiLMConfig fields (plus the format version)
<dir>/weights.pt    the biLM's state_dict (torch.save; loaded with weights_only=True)
<dir>/vocab.txt     the softmax vocabulary, bilm-tf format (absent for encoder-only models)
<dir>/run.yaml      the fully resolved training configuration, when exported by a run
<dir>/metrics.json  final metrics of the run, when exported by a run
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from elmo_pipeline.errors import (
    InputError,
    MissingFileError,
    WouldOverwriteError,
)
from elmo_pipeline.files import disk_full, is_disk_full
from elmo_pipeline.models.bilm import BiLM, check_finite
from elmo_pipeline.models.config import BiLMConfig
from elmo_pipeline.models.weights_only import load_weights_only
from elmo_pipeline.text.vocab import Vocabulary

FORMAT_VERSION = 1
# what an export folder may hold: its own files, and the published pair that an adapted biLM adds
EXPORT_FILES = ("config.json", "weights.pt", "vocab.txt", "run.yaml", "metrics.json", "options.json", "weights.hdf5")


def save_export(
    directory: str | Path,
    bilm: BiLM,
    vocab: Vocabulary | None = None,
    run_config: str | None = None,
    metrics: dict[str, Any] | None = None,
) -> Path:
    """Write ``bilm`` (and its vocabulary, run config and metrics) to ``directory``.

    The folder is written beside its destination and renamed into place, so a crash never leaves
    a half-written folder that looks like an export.
    """
    directory = Path(directory)
    check_replaceable(directory)  # before anything is written
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.with_name(f".{directory.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        config = {"format_version": FORMAT_VERSION, **bilm.config.to_dict()}
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        state = {k: v.detach().cpu().contiguous() for k, v in bilm.state_dict().items()}
        torch.save(state, tmp / "weights.pt")
        if vocab is not None:
            vocab.save(tmp / "vocab.txt")
        if run_config is not None:
            (tmp / "run.yaml").write_text(run_config)
        if metrics is not None:
            (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
        if directory.exists():
            shutil.rmtree(directory)
        tmp.rename(directory)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)  # nothing half-written is left beside the destination
        if is_disk_full(err):
            raise disk_full(directory) from None
        raise
    return directory


def check_replaceable(directory: str | Path) -> None:
    """Refuse to replace a folder that holds anything but an export's own files (the user's other files)."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise WouldOverwriteError(f"{directory} is a file, not an export folder; give a folder path")
    if directory.is_dir():
        foreign = sorted(p.name for p in directory.iterdir() if p.name not in EXPORT_FILES)
        if foreign:
            raise WouldOverwriteError(
                f"{directory} holds files that are not part of an export ({', '.join(foreign[:3])}"
                f"{', ...' if len(foreign) > 3 else ''}); an export replaces its whole folder, so give a new or "
                "empty folder"
            )


def _load_weights(path: Path, map_location: str | torch.device) -> dict[str, torch.Tensor]:
    """A ``weights.pt``'s tensors, loaded weights-only; anything else is one line naming the file."""
    state = load_weights_only(
        path,
        f"{path}:",
        damaged_fix="export the biLM again",
        unsafe_fix="Use only exports you made or trust, or export the biLM again",
        map_location=map_location,
    )
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"{path}: holds {type(state).__name__}, not a state dict of tensors; export the biLM again")
    return state


def read_export_config(directory: str | Path) -> BiLMConfig:
    """The :class:`BiLMConfig` of an export folder, read from its ``config.json`` (no weights are loaded)."""
    directory = Path(directory)
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(
            f"{directory}: not a biLM export folder (no config.json); pass the folder written by "
            "`elmo-pipeline pretrain` (its export_dir); for the published ELMo files pass OPTIONS,WEIGHTS"
        )
    data = json.loads(config_path.read_text())
    version = data.pop("format_version", None)
    if version != FORMAT_VERSION:
        raise ValueError(f"{config_path}: export format version {version}, this elmo-pipeline reads {FORMAT_VERSION}")
    return BiLMConfig.from_dict(data)


def load_export(directory: str | Path, map_location: str | torch.device = "cpu") -> tuple[BiLM, Vocabulary | None]:
    """Load a biLM (in eval mode) and its vocabulary, if present, from an export folder."""
    directory = Path(directory)
    bilm = BiLM(read_export_config(directory))
    path = directory / "weights.pt"
    if not path.is_file():
        raise MissingFileError(f"{path}: the export folder has no weights.pt; export the biLM again")
    state = _load_weights(path, map_location)
    for name, tensor in state.items():
        check_finite(tensor, f"{path}: {name}")
    own = bilm.state_dict()
    for name, tensor in state.items():
        if name in own and own[name].shape != tensor.shape:
            raise ValueError(
                f"{directory / 'weights.pt'}: {name} has shape {tuple(tensor.shape)} but config.json implies "
                f"{tuple(own[name].shape)}; the weights and config.json come from different models"
            )
    missing, unexpected = bilm.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{directory / 'weights.pt'}: weights do not fit config.json (missing {missing}, unexpected {unexpected})"
        )
    vocab_path = directory / "vocab.txt"
    vocab = Vocabulary.load(vocab_path) if vocab_path.is_file() else None
    return bilm.eval(), vocab
