"""A small, deterministic word tokenizer for raw English text.

Close to Penn Treebank conventions (the convention of the downstream datasets): punctuation is
split off, clitics become their own tokens (``don't`` -> ``do n't``, ``John's`` -> ``John 's``),
numbers with separators stay whole (``3,000.50``), and already tokenised text passes through
unchanged. It is a regular expression, not a statistical model: fast and reproducible.
"""

from __future__ import annotations

import re

_CLITIC = re.compile(r"(?i)(\w)(n't|'s|'re|'ve|'ll|'d|'m)\b")
_TOKEN = re.compile(
    r"""
    <unk>                                   # WikiText's unknown-word marker
  | (?:[A-Za-z]\.){2,}                      # abbreviations such as U.S.
  | \d+(?:[.,:/]\d+)+(?![\w-])              # numbers with separators: 3,000.50 12:30 1/2
  | n't | '(?:s|re|ve|ll|d|m)\b             # clitics split off by _CLITIC
  | ``|''|--|\.\.\.                         # PTB quotes, dashes, ellipses
  | \w+(?:[-'’]\w+)*                        # words, hyphenated words
  | \S                                      # any other single character
    """,
    re.VERBOSE | re.IGNORECASE,
)
_NO_SPACE_BEFORE = re.compile(r" (?=[.,!?;:%)\]}]|n't\b|'(?:s|re|ve|ll|d|m)\b)")
_NO_SPACE_AFTER = re.compile(r"(?<=[(\[{$]) ")
_WIKITEXT = {"@-@": "-", "@,@": ",", "@.@": "."}
_SENTENCE_END = frozenset({".", "!", "?"})


def tokenize(text: str) -> list[str]:
    """Split one line of raw text into tokens."""
    return _TOKEN.findall(_CLITIC.sub(r"\1 \2", text))


def detokenize(tokens: list[str]) -> str:
    """Tokens to readable text: no space before punctuation and clitics, none after opening brackets."""
    text = _NO_SPACE_BEFORE.sub("", " ".join(tokens))
    return _NO_SPACE_AFTER.sub("", text)


def tokenize_wikitext(text: str) -> list[str]:
    """WikiText is already tokenised: undo its ``@-@`` escapes and map ``<unk>`` to ``<UNK>``."""
    out = []
    for tok in text.split():
        tok = _WIKITEXT.get(tok, tok)
        out.append("<UNK>" if tok == "<unk>" else tok)
    return out


def split_sentences(tokens: list[str], max_tokens: int) -> list[list[str]]:
    """Split a tokenised paragraph after ``.``/``!``/``?`` and cut pieces longer than ``max_tokens``."""
    pieces: list[list[str]] = []
    current: list[str] = []
    for i, tok in enumerate(tokens):
        current.append(tok)
        at_end = tok in _SENTENCE_END and (i + 1 == len(tokens) or tokens[i + 1] not in _SENTENCE_END)
        if at_end or len(current) == max_tokens:
            pieces.append(current)
            current = []
    if current:
        pieces.append(current)
    return pieces
