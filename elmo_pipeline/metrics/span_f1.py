"""Span-level precision, recall and F1 for entity tagging, per type and overall (conlleval's rules).

A predicted entity counts only if its start, end and type all equal a gold entity's. Tags in any
of IOB1, IOB2 and BIOUL (``L-``/``U-``, also written ``E-``/``S-``) are read with conlleval's chunk
rules, so an ill-formed predicted sequence (``O I-PER``, ``B-PER I-LOC``) is still scored the way
the CoNLL-2003 evaluation scores it: an ``I-`` after ``O`` or another type starts an entity, a type
change ends one.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics import Metric

Span = tuple[int, int, str]  # (first token, last token, type), inclusive


def _parse(tag: str) -> tuple[str, str]:
    if tag in ("O", ""):
        return "O", ""
    prefix, kind = tag[0], tag[2:]
    return {"L": "E", "U": "S"}.get(prefix, prefix), kind


def _ends(prev: tuple[str, str], cur: tuple[str, str]) -> bool:
    """Whether an entity that includes the previous token ends there (conlleval's endOfChunk)."""
    (p, pt), (c, ct) = prev, cur
    if p in ("E", "S"):
        return True
    if p in ("B", "I") and c in ("B", "S", "O"):
        return True
    return p != "O" and pt != ct


def _starts(prev: tuple[str, str], cur: tuple[str, str]) -> bool:
    """Whether an entity starts at the current token (conlleval's startOfChunk)."""
    (p, pt), (c, ct) = prev, cur
    if c in ("B", "S"):
        return True
    if p in ("E", "S", "O") and c in ("E", "I"):
        return True
    return c != "O" and pt != ct


def tags_to_spans(tags: Sequence[str]) -> list[Span]:
    """The entities of a tag sequence (IOB1, IOB2 or BIOUL) as ``(first, last, type)``, inclusive."""
    spans: list[Span] = []
    start: int | None = None
    prev = ("O", "")
    for i, tag in enumerate([*tags, "O"]):
        cur = _parse(tag)
        if start is not None and _ends(prev, cur):
            spans.append((start, i - 1, prev[1]))
            start = None
        if _starts(prev, cur):
            start = i
        prev = cur
    return spans


class SpanF1(Metric):
    """Exact-match span F1 (micro over types) plus precision/recall/F1 per type.

    Args:
        tags: the tag vocabulary, id order (e.g. BIOUL: ``O, B-PER, I-PER, L-PER, U-PER, ...``).
        prefix: prepended to every key of :meth:`compute`.
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, tags: list[str], prefix: str = "", **kwargs) -> None:
        super().__init__(**kwargs)
        self.tags = list(tags)
        self.types = sorted({_parse(t)[1] for t in self.tags} - {""})
        self.prefix = prefix
        n = len(self.types)
        self.add_state("true_positives", torch.zeros(n, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("false_positives", torch.zeros(n, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("false_negatives", torch.zeros(n, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> None:
        """Args: preds and target (B, T) tag ids, mask (B, T) bool (left-aligned)."""
        lengths = mask.sum(dim=1).tolist()
        for p, g, n in zip(preds.tolist(), target.tolist(), lengths, strict=True):
            self.update_spans(
                tags_to_spans([self.tags[i] for i in p[:n]]), tags_to_spans([self.tags[i] for i in g[:n]])
            )

    def update_spans(self, predicted: list[Span], gold: list[Span]) -> None:
        """Count one sentence from its predicted and gold spans."""
        index = {kind: i for i, kind in enumerate(self.types)}
        predicted_set, gold_set = set(predicted), set(gold)
        for span in predicted_set:
            (self.true_positives if span in gold_set else self.false_positives)[index[span[2]]] += 1
        for span in gold_set - predicted_set:
            self.false_negatives[index[span[2]]] += 1

    @staticmethod
    def _prf(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor) -> tuple[torch.Tensor, ...]:
        tp, fp, fn = tp.double(), fp.double(), fn.double()
        precision = torch.where(tp + fp > 0, tp / (tp + fp).clamp(min=1), torch.zeros_like(tp))
        recall = torch.where(tp + fn > 0, tp / (tp + fn).clamp(min=1), torch.zeros_like(tp))
        f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall).clamp(min=1e-12), 0.0)
        return precision.float(), recall.float(), f1.float()

    def compute(self) -> dict[str, torch.Tensor]:
        """``f1``, ``precision``, ``recall`` (micro over all spans) and ``f1-<TYPE>`` etc. per type, in [0, 1]."""
        tp, fp, fn = self.true_positives, self.false_positives, self.false_negatives
        precision, recall, f1 = self._prf(tp.sum(), fp.sum(), fn.sum())
        out = {f"{self.prefix}f1": f1, f"{self.prefix}precision": precision, f"{self.prefix}recall": recall}
        p_type, r_type, f_type = self._prf(tp, fp, fn)
        for i, kind in enumerate(self.types):
            out[f"{self.prefix}f1-{kind}"] = f_type[i]
            out[f"{self.prefix}precision-{kind}"] = p_type[i]
            out[f"{self.prefix}recall-{kind}"] = r_type[i]
        return out
