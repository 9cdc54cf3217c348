"""The export folder of a finished pretraining run: what every later stage reads.

The best checkpoint's weights by validation perplexity (else the final ones), the vocabulary, the
run's resolved configuration and its final metrics (:mod:`elmo_pipeline.models.export_folder`); a
run that started from another biLM (``init_from``) also writes the published
``options.json`` + ``weights.hdf5``.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from elmo_pipeline.models.bilm import BiLM
from elmo_pipeline.models.bilm_tf import save_bilm_tf
from elmo_pipeline.models.export_folder import save_export
from elmo_pipeline.systems.checkpoints import load_checkpoint

if TYPE_CHECKING:
    from elmo_pipeline.systems.pretrain import PretrainSystem

log = logging.getLogger(__name__)


def export_run(system: PretrainSystem, directory: str, log_dir: str | None = None) -> None:
    """Write the export folder of ``system``'s run.

    Args:
        system: the pretraining system, at the end of its fit.
        directory: the export folder.
        log_dir: the folder holding the run's ``config.yaml`` (``trainer.log_dir``; None: no run config).
    """
    trainer = system.trainer
    bilm = system.bilm
    ckpt = trainer.checkpoint_callback
    best = getattr(ckpt, "best_model_path", "") if ckpt is not None else ""
    metrics: dict[str, Any] = {"tokens_seen": system.tokens_seen, "global_step": system.global_step}
    if best and Path(best).is_file():
        state = load_checkpoint(best)["state_dict"]
        bilm = BiLM(system.bilm.config)
        bilm.load_state_dict({k.removeprefix("bilm."): v for k, v in state.items() if k.startswith("bilm.")})
        metrics.update(
            checkpoint=best,
            best_score=float(ckpt.best_model_score) if ckpt.best_model_score is not None else None,
            monitor=ckpt.monitor,
        )
    for key, value in trainer.callback_metrics.items():
        if torch.is_tensor(value) and value.numel() == 1 and math.isfinite(float(value)):
            metrics.setdefault("last_" + key.replace("/", "_"), float(value))
    run_config = None
    if log_dir and (Path(log_dir) / "config.yaml").is_file():
        run_config = (Path(log_dir) / "config.yaml").read_text()
    vocab = getattr(trainer.datamodule, "vocab", None) if trainer.datamodule is not None else None
    save_export(directory, bilm, vocab, run_config=run_config, metrics=metrics)
    if system.hparams.init_from and bilm.config.cell == "lstmp":  # also as the official files (lstmp only)
        save_bilm_tf(bilm, directory)
    log.info("exported the biLM to %s", directory)
