"""Ranks that start together (torchrun, SLURM) build the vocabulary once and all read the same file."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

from elmo_pipeline.data import lm
from elmo_pipeline.text.vocab import Vocabulary

RANKS = 4


def _rank(vocab_path: str, corpus: str, builds: str, start) -> list[str]:
    """One rank: count its builds in ``builds`` (one line each), wait for the others, then load or build."""
    build = lm.build_vocabulary

    def counted(*args, **kwargs) -> Vocabulary:
        with open(builds, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(0.5)  # a slow build: the other ranks arrive while it runs
        return build(*args, **kwargs)

    lm.build_vocabulary = counted
    start.wait()
    return lm.load_or_build_vocabulary(vocab_path, [corpus], max_size=20).words


def test_concurrent_ranks_build_the_vocabulary_once(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"w{i % 13} the cat sat on mat {i % 7} .\n" for i in range(200)))
    vocab_path, builds = tmp_path / "run" / "vocab.txt", tmp_path / "builds.txt"
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager, ctx.Pool(RANKS) as pool:
        start = manager.Barrier(RANKS)
        args = [(str(vocab_path), str(corpus), str(builds), start)] * RANKS
        words = pool.starmap(_rank, args, chunksize=1)

    assert len(builds.read_text().splitlines()) == 1  # built by one rank; the others waited, then loaded
    assert all(w == words[0] for w in words)
    assert Vocabulary.load(vocab_path).words == words[0]
    assert sorted(p.name for p in vocab_path.parent.iterdir()) == ["vocab.txt"]  # no temporary or lock file left
