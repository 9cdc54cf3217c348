"""CoNLL-2003 column files: ``token POS chunk NER`` per line, a blank line between sentences.

``-DOCSTART- -X- -X- O`` lines separate documents; they end the current sentence and are not
examples. Tags come in as IOB1 (the original distribution: ``B-`` only between two adjacent
entities of the same type) or IOB2 (every entity starts with ``B-``) and go out as BIOUL, the
encoding the CRF tagger is trained on (``U-`` single-token entity, ``L-`` last token).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from elmo_pipeline.data.readers.base import Format, ReaderError, TaggedSentence, open_lines
from elmo_pipeline.tasks import TaskSpec

log = logging.getLogger(__name__)

DOCSTART = "-DOCSTART-"
IOB_SCHEMES = ("IOB1", "IOB2")


def bioul_tags(entity_types: list[str]) -> list[str]:
    """The BIOUL tag set, ``O`` first: ``O, B-PER, I-PER, L-PER, U-PER, B-LOC, ...``."""
    return ["O"] + [f"{prefix}-{kind}" for kind in entity_types for prefix in "BILU"]


def split_tag(tag: str) -> tuple[str, str]:
    """``"B-PER"`` -> ``("B", "PER")``; ``"O"`` -> ``("O", "")``."""
    if tag == "O":
        return "O", ""
    prefix, _, kind = tag.partition("-")
    return prefix, kind


def iob_to_iob2(tags: list[str]) -> tuple[list[str], int]:
    """IOB1 (or IOB2) -> IOB2: an ``I-X`` that does not continue an ``X`` entity starts one (``B-X``).

    Returns the tags and how many ``I-`` tags started an entity (0 for valid IOB2 input).
    """
    out, started = [], 0
    for i, tag in enumerate(tags):
        prefix, kind = split_tag(tag)
        previous = split_tag(out[i - 1]) if i else ("O", "")
        if prefix == "I" and (previous[0] == "O" or previous[1] != kind):
            tag, started = f"B-{kind}", started + 1
        out.append(tag)
    return out, started


def iob2_to_bioul(tags: list[str]) -> list[str]:
    """IOB2 -> BIOUL: an entity's last token becomes ``L-`` (``U-`` when it is also its first)."""
    out = []
    for i, tag in enumerate(tags):
        prefix, kind = split_tag(tag)
        continues = i + 1 < len(tags) and tags[i + 1] == f"I-{kind}"
        if prefix == "B":
            out.append(tag if continues else f"U-{kind}")
        elif prefix == "I":
            out.append(tag if continues else f"L-{kind}")
        else:
            out.append(tag)
    return out


def bioul_to_iob2(tags: list[str]) -> list[str]:
    """BIOUL -> IOB2 (``U-`` -> ``B-``, ``L-`` -> ``I-``)."""
    return [{"U": "B-", "L": "I-"}.get(t[0], t[:2]) + t[2:] if t != "O" else t for t in tags]


def to_bioul(tags: list[str], scheme: str) -> tuple[list[str], int]:
    """IOB1/IOB2 tags -> BIOUL, and the count of entities that began with ``I-`` (an IOB2 file should have none)."""
    if scheme not in IOB_SCHEMES:
        raise ValueError(f"conll: unknown tag scheme {scheme!r}; choose IOB1 or IOB2 (--data.tag_scheme)")
    iob2, started = iob_to_iob2(tags)
    return iob2_to_bioul(iob2), (started if scheme == "IOB2" else 0)


def _check_tag(tag: str, entity_types: list[str], path: Path | str, line: int) -> None:
    prefix, kind = split_tag(tag)
    if tag != "O" and (prefix not in ("B", "I") or kind not in entity_types):
        raise ReaderError(path, line, f"unknown NER tag {tag!r}: expected O or B-/I- followed by one of {entity_types}")


