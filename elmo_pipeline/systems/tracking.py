"""Experiment tracking: W&B that works offline, and the resolved config sent to every logger."""

from __future__ import annotations

import logging
import os
from typing import Any

from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger as _LightningWandbLogger

log = logging.getLogger(__name__)


def wandb_offline() -> bool:
    """Log offline: no ``WANDB_API_KEY`` and no ``WANDB_MODE`` asking for ``online`` (or ``disabled``)."""
    return not os.environ.get("WANDB_API_KEY") and os.environ.get("WANDB_MODE") not in ("online", "disabled")


class WandbLogger(_LightningWandbLogger):
    """Lightning's W&B logger, offline by default when no API key is configured.

    Offline runs are written under ``save_dir/wandb`` and can be uploaded later with ``wandb sync``.

    Args:
        project: W&B project.
        name: run name.
        group: run group (``reproduce`` puts all the runs of one call in one group).
        save_dir: where the run files go.
        offline: True, False, or None to go offline exactly when ``WANDB_API_KEY`` is unset
            (and no ``WANDB_MODE`` is given).
        log_model: upload checkpoints as artifacts.
        kwargs: passed to ``wandb.init``.
    """

    def __init__(
        self,
        project: str = "elmo-pipeline",
        name: str | None = None,
        group: str | None = None,
        save_dir: str = ".",
        offline: bool | None = None,
        log_model: bool = False,
        **kwargs: Any,
    ) -> None:
        if offline is None:
            offline = wandb_offline()
            if offline:
                log.info("W&B: no WANDB_API_KEY, logging offline under %s (upload later with `wandb sync`)", save_dir)
        super().__init__(
            project=project, name=name, group=group, save_dir=save_dir, offline=offline, log_model=log_model, **kwargs
        )

    def finalize(self, status: str) -> None:
        super().finalize(status)
        if self._experiment is not None:  # flush: the run's summary and config files are written on finish
            self._experiment.finish(exit_code=0 if status == "success" else 1)
            self._experiment = None


class SaveAndLogConfig(SaveConfigCallback):
    """Saves the resolved config beside the logs (Lightning's default) and sends it to every logger."""

    def save_config(self, trainer, pl_module, stage: str) -> None:
        config = self.parser.dump(self.config, skip_none=False, format="yaml")
        import yaml

        flat = yaml.safe_load(config)
        for logger in trainer.loggers:
            if isinstance(logger, _LightningWandbLogger):
                logger.experiment.config.update({"resolved_config": flat}, allow_val_change=True)
            else:
                logger.log_hyperparams({"resolved_config": flat})
