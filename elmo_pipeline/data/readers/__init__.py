"""Readers of the downstream datasets: the same examples from the Hugging Face hub or from local files.

    read_split(spec, "train", data_root="../shared/data")   # local files in the standard format
    read_split(spec, "train")                                # the hub id of the task spec

Each reader returns a list of examples and a dict of counts (what was read, what was dropped and
why). Malformed input raises :class:`ReaderError`, which names the file, the line and the problem.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from elmo_pipeline.data.readers import conll, snli, sst
from elmo_pipeline.data.readers.base import (
    Example,
    Format,
    LabelledPair,
    LabelledText,
    ReaderError,
    ReadOptions,
    TaggedSentence,
    open_lines,
)
from elmo_pipeline.errors import CannotProceed, InputError
from elmo_pipeline.tasks import SPLITS, TaskSpec

FORMATS: dict[str, Format] = {f.name: f for f in (conll.FORMAT, sst.FORMAT, snli.FORMAT)}


def _hub_rows(spec: TaskSpec, split: str) -> tuple[str, list[dict[str, Any]]]:
    """The rows of a split on the hub (``datasets.load_dataset``), and a name for error messages."""
    from datasets import load_dataset

    hub_split = spec.hub.splits.get(split, split)
    try:
        dataset = load_dataset(spec.hub.id, spec.hub.config, split=hub_split)
    except Exception as error:  # no network, no such dataset, ...: say how to read local files instead
        raise CannotProceed(
            f"{spec.name}: could not load {spec.hub.id} ({hub_split}) from the Hugging Face hub ({error}); "
            f"offline, pass --data.data_root with the local files {spec.local.files}"
        ) from error
    return f"hf:{spec.hub.id}[{hub_split}]", list(dataset)


def read_split(
    spec: TaskSpec,
    split: str,
    data_root: str | Path | None = None,
    path: str | Path | None = None,
    tag_scheme: str | None = None,
    subtrees: bool = False,
) -> tuple[list[Example], dict[str, int]]:
    """Read one split of a task from local files or from the hub.

    Args:
        spec: the task.
        split: ``train``, ``validation`` or ``test``.
        data_root: folder the spec's local files are relative to; None reads the hub.
        path: this split's file (absolute, or relative to ``data_root``) instead of the spec's.
        tag_scheme: tagging only: ``IOB1`` or ``IOB2`` tags in the file (default: the spec's); always
            BIOUL out.
        subtrees: SST only: one example per labelled subtree instead of per sentence.

    Returns:
        The examples and a dict of counts.
    """
    if split not in SPLITS:
        raise InputError(f"{spec.name}: unknown split {split!r}; splits are {list(SPLITS)}")
    if spec.format not in FORMATS:
        raise InputError(f"{spec.name}: unknown format {spec.format!r} in its task.yaml; formats are {sorted(FORMATS)}")
    reader, options = FORMATS[spec.format], ReadOptions(tag_scheme=tag_scheme, subtrees=subtrees)
    if data_root is None and path is None:
        name, rows = _hub_rows(spec, split)
        return reader.read_hub_rows(rows, spec, name, options)
    file = Path(path if path is not None else spec.local.files[split])
    if data_root is not None and not file.is_absolute():
        file = Path(data_root) / file
    examples, counts = reader.read_file(file, spec, options)
    if not examples:
        raise InputError(
            f"{file}: the {split} split of {spec.name} has no examples ({counts}); check the file, or "
            "--data.data_root and --data.split_files"
        )
    return examples, counts


__all__ = [
    "FORMATS",
    "Example",
    "Format",
    "LabelledPair",
    "LabelledText",
    "ReadOptions",
    "ReaderError",
    "TaggedSentence",
    "open_lines",
    "read_split",
]