def read_conll(
    path: str | Path, entity_types: list[str], scheme: str = "IOB2", num_columns: int = 4
) -> tuple[list[TaggedSentence], dict[str, int]]:
    """Read a CoNLL-2003 file into BIOUL-tagged sentences.

    Args:
        path: the file (plain or .gz).
        entity_types: the allowed entity types (the task's labels).
        scheme: ``IOB1`` or ``IOB2``, the encoding of the file's tags.
        num_columns: columns per token line; the NER tag is the last one.

    Returns:
        The sentences and counts: ``sentences``, ``tokens``, ``documents``, ``entities_started_by_I``
        (IOB2 files only: ``I-`` tags after ``O`` or another type, read as ``B-``, as conlleval does).
    """
    if scheme not in IOB_SCHEMES:
        raise ValueError(f"conll: unknown tag scheme {scheme!r}; choose IOB1 or IOB2 (--data.tag_scheme)")
    sentences: list[TaggedSentence] = []
    counts = {"sentences": 0, "tokens": 0, "documents": 0, "entities_started_by_I": 0}
    tokens: list[str] = []
    tags: list[str] = []

    def flush() -> None:
        if tokens:
            bioul, started = to_bioul(tags, scheme)
            sentences.append(TaggedSentence(list(tokens), bioul))
            counts["entities_started_by_I"] += started
            tokens.clear()
            tags.clear()

    for line_no, line in open_lines(path):
        columns = line.split()
        if not columns:
            flush()
            continue
        if columns[0] == DOCSTART:
            flush()
            counts["documents"] += 1
            continue
        if len(columns) != num_columns:
            raise ReaderError(
                path, line_no, f"expected {num_columns} columns (token POS chunk NER), got {len(columns)}: {line!r}"
            )
        _check_tag(columns[-1], entity_types, path, line_no)
        tokens.append(columns[0])
        tags.append(columns[-1])
    flush()
    counts["sentences"] = len(sentences)
    counts["tokens"] = sum(len(s.tokens) for s in sentences)
    if counts["entities_started_by_I"]:
        log.warning("%s: %d entities start with I- in an IOB2 file; read as B-", path, counts["entities_started_by_I"])
    return sentences, counts


def write_conll(path: str | Path, sentences: list[TaggedSentence], docstart: bool = True) -> None:
    """Write BIOUL-tagged sentences as a 4-column IOB2 CoNLL file (POS and chunk columns ``_``)."""
    lines = [f"{DOCSTART} -X- -X- O", ""] if docstart else []
    for sentence in sentences:
        for token, tag in zip(sentence.tokens, bioul_to_iob2(sentence.tags), strict=True):
            lines.append(f"{token} _ _ {tag}")
        lines.append("")
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def from_hub_rows(rows: list[dict[str, Any]], spec: TaskSpec, name: str) -> tuple[list[TaggedSentence], dict[str, int]]:
    """The same sentences from hub rows (``tokens`` and integer IOB2 ``ner_tags``, named by ``hub.label_names``)."""
    token_field = spec.hub.fields.get("tokens", "tokens")
    tag_field = spec.hub.fields.get("tags", "ner_tags")
    names = spec.hub.label_names or []
    sentences = []
    counts = {"sentences": 0, "tokens": 0, "documents": 0, "entities_started_by_I": 0}
    for row_no, row in enumerate(rows, start=1):
        for key in (token_field, tag_field):
            if key not in row:
                raise ReaderError(name, row_no, f"missing field {key!r}")
        tokens, ids = list(row[token_field]), list(row[tag_field])
        if len(tokens) != len(ids):
            raise ReaderError(name, row_no, f"{len(tokens)} tokens but {len(ids)} tags")
        if tokens and tokens[0] == DOCSTART:
            counts["documents"] += 1
            continue
        if not tokens:
            continue
        tags = []
        for i in ids:
            tag = names[i] if isinstance(i, int) and 0 <= i < len(names) else str(i)
            _check_tag(tag, spec.labels, name, row_no)
            tags.append(tag)
        bioul, started = to_bioul(tags, "IOB2")
        counts["entities_started_by_I"] += started
        sentences.append(TaggedSentence(tokens, bioul))
    counts["sentences"] = len(sentences)
    counts["tokens"] = sum(len(s.tokens) for s in sentences)
    return sentences, counts


FORMAT = Format(
    name="conll",
    read_file=lambda path, spec, options: read_conll(
        path, spec.labels, options.tag_scheme or spec.local.tag_scheme or "IOB2"
    ),
    read_hub_rows=lambda rows, spec, name, options: from_hub_rows(rows, spec, name),
)
