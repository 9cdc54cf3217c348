"""What the commands share."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def run_lightning_cli(build_cli: Callable[[list[str]], Any], argv: list[str]) -> int:
    """Run a LightningCLI command (pretrain, finetune, seq2seq), with field docstrings as its ``--help``."""
    from jsonargparse import set_parsing_settings

    set_parsing_settings(docstring_parse_attribute_docstrings=True)
    build_cli(argv)
    return 0
