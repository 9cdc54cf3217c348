"""Run by tests/test_ddp.py: pretrain a tiny biLM with DDP on CPU (gloo), then dump each rank's state.

python tests/ddp_worker.py OUT_DIR CORPUS
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from tiny_models import pretrain_config, quiet_trainer, shuffled_lm_data

from elmo_pipeline.systems.pretrain import PretrainSystem


class DumpRank(Callback):
    def __init__(self, out: Path) -> None:
        self.out, self.seen = out, []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.seen.append(batch["forward_targets"][:, 0].tolist())  # each sentence's first word, batch by batch

    def on_train_end(self, trainer, pl_module) -> None:
        rank = trainer.global_rank
        torch.save(pl_module.state_dict(), self.out / f"rank{rank}.pt")
        (self.out / f"seen{rank}.json").write_text(json.dumps(self.seen))


def main(out: str, corpus: str) -> None:
    torch.set_num_threads(1)
    L.seed_everything(0)
    out_dir = Path(out)
    dm = shuffled_lm_data(corpus, out_dir, bucket_batches=2, shuffle_buffer=8, max_tokens=12, seed=1)
    system = PretrainSystem(pretrain_config(), vocab_size=dm.vocab_size, optimizer="adagrad", lr=0.2)
    trainer = quiet_trainer(out_dir, devices=2, strategy="ddp", max_epochs=1, callbacks=[DumpRank(out_dir)])
    trainer.fit(system, datamodule=dm)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
