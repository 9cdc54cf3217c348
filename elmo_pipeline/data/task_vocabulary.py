"""A task's word and character vocabularies, built from its training split only.

Words are kept by count (``--data.min_word_count``), most frequent first; with pretrained word vectors the
kept words and the embedding matrix come from :func:`~elmo_pipeline.data.word_vectors.embedding_matrix`.
Ids 0 and 1 are padding and the unknown word (or character).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from elmo_pipeline.data.task_dataset import TaskSplit
from elmo_pipeline.data.word_vectors import embedding_matrix


@dataclass
class TaskVocabularies:
    """The vocabularies of a task, and the pretrained word vectors' matrix when there are any.

    Args:
        word_index: word (lowercased when words are looked up in lowercase) -> id, from 2.
        char_index: character -> id, from 2.
        word_vector_matrix: the pretrained vectors of the kept words (null without word vectors).
        word_vector_summary: what the word vectors covered, for the run record.
    """

    word_index: dict[str, int]
    char_index: dict[str, int]
    word_vector_matrix: torch.Tensor | None = None
    word_vector_summary: dict[str, Any] = field(default_factory=dict)


def build_vocabularies(
    train: TaskSplit,
    others: Iterable[TaskSplit],
    min_count: int,
    lowercase_words: bool,
    word_vectors: str | None,
    cache_dir: str,
) -> TaskVocabularies:
    """The word and character vocabularies of ``train``.

    Args:
        train: the training split, whose words are counted.
        others: the other splits, whose words the word vectors may add (never counted).
        min_count: training words seen fewer times map to the unknown word (``--data.min_word_count``).
        lowercase_words: look words up in lowercase (``--data.lowercase_words``).
        word_vectors: pretrained word vectors (null: none).
        cache_dir: folder of the word vectors' cache.

    Returns:
        The vocabularies, and the word vectors' matrix and summary when ``word_vectors`` is given.
    """

    def key(word: str) -> str:
        return word.lower() if lowercase_words else word

    words: Counter[str] = Counter()
    for inst in train.instances:
        for t in inst.texts:
            words.update(train.texts[t])
    keys: Counter[str] = Counter()
    for word, count in words.items():
        keys[key(word)] += count
    kept = sorted((w for w, c in keys.items() if c >= min_count), key=lambda w: (-keys[w], w))
    matrix, summary = None, {}
    if word_vectors is not None:
        seen = {key(w) for split in others for text in split.texts for w in text}
        kept, matrix, summary = embedding_matrix(word_vectors, kept, seen, cache_dir)
    word_index = {w: i + 2 for i, w in enumerate(kept)}  # 0 padding, 1 unknown
    chars = sorted({c for w in words for c in w})
    char_index = {c: i + 2 for i, c in enumerate(chars)}
    return TaskVocabularies(word_index, char_index, matrix, summary)
