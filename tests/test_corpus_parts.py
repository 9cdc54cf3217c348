"""Reading the training corpus in parts: N readers read disjoint parts that together hold all of it,
every rank makes as many batches, and a resumed epoch is the uninterrupted one."""

from __future__ import annotations

import gzip
from collections import Counter

import pytest
import torch

from elmo_pipeline.data.corpus import iter_lines, iter_part_lines
from elmo_pipeline.data.lm import LMBatches, ResumableLoader, build_vocabulary
from elmo_pipeline.errors import InputError


def _lines(count: int) -> list[str]:
    """Lines of uneven length, each with a word of its own (w<i>), some blank."""
    return ["" if i % 7 == 3 else f"w{i} " + "x " * (i % 11) + "." for i in range(count)]


@pytest.mark.parametrize("parts", [1, 2, 3, 5, 16])
def test_parts_of_a_plain_file_are_its_lines_in_order(tmp_path, parts):
    path = tmp_path / "c.txt"
    # CRLF, a lone CR (universal newlines, as datasets reads), a form feed (no newline) and no newline at the end
    path.write_bytes(("\n".join(_lines(40)) + "\r\nnext\rlast\x0cline").encode())
    whole = list(iter_lines(str(path)))
    pieces = [list(iter_part_lines(str(path), part, parts)) for part in range(parts)]
    assert [line for piece in pieces for line in piece] == whole
    if parts <= 5:
        assert all(piece for piece in pieces)  # each reads a share of the bytes


@pytest.mark.parametrize("gz_files", [1, 4])
def test_parts_of_a_glob_hold_every_line_once(tmp_path, gz_files):
    """Plain files are split by bytes across files; gzip files whole (>= parts of them) or by line."""
    lines = [line for line in _lines(120) if line]
    for k in range(3):
        (tmp_path / f"p{k}.txt").write_text("\n".join(lines[k * 20 : (k + 1) * 20]) + "\n")
    rest = lines[60:]
    for k in range(gz_files):
        share = rest[k::gz_files]
        (tmp_path / f"z{k}.txt.gz").write_bytes(gzip.compress(("\n".join(share) + "\n").encode()))
    source = str(tmp_path / "*")
    pieces = [list(iter_part_lines(source, part, 3)) for part in range(3)]
    assert Counter(line for piece in pieces for line in piece) == Counter(lines)
    assert all(piece for piece in pieces)


def test_a_bad_byte_in_a_later_part_names_its_line(tmp_path):
    path = tmp_path / "c.txt"
    good = "".join(f"line {i} of text\n" for i in range(30)).encode()
    path.write_bytes(good + b"caf\xe9\n")
    with pytest.raises(InputError, match=r"c\.txt:31: byte 0xe9 at column 4 is not UTF-8"):
        list(iter_part_lines(str(path), 1, 2))
    assert list(iter_part_lines(str(path), 1, 2, encoding_errors="replace"))[-1] == "caf\ufffd"


def _words(batches) -> list[str]:
    return [sentence[0] for batch in batches for sentence in batch]


def _loaders(corpus: str, world_size: int, num_workers: int, **kwargs) -> list[ResumableLoader]:
    """One loader per rank, agreeing on the epoch's length as DDP's reduce would."""
    vocab = build_vocabulary([corpus])

    def dataset(rank: int) -> LMBatches:
        return LMBatches([corpus], vocab, rank=rank, world_size=world_size, **kwargs)

    loaders = [ResumableLoader(dataset(r), lambda: (0, 0), num_workers=num_workers) for r in range(world_size)]
    counts = [loaders[0].dataset.count_part_batches(reader) for reader in range(loaders[0].dataset.readers)]
    everyone = torch.tensor([max(counts), -min(counts)])  # what every rank learns from the reduce
    for loader in loaders:
        loader.reduce_max = lambda extremes: torch.maximum(extremes, everyone)
    return loaders


def test_ranks_read_disjoint_parts_that_together_hold_the_corpus(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(_lines(200)) + "\n")
    words = [line.split()[0] for line in _lines(200) if line]
    loaders = _loaders(str(corpus), world_size=3, num_workers=0, batch_size=4, shuffle_buffer=16, seed=3)
    datasets = [loader.dataset for loader in loaders]
    parts = [_words(ds.part_batches(ds.rank, epoch=0)) for ds in datasets]  # one pass of each rank's part
    assert Counter(w for part in parts for w in part) == Counter(words)  # disjoint, and together all of it
    assert all(len(part) < len(words) / 2 for part in parts)

    epochs = [[vocab_words(batch, ds) for batch in loader] for loader, ds in zip(loaders, datasets)]
    assert len({len(e) for e in epochs}) == 1 and len(epochs[0]) == datasets[0].epoch_batches  # ranks in step
    seen = [set(w for batch in e for w in batch) for e in epochs]
    assert set().union(*seen) == set(words)  # no sentence dropped
    assert not (seen[0] & seen[1]) and not (seen[1] & seen[2])  # a rank that runs short rereads its own part


def vocab_words(batch: dict[str, torch.Tensor], dataset: LMBatches) -> list[str]:
    """The first word of each sentence of a batch of tensors (its forward target at <S>)."""
    return [dataset.vocab.words[i] for i in batch["forward_targets"][:, 0].tolist()]


@pytest.mark.parametrize("done", [0, 1, 3, 6])
def test_workers_read_parts_and_resume_in_the_uninterrupted_order(tmp_path, done):
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(_lines(90)) + "\n")
    (loader,) = _loaders(str(corpus), world_size=1, num_workers=2, batch_size=4, shuffle_buffer=8, seed=1)
    whole = [vocab_words(batch, loader.dataset) for batch in loader]
    assert len(whole) == 2 * loader.dataset.epoch_batches
    workers = [_words(loader.dataset.part_batches(reader, epoch=0)) for reader in (0, 1)]
    assert not set(workers[0]) & set(workers[1])  # each worker reads its own part

    loader.load_state_dict({"epoch": 0, "batches_done": done})
    assert [vocab_words(batch, loader.dataset) for batch in loader] == whole[done:]


def test_a_corpus_too_small_for_its_readers_is_a_clear_error(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("just one line .\n")
    vocab = build_vocabulary([str(corpus)])
    for rank in (0, 3):  # rank 3's part is empty; rank 0 learns of it through the reduce, and stops as well
        loader = ResumableLoader(LMBatches([str(corpus)], vocab, rank=rank, world_size=4), lambda: (0, 0))
        loader.reduce_max = lambda extremes: torch.maximum(extremes, torch.tensor([1, 0]))
        with pytest.raises(InputError, match=r"too small to read in 4 parts .* --data.shard_reading false"):
            iter(loader)
