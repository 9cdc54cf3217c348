"""ELMo character ids (PAPER.md, "Token layer").

Every token becomes ``MAX_CHARS`` (50) ids. Raw ids 0-255 are the UTF-8 bytes of the token,
256/257 mark begin/end of *sentence*, 258/259 begin/end of *word* and 260 is padding. A word is
``[258, bytes..., 259, 260, 260, ...]`` with at most 48 bytes (longer tokens are truncated, the
convention of bilm-tf and AllenNLP), and the sentence markers ``<S>``/``</S>`` are the words
``[258, 256|257, 259, 260, ...]``. Everything is then shifted by +1 so that an all-zero row
means "no token" (padding in a batch); the embedding table therefore has 262 rows.
"""

from __future__ import annotations

from functools import lru_cache

import torch

MAX_CHARS = 50
MAX_WORD_BYTES = MAX_CHARS - 2  # room for begin- and end-of-word
BOS_CHAR, EOS_CHAR, BOW_CHAR, EOW_CHAR, PAD_CHAR = 256, 257, 258, 259, 260
NUM_CHARS = 262  # 261 raw ids + the 0 "no token" row

BOS_TOKEN, EOS_TOKEN, UNK_TOKEN = "<S>", "</S>", "<UNK>"


def _marker(char: int) -> tuple[int, ...]:
    ids = [PAD_CHAR] * MAX_CHARS
    ids[0], ids[1], ids[2] = BOW_CHAR, char, EOW_CHAR
    return tuple(i + 1 for i in ids)


_SPECIAL = {BOS_TOKEN: _marker(BOS_CHAR), EOS_TOKEN: _marker(EOS_CHAR)}


@lru_cache(maxsize=200_000)
def word_char_ids(token: str) -> tuple[int, ...]:
    """The 50 shifted character ids of one token (``<S>`` and ``</S>`` are the sentence markers).

    Tokens longer than 48 UTF-8 bytes are truncated to their first 48 bytes; use
    :func:`is_truncated` to count how often that happens.
    """
    special = _SPECIAL.get(token)
    if special is not None:
        return special
    if not token:
        raise ValueError("character ids: got an empty token; tokens must have at least one character")
    data = token.encode("utf-8", "strict")[:MAX_WORD_BYTES]
    ids = [BOW_CHAR, *data, EOW_CHAR]
    ids.extend([PAD_CHAR] * (MAX_CHARS - len(ids)))
    return tuple(i + 1 for i in ids)


def is_truncated(token: str) -> bool:
    """Whether ``token`` is longer than the 48 bytes a character row can hold."""
    return token not in _SPECIAL and len(token.encode("utf-8")) > MAX_WORD_BYTES


def batch_to_char_ids(sentences: list[list[str]], add_boundaries: bool = False) -> torch.Tensor:
    """Character ids for a batch of tokenised sentences, padded with all-zero rows.

    Args:
        sentences: B lists of tokens.
        add_boundaries: wrap each sentence in ``<S>`` ... ``</S>``.

    Returns:
        (B, T, 50) int64 tensor; T is the longest sentence (plus 2 with boundaries).
    """
    if add_boundaries:
        sentences = [[BOS_TOKEN, *s, EOS_TOKEN] for s in sentences]
    longest = max((len(s) for s in sentences), default=0)
    out = torch.zeros(len(sentences), longest, MAX_CHARS, dtype=torch.long)  # (B, T, C)
    for b, sentence in enumerate(sentences):
        if sentence:
            out[b, : len(sentence)] = torch.tensor([word_char_ids(t) for t in sentence])
    return out
