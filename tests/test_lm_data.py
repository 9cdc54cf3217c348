"""The LM data pipeline: readers, bad input, batches, sharding, determinism."""

from __future__ import annotations

import gzip

import pytest
import torch

from elmo_pipeline.data.corpus import iter_lines, resolve_files
from elmo_pipeline.data.lm import LMBatches, build_vocabulary, make_batch, mix_sources
from elmo_pipeline.models.bilm import IGNORE
from elmo_pipeline.text.chars import word_char_ids
from elmo_pipeline.text.vocab import Vocabulary


def _write(path, lines, compress=False):
    data = "".join(line + "\n" for line in lines).encode()
    path.write_bytes(gzip.compress(data) if compress else data)
    return str(path)


def test_plain_and_gzip_read_the_same_lines(tmp_path):
    lines = ["The cat sat .", "", "A dog ran ."]
    plain = _write(tmp_path / "a.txt", lines)
    gz = _write(tmp_path / "b.txt.gz", lines, compress=True)
    assert list(iter_lines(plain)) == list(iter_lines(gz)) == lines


def test_empty_file_is_a_clear_error(tmp_path):
    empty = _write(tmp_path / "empty.txt", ["", "  "])
    with pytest.raises(ValueError, match=r"empty\.txt: the corpus file is empty"):
        resolve_files(empty)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_files(str(tmp_path / "missing.txt"))


def test_non_utf8_names_file_line_and_column(tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("fine line\nsecond line\ncaf\xe9 au lait\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1\.txt:3: byte 0xe9 at column 4 is not UTF-8.*encoding_errors replace"):
        list(iter_lines(str(bad)))


def test_non_utf8_replace_mode_is_counted(tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    vocab = Vocabulary.build([["au"]])
    ds = LMBatches([str(bad)], vocab, encoding_errors="replace", batch_size=4)
    (batch,) = list(ds)
    assert int(batch["num_replaced"]) == 1
    assert int(batch["num_tokens"]) == 6  # <S> caf \ufffd au lait </S>: nothing dropped


def test_long_token_is_truncated_and_counted(tmp_path):
    corpus = _write(tmp_path / "long.txt", ["short " + "x" * 10_000 + " end"])
    vocab = build_vocabulary([corpus])
    (batch,) = list(LMBatches([corpus], vocab, batch_size=2, max_tokens=50))
    assert int(batch["num_truncated"]) == 1
    assert batch["chars"].shape == (1, 5, 50)
    assert batch["chars"][0, 2].tolist() == list(word_char_ids("x" * 48))


def test_batch_targets_are_next_and_previous_words():
    vocab = Vocabulary.build([["a", "b", "c"]])
    batch = make_batch([["a", "b"], ["c"]], vocab)
    S, E, a, b, c = vocab.id("<S>"), vocab.id("</S>"), vocab.id("a"), vocab.id("b"), vocab.id("c")
    assert batch["forward_targets"].tolist() == [[a, b, E, IGNORE], [c, E, IGNORE, IGNORE]]
    assert batch["backward_targets"].tolist() == [[IGNORE, S, a, b], [IGNORE, S, c, IGNORE]]
    assert (batch["chars"][1, 3] == 0).all()  # padding rows are all zero
    assert int(batch["num_tokens"]) == 7


def _ids(batches):
    return [tuple(b["forward_targets"][:, 0].tolist()) for b in batches]


def test_stream_is_deterministic_and_epochs_differ(tmp_path):
    corpus = _write(tmp_path / "c.txt", [f"w{i} x ." for i in range(60)])
    vocab = build_vocabulary([corpus])
    ds = LMBatches([corpus], vocab, batch_size=4, shuffle_buffer=10, bucket_batches=2, seed=5)
    first, again = _ids(ds), _ids(ds)
    assert first == again
    ds.epoch = 1
    assert _ids(ds) != first
    assert sorted(i for b in first for i in b) == sorted(vocab.id(f"w{i}") for i in range(60))


def test_ranks_split_the_batches_evenly_without_overlap(tmp_path):
    """With shard_reading off, the ranks share the single-process order (evaluation always does)."""
    corpus = _write(tmp_path / "c.txt", [f"w{i} x ." for i in range(58)])
    vocab = build_vocabulary([corpus])
    kwargs = dict(batch_size=4, shuffle_buffer=10, seed=1, shard_reading=False)
    full = _ids(LMBatches([corpus], vocab, **kwargs))  # 15 batches
    ranks = [_ids(LMBatches([corpus], vocab, rank=r, world_size=2, **kwargs)) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 7  # the 15th batch is dropped: ranks stay in step
    assert ranks[0] == full[0:14:2] and ranks[1] == full[1:14:2]
    evaluation = [_ids(LMBatches([corpus], vocab, rank=r, world_size=2, even_shards=False, **kwargs)) for r in (0, 1)]
    assert len(evaluation[0]) == len(evaluation[1]) == 8  # evaluation keeps every batch, and the ranks stay in step
    assert evaluation[0] == full[0::2] and evaluation[1] == [*full[1::2], (IGNORE,)]  # rank 1 ends on an empty batch


def test_workers_reproduce_the_single_process_order(tmp_path):
    corpus = _write(tmp_path / "c.txt", [f"w{i} x ." for i in range(40)])
    vocab = build_vocabulary([corpus])
    ds = LMBatches([corpus], vocab, batch_size=4, shuffle_buffer=10, seed=2)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
    assert _ids(loader) == _ids(ds)


def test_mix_reads_every_source_to_its_end(tmp_path):
    import random

    a = _write(tmp_path / "a.txt", [f"a{i}" for i in range(30)])
    b = _write(tmp_path / "b.txt", [f"b{i}" for i in range(3)])
    lines = list(mix_sources([a, b], [1.0, 1.0], random.Random(0)))
    assert {f"a{i}" for i in range(30)} <= set(lines) and {f"b{i}" for i in range(3)} <= set(lines)
    assert sum(line.startswith("b") for line in lines) > 3  # the small source was repeated to keep its weight
    with pytest.raises(ValueError, match="one positive weight per source"):
        list(mix_sources([a, b], [1.0], random.Random(0)))


def test_hub_source_reads_the_text_column(monkeypatch):
    """``hf:<id>[:<config>]`` goes to datasets.load_dataset (streamed); the hub itself is offline here."""
    import datasets

    calls = []

    def fake_load_dataset(path, name=None, split=None, streaming=False, **kwargs):
        calls.append((path, name, split, streaming))
        return datasets.Dataset.from_dict({"text": ["first line", "", "second line"]}).to_iterable_dataset()

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    assert list(iter_lines("hf:someone/corpus:en", split="validation")) == ["first line", "", "second line"]
    assert calls == [("someone/corpus", "en", "validation", True)]
