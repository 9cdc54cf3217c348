"""The pretraining system runs under Lightning DDP unchanged (two CPU processes, gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import torch

from elmo_pipeline.data.lm import build_vocabulary
from elmo_pipeline.models.config import BiLMConfig
from elmo_pipeline.systems.pretrain import PretrainSystem
from elmo_pipeline.text.vocab import Vocabulary


def test_two_ranks_train_on_different_shards_and_end_identical(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"s{i} the cat sat on mat number {i % 5} .\n" for i in range(90)))
    vocab = tmp_path / "vocab.txt"  # built once here, so that both ranks read the same file
    build_vocabulary([str(corpus)]).save(vocab)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    worker = Path(__file__).with_name("ddp_worker.py")
    proc = subprocess.run(
        [sys.executable, str(worker), str(tmp_path), str(corpus)], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    seen = [json.loads((tmp_path / f"seen{r}.json").read_text()) for r in (0, 1)]
    assert seen[0] and seen[1]
    assert len(seen[0]) == len(seen[1])  # same number of batches: the ranks stay in step
    assert not set(seen[0]) & set(seen[1])  # different shards: no sentence on both ranks
    assert len(seen[0]) + len(seen[1]) >= 80  # together they cover (almost) the whole corpus

    state0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    state1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for name, tensor in state0.items():
        torch.testing.assert_close(tensor, state1[name], rtol=0, atol=0, msg=f"{name} differs between ranks")
    # and training really changed the weights (so equality is not trivially from the shared seed)
    L.seed_everything(0)
    config = BiLMConfig.preset("tiny", cell_dim=16, projection_dim=8, num_samples=10, filters=[[1, 4], [2, 4]])
    initial = PretrainSystem(config, vocab_size=len(Vocabulary.load(vocab))).state_dict()
    changed = [n for n, t in initial.items() if not torch.equal(t, state0[n])]
    assert "bilm.forward_layers.0.weight_ih" in changed
