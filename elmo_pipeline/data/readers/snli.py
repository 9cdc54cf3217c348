"""SNLI 1.0 JSONL (plain or gzipped): one JSON object per line with ``gold_label``, ``sentence1``
(the premise) and ``sentence2`` (the hypothesis).

Pairs whose gold label is ``-`` (no annotator majority) are dropped and counted, as in the paper's
setup. Sentences are tokenised with the project's tokenizer (:mod:`elmo_pipeline.text.tokenize`),
so that the hub's ``premise``/``hypothesis`` strings and the JSONL give the same tokens.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from elmo_pipeline.data.readers.base import Format, LabelledPair, ReaderError, open_lines
from elmo_pipeline.tasks import TaskSpec
from elmo_pipeline.text.tokenize import tokenize

log = logging.getLogger(__name__)

NO_GOLD = "-"
FIELDS = ("gold_label", "sentence1", "sentence2")


def _pair(premise: Any, hypothesis: Any, label: str, labels: list[str], where: tuple[str | Path, int]):
    if label not in labels:
        raise ReaderError(*where, f"unknown gold_label {label!r} (expected one of {labels} or '-')")
    tokens = []
    for key, text in (("sentence1", premise), ("sentence2", hypothesis)):
        if not isinstance(text, str):
            raise ReaderError(*where, f"{key} is not a string: {text!r}")
        tokens.append(tokenize(text))
        if not tokens[-1]:
            raise ReaderError(*where, f"{key} is empty")
    return LabelledPair(tokens[0], tokens[1], label)


def read_snli(path: str | Path, labels: list[str]) -> tuple[list[LabelledPair], dict[str, int]]:
    """Read an SNLI JSONL file.

    Returns:
        The pairs and counts: ``pairs`` kept, ``dropped_no_gold_label`` (gold label ``-``).
    """
    pairs: list[LabelledPair] = []
    dropped = 0
    for line_no, line in open_lines(path):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise ReaderError(path, line_no, f"not valid JSON ({error.msg})") from None
        if not isinstance(row, dict):
            raise ReaderError(path, line_no, f"expected a JSON object, got {type(row).__name__}")
        for key in FIELDS:
            if key not in row:
                raise ReaderError(path, line_no, f"missing field {key!r}")
        if row["gold_label"] == NO_GOLD:
            dropped += 1
            continue
        pairs.append(_pair(row["sentence1"], row["sentence2"], row["gold_label"], labels, (path, line_no)))
    if dropped:
        log.info("%s: dropped %d pairs whose gold label is '-'", path, dropped)
    return pairs, {"pairs": len(pairs), "dropped_no_gold_label": dropped}


def write_snli(path: str | Path, pairs: list[LabelledPair]) -> None:
    """Write pairs as compact SNLI JSONL (tokens joined by spaces; the tokenizer reads them back unchanged)."""
    import gzip

    lines = [
        json.dumps({"gold_label": p.label, "sentence1": " ".join(p.premise), "sentence2": " ".join(p.hypothesis)})
        for p in pairs
    ]
    data = ("\n".join(lines) + "\n").encode("utf-8")
    Path(path).write_bytes(gzip.compress(data, mtime=0) if str(path).endswith(".gz") else data)


def from_hub_rows(rows: list[dict[str, Any]], spec: TaskSpec, name: str) -> tuple[list[LabelledPair], dict[str, int]]:
    """The same pairs from hub rows (``premise``, ``hypothesis``, integer ``label``; -1 is ``-``)."""
    fields = {"premise": "premise", "hypothesis": "hypothesis", "label": "label", **spec.hub.fields}
    names = spec.hub.label_names or spec.labels
    pairs: list[LabelledPair] = []
    dropped = 0
    for row_no, row in enumerate(rows, start=1):
        for key in ("premise", "hypothesis", "label"):
            if fields[key] not in row:
                raise ReaderError(name, row_no, f"missing field {fields[key]!r}")
        label = row[fields["label"]]
        if isinstance(label, int):
            label = names[label] if 0 <= label < len(names) else NO_GOLD
        if label == NO_GOLD:
            dropped += 1
            continue
        pairs.append(_pair(row[fields["premise"]], row[fields["hypothesis"]], label, spec.labels, (name, row_no)))
    return pairs, {"pairs": len(pairs), "dropped_no_gold_label": dropped}


FORMAT = Format(
    name="snli_jsonl",
    read_file=lambda path, spec, options: read_snli(path, spec.labels),
    read_hub_rows=lambda rows, spec, name, options: from_hub_rows(rows, spec, name),
)
