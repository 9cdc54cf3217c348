"""A task's predictions, written in the task's own format, and read back as per-example statistics.

* NER: CoNLL columns ``token gold predicted``, one token per line and a blank line between sentences,
  with the tags in IOB2 (BIOUL's ``U-`` written ``B-``, ``L-`` written ``I-``), which the official
  script scores as is: ``perl conlleval < test.conll``. conlleval.pl has no ``S-`` tag, so IOBES
  would be misread (two adjacent entities of one type would merge). A well-formed BIOUL sequence,
  which the constrained CRF always outputs, keeps its entities exactly in IOB2.
* SST-5 and SNLI: ``<split>.txt``, one predicted label per line in the order of the split's file,
  and ``<split>.gold.txt`` beside it.

The statistics feed the paired bootstrap (:mod:`elmo_pipeline.metrics.bootstrap`): chunk counts per
sentence for NER, ``(correct, 1)`` per example otherwise.
"""

from __future__ import annotations

import gzip
import shutil
import zlib
from pathlib import Path

import numpy as np

from elmo_pipeline.metrics.conlleval import count_chunks, read_sentences


def _iob2(tag: str) -> str:
    return {"U": "B", "L": "I"}.get(tag[0], tag[0]) + tag[1:] if tag != "O" else tag


def write_predictions(
    directory: str | Path,
    split: str,
    kind: str,
    texts: list[list[list[str]]],
    gold: list[list[str] | str],
    predicted: list[list[str] | str],
) -> Path:
    """Write one split's predictions; returns the file (``<split>.conll`` or ``<split>.txt``).

    Args:
        directory: the folder (created).
        split: ``test``, ``validation``, ...
        kind: the task's kind: ``tagging``, ``classification`` or ``pair_classification``.
        texts: per example, its texts (each a token list).
        gold: per example, the gold tags (tagging) or label.
        predicted: per example, the predicted tags or label.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if len(gold) != len(predicted) or len(texts) != len(gold):
        raise ValueError(f"predictions: {len(texts)} examples, {len(gold)} gold, {len(predicted)} predicted")
    if kind == "tagging":
        path = directory / f"{split}.conll"
        lines = []
        for (tokens,), tags, guesses in zip(texts, gold, predicted, strict=True):
            for token, tag, guess in zip(tokens, tags, guesses, strict=True):
                lines.append(f"{token} {_iob2(tag)} {_iob2(guess)}\n")
            lines.append("\n")
    else:
        path = directory / f"{split}.txt"
        lines = [f"{label}\n" for label in predicted]
        _write(directory / f"{split}.gold.txt", [f"{label}\n" for label in gold])
    _write(path, lines)
    return path


def _write(path: Path, lines: list[str]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(lines), encoding="utf-8")
    tmp.replace(path)


def gold_path(path: str | Path) -> Path:
    """The gold labels beside a ``<split>.txt`` (or ``.txt.gz``) predictions file."""
    path = Path(path)
    gz = path.name.endswith(".gz")
    stem = path.name.removesuffix(".gz").removesuffix(".txt")
    return path.with_name(f"{stem}.gold.txt" + (".gz" if gz else ""))


def _read_lines(path: Path) -> list[str]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return f.read().splitlines()


def archive(path: str | Path, destination: str | Path) -> Path:
    """Copy a predictions file (and its gold labels) gzipped to ``destination`` (a name ending in ``.conll`` or
    ``.txt``; ``.gz`` is added). Returns the copied predictions file."""
    path, destination = Path(path), Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    pairs = [(path, destination)]
    if not path.name.endswith(".conll"):
        pairs.append((gold_path(path), gold_path(destination)))
    for source, target in pairs:
        target = target.with_name(target.name.removesuffix(".gz") + ".gz")
        if _holds(target, source):
            continue  # the report is rewritten after every run: copy each file once
        tmp = target.with_name(target.name + ".tmp")
        with open(source, "rb") as f, open(tmp, "wb") as raw:
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as out:  # the same bytes every time
                shutil.copyfileobj(f, out)
        tmp.replace(target)
    return destination.with_name(destination.name.removesuffix(".gz") + ".gz")


def _holds(target: Path, source: Path) -> bool:
    """Whether the gzipped ``target`` holds exactly ``source``'s bytes.

    By content, not by modification time: a checkout or a copy gives an old table's file a newer time
    than a new run's predictions of the same name.
    """
    if not target.is_file():
        return False
    try:
        with gzip.open(target, "rb") as f:
            return f.read() == source.read_bytes()
    except (OSError, EOFError, zlib.error):  # not a readable gzip file: copy again
        return False


def example_statistics(path: str | Path) -> np.ndarray:
    """Per-example statistics of a predictions file: (N, 3) chunk counts for ``.conll``, (N, 2) otherwise."""
    path = Path(path)
    if path.name.removesuffix(".gz").endswith(".conll"):
        counts = [count_chunks(gold, predicted) for gold, predicted in read_sentences(path)]
        return np.array([(c.correct, c.predicted, c.gold) for c in counts], dtype=np.int64).reshape(-1, 3)
    predicted = _read_lines(path)
    gold = _read_lines(gold_path(path))
    if len(gold) != len(predicted):
        raise ValueError(f"{path}: {len(predicted)} predictions but {len(gold)} gold labels")
    return np.array([(int(p == g), 1) for p, g in zip(predicted, gold, strict=True)], dtype=np.int64).reshape(-1, 2)
