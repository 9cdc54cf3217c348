"""Run per-shard work on every rank with Lightning's ``Trainer.predict``: one process, many, many nodes.

``embed --shard-lines`` hands this module a function that embeds one shard. Rank ``r`` of ``W`` takes
shards ``r, r + W, r + 2W, ...`` in order, so ranks never share a shard whatever their timing, and the
launchers are Lightning's: ``--devices K`` starts K processes on one machine (DDP, gloo on CPUs),
``torchrun`` and SLURM are detected from their environment, as for pretraining.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import lightning as L
import torch
from torch.utils.data import DataLoader

ShardWork = Callable[[int, torch.device], None]


class ShardWorker(L.LightningModule):
    """A module with no weights whose predict step does one shard's work on this rank's device."""

    def __init__(self, work: ShardWork) -> None:
        super().__init__()
        self.work = work

    def predict_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        self.work(int(batch), self.device)
        return torch.empty(0)  # the shard file is the result (not None: Lightning would warn)


class ShardIndices(L.LightningDataModule):
    """This rank's shard indices: ``rank, rank + world, ...`` of ``count`` (no padding, no repeats)."""

    def __init__(self, count: int) -> None:
        super().__init__()
        self.count = count

    def predict_dataloader(self) -> DataLoader:
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        return DataLoader(list(range(rank, self.count, world)), batch_size=None)


def run_shards(work: ShardWork, count: int, devices: int = 1, num_nodes: int = 1, accelerator: str = "auto") -> None:
    """Call ``work(index, device)`` once for every shard index in ``range(count)``, spread over the ranks."""
    many = devices * num_nodes > 1
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)  # no hardware banner
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=devices,
        num_nodes=num_nodes,
        strategy="ddp" if many else "auto",
        use_distributed_sampler=False,  # the split above: no rank pads its list with another's shards
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.predict(ShardWorker(work), datamodule=ShardIndices(count), return_predictions=False)
