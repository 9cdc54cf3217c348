"""BLEU from per-sentence statistics (metrics/bleu.py) and the paired bootstrap over test sentences with it."""

from __future__ import annotations

import numpy as np
import pytest
from sacrebleu.metrics import BLEU

from elmo_pipeline.metrics.bleu import bleu, sentence_statistics
from elmo_pipeline.metrics.bootstrap import paired_bootstrap

REFERENCES = [
    "A man in a red shirt is riding a bike down the street.",
    "Two dogs play in the snow.",
    "A woman sells fruit at a market.",
    "Children are playing soccer on a field.",
    "A man plays the guitar on stage.",
    "The boy jumps into the pool.",
    "People walk along the beach at sunset.",
    "A chef cooks in a busy kitchen.",
]
GOOD = [
    "A man in a red shirt rides a bike down the street.",
    "Two dogs play in snow.",
    "A woman is selling fruit at a market.",
    "Children play soccer on a field.",
    "A man plays guitar on the stage.",
    "The boy jumps into a pool.",
    "People are walking on the beach at sunset.",
    "A cook in a kitchen.",
]
BAD = ["A man.", "Dogs.", "Fruit is here.", "A field.", "Music.", "A boy swims.", "Sunset.", "Kitchen work."]


def corpus(hypotheses: list[str], references: list[str]) -> float:
    return BLEU().corpus_score(hypotheses, [references]).score


def test_summed_sentence_statistics_give_sacrebleus_corpus_bleu():
    for hypotheses in (GOOD, BAD, GOOD[:3] + BAD[3:]):
        stats = sentence_statistics(hypotheses, REFERENCES)
        assert stats.shape == (8, 10)
        assert float(bleu(stats.sum(axis=0))) == pytest.approx(corpus(hypotheses, REFERENCES), abs=1e-9)
    # a draw with repeats is the corpus of the drawn sentences; one-word lines have no 2- to 4-grams
    draw = [1, 1, 4, 7, 0]
    stats = sentence_statistics(BAD, REFERENCES)
    expected = corpus([BAD[i] for i in draw], [REFERENCES[i] for i in draw])
    assert float(bleu(stats[draw].sum(axis=0))) == pytest.approx(expected, abs=1e-9)
    # leading axes are kept: (R, S, 10) -> (R, S)
    batch = np.stack([stats.sum(axis=0), stats[draw].sum(axis=0)]).reshape(2, 1, 10)
    assert bleu(batch).shape == (2, 1)


def test_refuses_unpaired_lines():
    with pytest.raises(ValueError, match="7 hypotheses against 8 references"):
        sentence_statistics(GOOD[:7], REFERENCES)


def test_paired_bootstrap_of_bleu_knows_the_answers():
    good, bad = sentence_statistics(GOOD, REFERENCES), sentence_statistics(BAD, REFERENCES)
    same = paired_bootstrap(good, good, bleu, samples=200, seed=0)
    assert same["delta"] == 0.0 and same["p_two_sided"] == 1.0  # a system against itself: no evidence
    better = paired_bootstrap(good, bad, bleu, samples=200, seed=0)
    assert better["delta"] == pytest.approx(corpus(GOOD, REFERENCES) - corpus(BAD, REFERENCES))
    assert better["p_value"] == 0.0 and better["p_two_sided"] == 0.0 and better["ci_low"] > 0
    worse = paired_bootstrap(bad, good, bleu, samples=200, seed=0)
    assert worse["p_value"] == 1.0 and worse["p_two_sided"] == 0.0  # two-sided: the direction does not matter
