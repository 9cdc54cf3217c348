"""conlleval, the CoNLL shared tasks' scorer, as a Python function over a predictions file.

This follows ``conlleval.pl`` (CoNLL-2000 to 2003): its chunk rules (``startOfChunk``,
``endOfChunk``) and its counting loop, line by line, independently of
:mod:`~elmo_pipeline.metrics.span_f1` (which compares sets of spans), so that each checks the
other. A file has one token per line, whitespace-separated columns whose last two are the gold and
the predicted tag, and a blank line (or a ``-DOCSTART-`` line) between sentences (``.gz`` is read
too). Like the Perl script it reads IOB1 and IOB2 (and its IOE rules); it has no ``S-`` tag, so
files for it are written in IOB2.

    precision = correct chunks / predicted chunks,  recall = correct / gold,  F1 = 2PR / (P + R)
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

from elmo_pipeline.errors import InputError


@dataclass
class ChunkCounts:
    """Chunk counts of one sentence or a whole file."""

    correct: int = 0
    predicted: int = 0
    gold: int = 0

    def __add__(self, other: ChunkCounts) -> ChunkCounts:
        return ChunkCounts(self.correct + other.correct, self.predicted + other.predicted, self.gold + other.gold)

    def scores(self) -> dict[str, float]:
        """Precision, recall and F1 in percent (0 where undefined, as conlleval prints them)."""
        precision = 100.0 * self.correct / self.predicted if self.predicted else 0.0
        recall = 100.0 * self.correct / self.gold if self.gold else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return {"precision": precision, "recall": recall, "f1": f1}


def _split(tag: str) -> tuple[str, str]:
    if tag == "O":
        return "O", ""
    prefix, _, kind = tag.partition("-")
    return prefix, kind


def _end_of_chunk(prev_tag: str, tag: str, prev_type: str, kind: str) -> bool:
    """conlleval.pl's endOfChunk: whether a chunk ended at the previous token."""
    return (
        (prev_tag in ("B", "I") and tag in ("B", "O"))
        or (prev_tag == "E" and tag in ("E", "I", "O"))
        or (prev_tag not in ("O", ".") and prev_type != kind)
        or prev_tag in ("[", "]")
    )


def _start_of_chunk(prev_tag: str, tag: str, prev_type: str, kind: str) -> bool:
    """conlleval.pl's startOfChunk: whether a chunk starts at this token."""
    return (
        (tag == "B" and prev_tag in ("B", "I", "O"))
        or (tag == "I" and prev_tag == "O")
        or (tag == "E" and prev_tag in ("E", "O"))
        or (tag == "I" and prev_tag == "E")
        or (tag not in ("O", ".") and prev_type != kind)
        or tag in ("[", "]")
    )


def count_chunks(gold: list[str], predicted: list[str]) -> ChunkCounts:
    """conlleval's counts for one sentence (its tags in any of the schemes above)."""
    counts = ChunkCounts()
    in_correct = False
    last_gold, last_gold_type, last_pred, last_pred_type = "O", "", "O", ""
    for g_tag, p_tag in [*zip(gold, predicted, strict=True), ("O", "O")]:  # the sentence boundary closes chunks
        g, g_type = _split(g_tag)
        p, p_type = _split(p_tag)
        gold_ends = _end_of_chunk(last_gold, g, last_gold_type, g_type)
        pred_ends = _end_of_chunk(last_pred, p, last_pred_type, p_type)
        if in_correct:
            if gold_ends and pred_ends and last_gold_type == last_pred_type:
                in_correct = False
                counts.correct += 1
            elif gold_ends != pred_ends or g_type != p_type:
                in_correct = False
        gold_starts = _start_of_chunk(last_gold, g, last_gold_type, g_type)
        pred_starts = _start_of_chunk(last_pred, p, last_pred_type, p_type)
        if gold_starts and pred_starts and g_type == p_type:
            in_correct = True
        counts.gold += gold_starts
        counts.predicted += pred_starts
        last_gold, last_gold_type, last_pred, last_pred_type = g, g_type, p, p_type
    return counts


def read_sentences(path: str | Path) -> list[tuple[list[str], list[str]]]:
    """The (gold tags, predicted tags) of each sentence of a CoNLL predictions file."""
    sentences: list[tuple[list[str], list[str]]] = []
    gold: list[str] = []
    predicted: list[str] = []
    width = None
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            fields = line.split()
            if not fields or fields[0] == "-DOCSTART-":
                if gold:
                    sentences.append((gold, predicted))
                gold, predicted = [], []
                continue
            if len(fields) < 3 or (width is not None and len(fields) != width):
                raise InputError(
                    f"{path}, line {number}: {len(fields)} columns; every token line needs the same columns, "
                    "at least the token, the gold tag and the predicted tag"
                )
            width = len(fields)
            gold.append(fields[-2])
            predicted.append(fields[-1])
    if gold:
        sentences.append((gold, predicted))
    return sentences


def conlleval(path: str | Path) -> dict[str, float]:
    """Precision, recall and F1 (percent) of a CoNLL predictions file, and its chunk counts."""
    total = ChunkCounts()
    for gold, predicted in read_sentences(path):
        total = total + count_chunks(gold, predicted)
    return {**total.scores(), "correct": total.correct, "predicted": total.predicted, "gold": total.gold}
