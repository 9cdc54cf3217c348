"""The published ELMo format (options.json + weights.hdf5), read and written, and one loader for any biLM."""

from __future__ import annotations

from pathlib import Path

from elmo_pipeline.interop.bilm_tf import (
    OPTIONS_FILE,
    WEIGHTS_FILE,
    config_to_options,
    load_bilm_tf,
    options_to_config,
    read_options,
    save_bilm_tf,
)
from elmo_pipeline.models.bilm import BiLM

BiLMSpec = str | Path | tuple[str | Path, str | Path]


def load_bilm(spec: BiLMSpec, map_location: str = "cpu") -> BiLM:
    """Load a biLM from whatever a user points at, in eval mode.

    Args:
        spec: an export folder (``config.json`` + ``weights.pt``, written by ``elmo-pipeline pretrain``), a
            folder holding the published ``options.json`` + ``weights.hdf5``, or an ``(options, weights)`` pair.
        map_location: device of the loaded weights.
    """
    from elmo_pipeline.models.export import load_export

    if isinstance(spec, tuple | list):
        if len(spec) != 2:
            raise ValueError(f"load_bilm: expected (options.json, weights.hdf5), got {spec!r}")
        return load_bilm_tf(*spec).to(map_location)
    path = Path(spec)
    if (path / "config.json").is_file():
        return load_export(path, map_location=map_location)[0].eval()
    if (path / OPTIONS_FILE).is_file() and (path / WEIGHTS_FILE).is_file():
        return load_bilm_tf(path / OPTIONS_FILE, path / WEIGHTS_FILE).to(map_location)
    raise FileNotFoundError(
        f"{path}: neither an export folder (config.json + weights.pt, --bilm) nor a folder with the published "
        f"{OPTIONS_FILE} + {WEIGHTS_FILE}; for files with other names pass --options and --weights"
    )


__all__ = [
    "OPTIONS_FILE",
    "WEIGHTS_FILE",
    "BiLMSpec",
    "config_to_options",
    "load_bilm",
    "load_bilm_tf",
    "options_to_config",
    "read_options",
    "save_bilm_tf",
]
