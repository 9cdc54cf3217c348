"""`elmo-pipeline pretrain`: pretrain a biLM (LightningCLI: fit, validate, test, predict).

The wiring (the system, the data module, their links and checks) is
:class:`~elmo_pipeline.systems.pretrain_cli.PretrainCLI`; ``fit`` is the default subcommand.
"""

from __future__ import annotations

from elmo_pipeline.commands.base import run_lightning_cli
from elmo_pipeline.systems.pretrain_cli import build_cli


def main(argv: list[str]) -> int:
    return run_lightning_cli(build_cli, argv)
