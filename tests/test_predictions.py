"""Predictions files in the tasks' formats, conlleval's rules on them, and the paired bootstrap."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from elmo_pipeline.data.predictions import example_statistics, write_predictions
from elmo_pipeline.data.readers.conll import bioul_tags
from elmo_pipeline.metrics.bootstrap import paired_bootstrap
from elmo_pipeline.metrics.conlleval import conlleval, count_chunks
from elmo_pipeline.metrics.span_f1 import SpanF1

# a hand-made case, BIOUL as the tagger predicts it (one ill-formed sequence, as an unconstrained CRF may give)
SENTENCES = [
    # tokens, gold, predicted: PER right; LOC cut short                   -> gold 2, predicted 2, correct 1
    ("John Smith visited New York", "B-PER L-PER O B-LOC L-LOC", "B-PER L-PER O U-LOC O"),
    # the second entity has the wrong type                                -> gold 2, predicted 2, correct 1
    ("Mary met Jane", "U-PER O U-PER", "U-PER O U-ORG"),
    # I- after O starts an entity (conlleval); it spans both I- tokens     -> gold 2, predicted 1, correct 0
    ("EU rejects German call", "U-ORG O U-MISC O", "O I-ORG I-ORG O"),
    # two adjacent entities of one type, neither the gold one              -> gold 1, predicted 2, correct 0
    ("Big Bank Corp", "B-ORG I-ORG L-ORG", "U-ORG B-ORG L-ORG"),
]
CORRECT, PREDICTED, GOLD = 2, 7, 7


def _write(tmp_path):
    texts = [[s.split()] for s, _, _ in SENTENCES]
    gold = [g.split() for _, g, _ in SENTENCES]
    predicted = [p.split() for _, _, p in SENTENCES]
    return write_predictions(tmp_path, "test", "tagging", texts, gold, predicted)


def test_conll_file_has_token_gold_predicted_columns_in_iob2(tmp_path):
    path = _write(tmp_path)
    lines = path.read_text().splitlines()
    assert lines[:6] == ["John B-PER B-PER", "Smith I-PER I-PER", "visited O O", "New B-LOC B-LOC", "York I-LOC O", ""]
    assert lines[-4:] == ["Big B-ORG B-ORG", "Bank I-ORG B-ORG", "Corp I-ORG I-ORG", ""]  # U- B- L-: two entities
    assert path.name == "test.conll" and lines.count("") == len(SENTENCES)


def test_span_f1_equals_conllevals_rules_on_the_file(tmp_path):
    path = _write(tmp_path)
    scores = conlleval(path)
    assert (scores["correct"], scores["predicted"], scores["gold"]) == (CORRECT, PREDICTED, GOLD)  # counted by hand
    assert scores["f1"] == pytest.approx(100 * 2 / 7)

    tags = bioul_tags(["PER", "LOC", "ORG", "MISC"])
    metric = SpanF1(tags)
    for _, gold, predicted in SENTENCES:
        ids = lambda text: torch.tensor([[tags.index(t) for t in text.split()]])  # noqa: E731
        g = ids(gold)
        metric.update(ids(predicted), g, torch.ones_like(g, dtype=torch.bool))
    ours = metric.compute()
    assert 100 * ours["f1"].item() == pytest.approx(scores["f1"], abs=1e-4)
    assert 100 * ours["precision"].item() == pytest.approx(scores["precision"], abs=1e-4)
    assert 100 * ours["recall"].item() == pytest.approx(scores["recall"], abs=1e-4)


def test_per_sentence_statistics_add_up(tmp_path):
    stats = example_statistics(_write(tmp_path))
    assert stats.tolist() == [[1, 2, 2], [1, 2, 2], [0, 1, 2], [0, 2, 1]]
    assert count_chunks(["B-PER", "I-PER"], ["B-PER", "I-PER"]).correct == 1


def test_classification_files(tmp_path):
    path = write_predictions(
        tmp_path, "test", "classification", [[["a"]], [["b"]], [["c"]]], ["pos", "neg", "pos"], ["pos", "pos", "pos"]
    )
    assert path.read_text() == "pos\npos\npos\n" and (tmp_path / "test.gold.txt").read_text() == "pos\nneg\npos\n"
    assert example_statistics(path).tolist() == [[1, 1], [0, 1], [1, 1]]


def test_bootstrap_against_a_hand_computed_case():
    # A is right on both examples, B on the first only. A draw of 2 examples ties only when it is
    # example 0 twice: P = 1/4. Everywhere else A leads. The full-set difference is 100 - 50.
    a = np.array([[1, 1], [1, 1]])
    b = np.array([[1, 1], [0, 1]])
    result = paired_bootstrap(a, b, "accuracy", samples=20_000, seed=0)
    assert result["delta"] == pytest.approx(50.0)
    assert result["p_value"] == pytest.approx(0.25, abs=0.015)
    assert result["ci_low"] == 0.0 and result["ci_high"] == 100.0
    # two-sided: twice the smaller tail; the ties (1/4) count in both, so 2 * 1/4
    assert result["p_two_sided"] == pytest.approx(0.5, abs=0.03)
    reverse = paired_bootstrap(b, a, "accuracy", samples=2_000, seed=0)
    assert reverse["p_value"] == 1.0  # B never beats A
    assert reverse["p_two_sided"] == pytest.approx(0.5, abs=0.06)  # the same question, asked the other way


def test_bootstrap_uses_the_mean_over_seeds_and_span_f1():
    # two seeds of A: F1 2*1/(1+2)=66.7 and 2*2/(2+2)=100; B: 0 -> delta = 83.3 - 0
    a = np.array([[[1, 1, 2]], [[2, 2, 2]]])
    b = np.array([[0, 1, 2]])
    result = paired_bootstrap(a, b, "span_f1", samples=100, seed=0)
    assert result["delta"] == pytest.approx((200 / 3 + 100) / 2)
    assert result["p_value"] == 0.0  # one example: every draw is the full set
    with pytest.raises(ValueError, match="different examples"):
        paired_bootstrap(a, np.zeros((2, 3)), "span_f1")


def test_archived_copies_give_the_same_statistics(tmp_path):
    from elmo_pipeline.data.predictions import archive

    conll = _write(tmp_path / "run")
    labels = write_predictions(tmp_path / "run", "test", "classification", [[["a"]], [["b"]]], ["x", "y"], ["x", "x"])
    for path, name in ((conll, "ner-elmo-seed0.conll"), (labels, "sst-elmo-seed0.txt")):
        copy = archive(path, tmp_path / "kept" / name)
        assert copy.name == name + ".gz" and copy.is_file()
        assert example_statistics(copy).tolist() == example_statistics(path).tolist()
        first = copy.read_bytes()
        copy.unlink()
        assert archive(path, tmp_path / "kept" / name).read_bytes() == first  # the same bytes when made again
        before = copy.stat().st_mtime_ns
        archive(path, tmp_path / "kept" / name)
        assert copy.stat().st_mtime_ns == before  # an up-to-date copy is not rewritten
    assert conlleval(tmp_path / "kept" / "ner-elmo-seed0.conll.gz")["correct"] == CORRECT


def test_an_archived_copy_with_other_content_is_replaced_however_new_it_looks(tmp_path):
    import gzip
    import os

    from elmo_pipeline.data.predictions import archive

    run = write_predictions(tmp_path / "run", "test", "classification", [[["a"]], [["b"]]], ["x", "y"], ["x", "x"])
    stale = tmp_path / "kept" / "sst-elmo-seed0.txt.gz"
    stale.parent.mkdir()
    stale.write_bytes(gzip.compress(b"an earlier table's predictions\n"))
    future = run.stat().st_mtime_ns + 10**12  # a checkout made after the run wrote its file
    os.utime(stale, ns=(future, future))
    copy = archive(run, tmp_path / "kept" / "sst-elmo-seed0.txt")
    assert gzip.decompress(copy.read_bytes()) == run.read_bytes()


def test_the_report_drops_prediction_files_of_an_earlier_table(tmp_path):
    from elmo_pipeline.reproduce.report import prune_predictions

    folder = tmp_path / "predictions"
    folder.mkdir()
    names = ["sst-elmo-seed0.txt.gz", "sst-elmo-seed0.gold.txt.gz", "sst-elmo-seed1.txt.gz", "ner-elmo-seed1.conll.gz"]
    for name in [*names, "notes.txt", "other-task-seed0.txt.gz"]:
        (folder / name).write_bytes(b"x")
    # kept by the run it belongs to, also when the run's own file has moved (nothing was copied this time)
    records = [{"task": "sst", "arm": "elmo", "seed": 0, "predictions": "/moved/work/sst/elmo/seed0/test.txt"}]
    assert prune_predictions(folder, records, ["sst", "ner"]) == sorted(names[2:])
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["sst-elmo-seed0.txt.gz", "sst-elmo-seed0.gold.txt.gz", "notes.txt", "other-task-seed0.txt.gz"]
    )
