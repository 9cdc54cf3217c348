"""The published ELMo format (options.json + weights.hdf5), read and written.

To load any biLM (an export folder, published files, the random control) use
:class:`elmo_pipeline.models.source.BiLMSource`.
"""

from __future__ import annotations

from elmo_pipeline.interop.bilm_tf import (
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
