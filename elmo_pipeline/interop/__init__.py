"""The published ELMo format (options.json + weights.hdf5), read and written: its public name.

The reader and writer live in :mod:`elmo_pipeline.models.bilm_tf`, beside the export folder
(:mod:`elmo_pipeline.models.export_folder`), so that :class:`elmo_pipeline.models.source.BiLMSource`, the
one loader of every biLM, imports them without climbing a floor. This face keeps
``from elmo_pipeline.interop import load_bilm_tf, save_bilm_tf`` working.
"""

from __future__ import annotations

from elmo_pipeline.models.bilm_tf import (
    OPTIONS_FILE,
    WEIGHTS_FILE,
    config_to_options,
    load_bilm_tf,
    options_to_config,
    read_options,
    save_bilm_tf,
)

__all__ = [
    "OPTIONS_FILE",
    "WEIGHTS_FILE",
    "config_to_options",
    "load_bilm_tf",
    "options_to_config",
    "read_options",
    "save_bilm_tf",
]
