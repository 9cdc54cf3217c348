"""Span F1 against hand-counted spans; IOB1 / IOB2 / BIOUL and ill-formed sequences."""

from __future__ import annotations

import pytest
import torch

from elmo_pipeline.data.readers.conll import bioul_tags, iob2_to_bioul, iob_to_iob2
from elmo_pipeline.metrics.span_f1 import SpanF1, tags_to_spans


def test_spans_by_hand_in_every_scheme():
    # "John Smith visited New York and Paris with Mary Jane Mary"
    iob1 = ["I-PER", "I-PER", "O", "I-LOC", "I-LOC", "O", "I-LOC", "O", "I-PER", "I-PER", "B-PER"]
    iob2 = ["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "O", "B-LOC", "O", "B-PER", "I-PER", "B-PER"]
    bioul = ["B-PER", "L-PER", "O", "B-LOC", "L-LOC", "O", "U-LOC", "O", "B-PER", "L-PER", "U-PER"]
    expected = [(0, 1, "PER"), (3, 4, "LOC"), (6, 6, "LOC"), (8, 9, "PER"), (10, 10, "PER")]
    assert tags_to_spans(iob1) == tags_to_spans(iob2) == tags_to_spans(bioul) == expected
    assert iob_to_iob2(iob1)[0] == iob2
    assert iob2_to_bioul(iob2) == bioul


@pytest.mark.parametrize(
    "tags, spans",
    [
        (["O", "O"], []),
        (["U-PER"], [(0, 0, "PER")]),
        (["O", "B-ORG", "I-ORG", "L-ORG"], [(1, 3, "ORG")]),  # an entity that ends the sentence
        (["O", "I-PER", "I-PER"], [(1, 2, "PER")]),  # I- after O starts an entity (conlleval)
        (["B-PER", "I-LOC"], [(0, 0, "PER"), (1, 1, "LOC")]),  # a type change ends one and starts another
        (["B-PER", "B-PER"], [(0, 0, "PER"), (1, 1, "PER")]),  # adjacent entities of one type
        (["L-PER", "O"], [(0, 0, "PER")]),  # L- without B-: one token
        (["B-PER", "O", "L-PER"], [(0, 0, "PER"), (2, 2, "PER")]),  # broken by O
        (["U-PER", "I-PER", "L-PER"], [(0, 0, "PER"), (1, 2, "PER")]),  # U- closes its entity
        (["B-MISC", "I-MISC", "U-MISC"], [(0, 1, "MISC"), (2, 2, "MISC")]),  # a B-I run closed by U-
    ],
)
def test_edge_cases(tags, spans):
    assert tags_to_spans(tags) == spans


def test_metric_against_hand_counts():
    tags = bioul_tags(["PER", "LOC"])
    ids = {t: i for i, t in enumerate(tags)}
    gold = [
        ["B-PER", "L-PER", "O", "U-LOC"],  # PER(0,1) LOC(3,3)
        ["U-PER", "O", "B-LOC", "L-LOC"],  # PER(0,0) LOC(2,3)
        ["O", "U-PER", "O", "O"],  # PER(1,1) (padded after 2 tokens)
    ]
    pred = [
        ["B-PER", "L-PER", "O", "U-PER"],  # PER(0,1) tp; PER(3,3) fp; LOC(3,3) fn
        ["U-PER", "O", "U-LOC", "O"],  # PER(0,0) tp; LOC(2,2) fp; LOC(2,3) fn
        ["O", "U-PER", "U-LOC", "U-LOC"],  # PER(1,1) tp; positions 2-3 are padding: ignored
    ]
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
    metric = SpanF1(tags)
    metric.update(
        torch.tensor([[ids[t] for t in s] for s in pred]), torch.tensor([[ids[t] for t in s] for s in gold]), mask
    )
    out = metric.compute()
    # PER: tp 3, fp 1, fn 0 -> P 3/4, R 1, F1 6/7. LOC: tp 0, fp 1, fn 2 -> 0. Overall: tp 3, fp 2, fn 2.
    assert out["precision-PER"].item() == pytest.approx(0.75)
    assert out["recall-PER"].item() == pytest.approx(1.0)
    assert out["f1-PER"].item() == pytest.approx(6 / 7)
    assert out["f1-LOC"].item() == 0.0
    assert out["precision"].item() == pytest.approx(3 / 5)
    assert out["recall"].item() == pytest.approx(3 / 5)
    assert out["f1"].item() == pytest.approx(3 / 5)
    metric.reset()
    metric.update(torch.zeros(1, 3, dtype=torch.long), torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 3).bool())
    assert metric.compute()["f1"].item() == 0.0  # no entities at all: 0, not nan


def test_metric_accumulates_like_one_batch():
    tags = bioul_tags(["PER"])
    a = torch.tensor([[1, 3, 0], [4, 0, 0]])
    b = torch.tensor([[1, 3, 0], [0, 4, 0]])
    mask = torch.ones(2, 3, dtype=torch.bool)
    whole, split = SpanF1(tags), SpanF1(tags)
    whole.update(a, b, mask)
    split.update(a[:1], b[:1], mask[:1])
    split.update(a[1:], b[1:], mask[1:])
    assert whole.compute()["f1"].item() == split.compute()["f1"].item() == pytest.approx(0.5)
