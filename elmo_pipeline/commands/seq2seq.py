"""`elmo-pipeline seq2seq`: train a translation model, with or without LM fusion (LightningCLI).

The wiring is :class:`~elmo_pipeline.systems.seq2seq_cli.Seq2SeqCLI`; ``fit`` is the default subcommand.
"""

from __future__ import annotations

from elmo_pipeline.commands.base import run_lightning_cli
from elmo_pipeline.systems.seq2seq_cli import build_cli


def main(argv: list[str]) -> int:
    return run_lightning_cli(build_cli, argv)
