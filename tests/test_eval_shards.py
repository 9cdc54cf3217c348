"""Evaluation on several ranks: every rank runs as many steps, and the perplexity is the one of the whole set."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchmetrics import MeanMetric

from elmo_pipeline.data.lm import LMBatches, build_vocabulary, empty_batch
from elmo_pipeline.systems.pretrain import PretrainSystem


@pytest.fixture
def corpus(tmp_path: Path) -> str:
    path = tmp_path / "val.txt"  # 11 sentences of different lengths: 3 batches of 4, the last one short
    path.write_text("".join(f"s{i} " + "the cat sat on the mat " * (i % 3 + 1) + ".\n" for i in range(11)))
    return str(path)


def _evaluate(system: PretrainSystem, batches: LMBatches) -> tuple[MeanMetric, MeanMetric, int, int]:
    """One rank's validation: its metrics, its number of steps and its tokens."""
    forward, backward = MeanMetric(), MeanMetric()
    steps = tokens = 0
    for batch in batches:
        system._evaluate(batch, forward, backward)
        steps, tokens = steps + 1, tokens + int(batch["num_tokens"])
    return forward, backward, steps, tokens


@pytest.mark.parametrize("world_size", [2, 3, 4, 5])
def test_padded_ranks_sum_to_the_whole_set(corpus: str, tiny_config, world_size: int) -> None:
    vocab = build_vocabulary([corpus])
    system = PretrainSystem(tiny_config, vocab_size=len(vocab)).eval()
    kwargs = dict(batch_size=4, bucket_batches=2, even_shards=False)
    with torch.no_grad():
        whole_f, whole_b, whole_steps, whole_tokens = _evaluate(system, LMBatches([corpus], vocab, **kwargs))
        ranks = [
            _evaluate(system, LMBatches([corpus], vocab, rank=r, world_size=world_size, **kwargs))
            for r in range(world_size)
        ]
    assert whole_steps == 3
    assert {steps for _, _, steps, _ in ranks} == {-(-whole_steps // world_size)}  # every rank: as many steps
    assert sum(tokens for *_, tokens in ranks) == whole_tokens
    # what the metric's sync over the ranks does: sum each state, then divide
    for whole, metrics in ((whole_f, [r[0] for r in ranks]), (whole_b, [r[1] for r in ranks])):
        assert sum(float(m.weight) for m in metrics) == float(whole.weight)  # the targets, counted once each
        torch.testing.assert_close(sum(m.mean_value for m in metrics), whole.mean_value, rtol=1e-6, atol=0)
        synced = sum(m.mean_value for m in metrics) / sum(m.weight for m in metrics)
        torch.testing.assert_close(synced, whole.compute(), rtol=1e-6, atol=0)


def test_an_empty_batch_adds_nothing(tiny_config) -> None:
    system = PretrainSystem(tiny_config).eval()
    batch = empty_batch()
    assert int(batch["num_tokens"]) == 0 and batch["chars"].shape == (1, 1, 50)
    forward, backward = MeanMetric(), MeanMetric()
    with torch.no_grad():
        system._evaluate(batch, forward, backward)
        out = system.bilm(batch["chars"], batch["forward_targets"], batch["backward_targets"], sampled=False)
    assert out.num_targets == 0 and float(out.forward_loss) == 0.0 == float(out.backward_loss)
    assert float(forward.weight) == 0.0 == float(forward.mean_value)
