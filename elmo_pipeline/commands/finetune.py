"""`elmo-pipeline finetune`: train a task head with or without ELMo (LightningCLI).

The wiring is :class:`~elmo_pipeline.systems.finetune_cli.FinetuneCLI` (``--model.elmo`` read as
``--data.elmo``, config files found from any directory); ``fit`` is the default subcommand.
"""

from __future__ import annotations

from elmo_pipeline.commands.base import run_lightning_cli
from elmo_pipeline.systems.finetune_cli import build_cli


def main(argv: list[str]) -> int:
    return run_lightning_cli(build_cli, argv)
