"""Is a later stretch of the pretraining stream slower to train on, or is it the process or the host?

Times the bf16 training step (``elmo-pipeline bench``'s ``TrainingStep``) of the one-hour recipe on the
stream's batches 0-25, then 7,000-7,025, then 0-25 again, in one process, each on a fresh model, and
prints each set's batch statistics and tokens/s (the first 2 steps of each set untimed).

    .venv/bin/python benchmarks/step_drift.py            # about 4 minutes on 2 cores (reading the stream)
"""

from __future__ import annotations

import itertools
import time

import torch
import yaml

from elmo_pipeline.bench import TrainingStep, batch_statistics
from elmo_pipeline.data.lm_datamodule import LMDataModule
from elmo_pipeline.machine import describe_machine
from elmo_pipeline.models.config import BiLMConfig


def main() -> None:
    torch.set_num_threads(2)
    config = yaml.safe_load(open("configs/pretrain/cpu_1h.yaml"))
    module = LMDataModule(**config["data"])
    stream = iter(module.train_dataloader())
    started = time.time()
    early = list(itertools.islice(stream, 26))
    late = list(itertools.islice(stream, 7000, 7026))
    print(f"# {describe_machine()}; read the stream in {time.time() - started:.0f} s")
    base = BiLMConfig.from_dict({**config["model"]["bilm"], "vocab_size": len(module.vocab)})
    for name, batches in [("batches 0-25", early), ("batches 7000-7025", late), ("batches 0-25 again", early)]:
        stats = batch_statistics(batches, base.adaptive_cutoffs[0])
        step = TrainingStep(base, "bf16", torch.device("cpu"))
        for i, batch in enumerate(batches):
            step(batch, timed=i >= 2)
        print(name, {k: round(v, 3) for k, v in stats.items()}, f"bf16 tokens/s {step.tokens / step.seconds:.0f}")


if __name__ == "__main__":
    main()
