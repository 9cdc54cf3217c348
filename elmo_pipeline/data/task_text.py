"""A downstream task's text without its labels: the corpus for tuning a biLM on the task's own sentences.

ELMo §3.4 (and the paper's supplement) fine-tunes the biLM on the task's training text before it is frozen.
:func:`task_texts` gives the distinct texts of one split (a sentence, or each side of a premise/hypothesis pair,
in file order, as the task's DataModule tokenises them); :func:`write_task_text` writes them one per line, tokens
separated by one space, for ``pretrain --data.tokenizer whitespace``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from elmo_pipeline.data.readers import LabelledPair, LabelledText, TaggedSentence, read_split
from elmo_pipeline.files import write_bytes_atomic
from elmo_pipeline.tasks import find_resource, load_task

log = logging.getLogger(__name__)


def task_texts(
    task: str,
    data_root: str | None,
    split: str = "train",
    split_file: str | None = None,
    tag_scheme: str | None = None,
) -> list[list[str]]:
    """The distinct token lists of one split of ``task``, in file order (labels are not read into them).

    Args:
        task: a task name or folder (as ``--data.task``).
        data_root: the folder of the task's local files (null: the hub).
        split: ``train``, ``validation`` or ``test``.
        split_file: this split's file instead of the spec's (as ``--data.split_files``).
        tag_scheme: tagging only, as ``--data.tag_scheme``.
    """
    spec = load_task(task)
    root = find_resource(data_root) if data_root else None
    examples, _ = read_split(spec, split, data_root=root, path=split_file, tag_scheme=tag_scheme)
    seen: dict[tuple[str, ...], None] = {}
    for example in examples:
        if isinstance(example, TaggedSentence | LabelledText):
            seen.setdefault(tuple(example.tokens), None)
        elif isinstance(example, LabelledPair):
            seen.setdefault(tuple(example.premise), None)
            seen.setdefault(tuple(example.hypothesis), None)
    return [list(tokens) for tokens in seen if tokens]


def write_task_text(path: str | Path, texts: list[list[str]]) -> dict[str, int]:
    """Write ``texts`` one per line, tokens joined by one space (atomically); returns the counts.

    A token that holds whitespace would be split by the whitespace tokenizer: it is written with each
    whitespace character replaced by ``_``, and counted (``tokens_with_whitespace``), never dropped.
    """
    lines, mended = [], 0
    for tokens in texts:
        out = []
        for token in tokens:
            if any(c.isspace() for c in token):
                token = "".join("_" if c.isspace() else c for c in token)
                mended += 1
            out.append(token)
        lines.append(" ".join(out))
    if mended:
        log.warning("%s: %d tokens held whitespace; written with '_' in its place", path, mended)
    write_bytes_atomic(path, ("\n".join(lines) + "\n").encode("utf-8"))
    return {"sentences": len(lines), "tokens": sum(map(len, texts)), "tokens_with_whitespace": mended}
