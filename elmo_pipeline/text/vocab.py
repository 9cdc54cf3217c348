"""Word vocabulary in the one-word-per-line format of bilm-tf.

The file lists ``<S>``, ``</S>``, ``<UNK>`` first, then words by descending corpus frequency (ties
broken alphabetically so that the file is reproducible). Only the softmax uses it: the token
encoder reads characters, so any word, in or out of the vocabulary, gets a representation.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from elmo_pipeline.text.chars import BOS_TOKEN, EOS_TOKEN, UNK_TOKEN

log = logging.getLogger(__name__)

SPECIALS = (BOS_TOKEN, EOS_TOKEN, UNK_TOKEN)


class Vocabulary:
    """Maps words to softmax ids; unknown words map to ``<UNK>``.

    Args:
        words: the words in id order; must start with ``<S>``, ``</S>``, ``<UNK>``.
    """

    def __init__(self, words: list[str]) -> None:
        if tuple(words[:3]) != SPECIALS:
            raise ValueError(f"vocabulary: the first three words must be {SPECIALS}, got {tuple(words[:3])}")
        self.words = list(words)
        self.index = {w: i for i, w in enumerate(self.words)}
        if len(self.index) != len(self.words):
            dup = next(w for w, c in Counter(self.words).items() if c > 1)
            raise ValueError(f"vocabulary: word {dup!r} appears more than once")

    bos_id, eos_id, unk_id = 0, 1, 2

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: str) -> bool:
        return word in self.index

    def id(self, word: str) -> int:
        return self.index.get(word, self.unk_id)

    def ids(self, words: Iterable[str]) -> list[int]:
        get, unk = self.index.get, self.unk_id
        return [get(w, unk) for w in words]

    @classmethod
    def from_counts(cls, counts: Counter[str], max_size: int | None = None, min_count: int = 1) -> Vocabulary:
        """Frequency-sorted vocabulary of at most ``max_size`` words (specials included)."""
        ranked = sorted(
            ((w, c) for w, c in counts.items() if c >= min_count and w not in SPECIALS),
            key=lambda wc: (-wc[1], wc[0]),
        )
        words = [w for w, _ in ranked]
        if max_size is not None:
            if max_size < len(SPECIALS):
                raise ValueError(f"vocabulary: max_size must be at least 3 (the specials), got {max_size}")
            words = words[: max_size - len(SPECIALS)]
        return cls([*SPECIALS, *words])

    @classmethod
    def build(cls, sentences: Iterable[list[str]], max_size: int | None = None, min_count: int = 1) -> Vocabulary:
        counts: Counter[str] = Counter()
        for tokens in sentences:
            counts.update(tokens)
        return cls.from_counts(counts, max_size=max_size, min_count=min_count)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")  # one per process: ranks never share it
        try:
            tmp.write_text("".join(w + "\n" for w in self.words), encoding="utf-8")
            tmp.replace(path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            line = path.read_bytes()[: err.start].count(b"\n") + 1
            raise ValueError(f"{path}:{line}: vocabulary file is not UTF-8; re-save it as UTF-8") from None
        words = text.replace("\r\n", "\n").split("\n")
        if words and words[-1] == "":
            words.pop()
        first_line: dict[str, int] = {}
        for n, w in enumerate(words, start=1):
            if not w or any(ch.isspace() for ch in w):
                raise ValueError(f"{path}:{n}: a vocabulary line must hold exactly one word, got {w!r}")
            if w in first_line:
                raise ValueError(
                    f"{path}:{n}: the word {w!r} is already on line {first_line[w]}; each word must appear once "
                    "(its softmax row would be ambiguous). Remove the duplicate"
                )
            first_line[w] = n
        if tuple(words[:3]) != SPECIALS:
            # bilm-tf files start with the specials; older files may hold them elsewhere or not at all
            log.warning("%s: the specials %s are not the first three lines; moving them to the front", path, SPECIALS)
            words = [*SPECIALS, *(w for w in words if w not in SPECIALS)]
        return cls(words)
