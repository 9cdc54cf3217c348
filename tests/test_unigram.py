"""The unigram baseline of test perplexity: hand-computed values, the counts cache, `pretrain test` end to end."""

from __future__ import annotations

import csv
import json
import math
import random
from collections import Counter
from pathlib import Path

import pytest
import torch

from elmo_pipeline.cli import main as cli_main
from elmo_pipeline.data import unigram
from elmo_pipeline.data.lm import make_batch
from elmo_pipeline.data.unigram import load_or_count_unigrams, unigram_log_probs, unigram_nll
from elmo_pipeline.text.vocab import Vocabulary

TINY = str(Path(__file__).parents[1] / "configs" / "pretrain" / "tiny.yaml")


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    # regex tokens: [a b .] [a] (two sentences: split after ".") and [b c]; "." and "c" are not in the vocabulary
    path = tmp_path / "train.txt"
    path.write_text("a b. a\n\nb c\n", encoding="utf-8")
    return path


@pytest.fixture
def vocab() -> Vocabulary:
    return Vocabulary(["<S>", "</S>", "<UNK>", "a", "b"])


def test_counts_and_perplexity_match_a_hand_computation(corpus: Path, vocab: Vocabulary) -> None:
    counts = unigram.count_unigrams([str(corpus)], vocab, tokenizer="regex", max_tokens=50)
    # <S> and </S>: one per sentence (3); <UNK>: "." and "c"; a: 2; b: 2
    assert counts == [3, 3, 2, 2, 2]
    # add-one: p(w) = (c + 1) / (N + V) with N = 12, V = 5, so p(<S>) = p(</S>) = 4/17, the others 3/17
    log_probs = unigram_log_probs(counts)
    assert torch.allclose(log_probs.exp(), torch.tensor([4, 4, 3, 3, 3], dtype=torch.float64) / 17)

    batch = make_batch([["a", "c"], ["b"]], vocab)  # forward targets: a <UNK> </S> b </S>
    forward = math.exp(unigram_nll(log_probs, batch["forward_targets"]).mean())
    assert forward == pytest.approx(17 / (3 * 3 * 4 * 3 * 4) ** (1 / 5), rel=1e-12)
    # the backward targets (<S> a <UNK> <S> b) give the same perplexity: c(<S>) == c(</S>)
    backward = math.exp(unigram_nll(log_probs, batch["backward_targets"]).mean())
    assert backward == pytest.approx(forward, rel=1e-12)


def test_every_vocabulary_word_gets_a_nonzero_probability() -> None:
    log_probs = unigram_log_probs([0, 0, 0, 5, 0])
    assert torch.isfinite(log_probs).all()
    assert log_probs.exp().sum().item() == pytest.approx(1.0)


def test_counts_are_cached_and_recounted_when_the_sources_change(
    corpus: Path, vocab: Vocabulary, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    count = unigram.count_unigrams

    def counting(*args, **kwargs):
        calls.append(args[0])
        return count(*args, **kwargs)

    monkeypatch.setattr(unigram, "count_unigrams", counting)
    cache = tmp_path / "vocab.txt.counts.json"

    first = load_or_count_unigrams(cache, [str(corpus)], vocab)
    assert len(calls) == 1 and json.loads(cache.read_text())["counts"]["a"] == 2
    assert load_or_count_unigrams(cache, [str(corpus)], vocab) == first
    assert len(calls) == 1  # read from the cache

    other = tmp_path / "more.txt"
    other.write_text("a a a\n", encoding="utf-8")
    assert load_or_count_unigrams(cache, [str(corpus), str(other)], vocab)[vocab.id("a")] == 5
    assert len(calls) == 2  # another list of sources

    with corpus.open("a", encoding="utf-8") as fh:
        fh.write("b b\n")
    assert load_or_count_unigrams(cache, [str(corpus), str(other)], vocab)[vocab.id("b")] == 4
    assert len(calls) == 3  # a source file changed

    bigger = Vocabulary([*vocab.words, "c"])
    assert load_or_count_unigrams(cache, [str(corpus), str(other)], bigger)[bigger.id("c")] == 1
    assert len(calls) == 4  # another vocabulary


def _write_lines(path: Path, rng: random.Random, words: list[str], n: int) -> list[list[str]]:
    sentences = [rng.choices(words, k=rng.randint(3, 12)) for _ in range(n)]
    path.write_text("".join(" ".join(s) + "\n" for s in sentences), encoding="utf-8")
    return sentences


def test_pretrain_test_logs_the_unigram_perplexity(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    rng = random.Random(0)
    words = [f"w{i}" for i in range(30)]
    train = _write_lines(tmp_path / "train.txt", rng, words, 80)
    _write_lines(tmp_path / "valid.txt", rng, words, 10)
    test = _write_lines(tmp_path / "test.txt", rng, [*words, "oov1", "oov2"], 20)  # 2 words outside the vocabulary
    overrides = [
        f"--data.sources=[{tmp_path / 'train.txt'}]",
        "--data.weights=null",
        f"--data.val_sources=[{tmp_path / 'valid.txt'}]",
        f"--data.test_sources=[{tmp_path / 'test.txt'}]",
        "--data.eval_tokenizer=regex",
        "--data.batch_size=8",
        "--data.eval_batch_size=8",
        "--data.shuffle_buffer=0",
        "--model.bilm.cell_dim=16",
        "--model.bilm.projection_dim=8",
        "--model.bilm.num_samples=10",
        "--trainer.max_steps=2",
        "--trainer.val_check_interval=2",
        "--trainer.enable_progress_bar=false",
    ]
    assert cli_main(["pretrain", "--config", TINY, *overrides]) == 0
    capsys.readouterr()
    assert cli_main(["pretrain", "test", "--config", TINY, *overrides, "--ckpt_path", "best"]) == 0
    assert "unigram perplexity of the same vocabulary on the same test tokens" in capsys.readouterr().out

    logged = None
    for path in (tmp_path / "runs/pretrain/tiny/logs").glob("version_*/metrics.csv"):
        for row in csv.DictReader(path.open()):
            if row.get("test/unigram_ppl"):
                logged = float(row["test/unigram_ppl"])
    assert logged is not None
    assert (tmp_path / "runs/pretrain/tiny/vocab.txt.counts.json").is_file()

    # by hand: every training word is in the vocabulary; each line is one sentence
    vocab_words = set((tmp_path / "runs/pretrain/tiny/vocab.txt").read_text().split())
    counts = Counter(w for s in train for w in s)
    counts["</S>"] = len(train)
    total = sum(counts.values()) + len(train)  # and as many <S>
    nll = [
        -math.log((counts[w if w in vocab_words else "<UNK>"] + 1) / (total + len(vocab_words)))
        for s in test
        for w in [*s, "</S>"]
    ]
    assert logged == pytest.approx(math.exp(sum(nll) / len(nll)), rel=1e-4)
