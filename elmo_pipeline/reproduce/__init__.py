"""The ELMo results table (its command: ``commands/reproduce.py``) (Peters et al. 2018, Table 1) from one command.

    elmo-pipeline reproduce --preset demo                                  # bundled samples, minutes on CPU
    elmo-pipeline reproduce --preset cpu_1h --data-root ../shared/data      # real data, ~90 min on 2 cores
    elmo-pipeline reproduce --preset cpu_1h --bilm path/to/options.json,path/to/weights.hdf5   # published biLM
    elmo-pipeline reproduce --preset original --dry-run                    # parse every config, build every model

Pretrains the biLM (unless ``--bilm`` names one), then trains every task in three arms (baseline,
random-biLM control, +ELMo) over ``--seeds`` seeds, and writes ``table.md``, ``results.json`` and the
pictures to ``results/<preset>/``. Running the same command again resumes: finished runs are kept.
Every run goes to W&B under one group per reproduction (offline without an API key; ``wandb sync``
uploads later), with the final table as a W&B Table. See docs/reproduce.md.
"""

from __future__ import annotations

from elmo_pipeline.reproduce.dry_run import dry_run
from elmo_pipeline.reproduce.loop import reproduce
from elmo_pipeline.reproduce.preset import Preset

__all__ = ["Preset", "dry_run", "reproduce"]
