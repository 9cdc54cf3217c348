"""Stanford Sentiment Treebank trees: one labelled PTB tree per line, e.g.

    (3 (2 It) (4 (2 's) (3 (2 a) (3 lovely) (2 film))))

Every node carries a sentiment label 0-4. Dev and test are read as whole sentences (the root's
label); training can use every labelled subtree as an example of its own, as the paper does
(``subtrees=True``; 318,582 subtrees for the 8,544 training sentences, one per node).

The trees keep the Penn Treebank escapes (``-LRB-``, ``\\/``, ``` `` ```); the examples unescape them
(:func:`unescape_ptb`) so that the words read like the raw text the biLM was pretrained on -- a biLM
has seen "(" in running text, never "-LRB-".
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from elmo_pipeline.data.readers.base import Format, LabelledText, ReaderError, open_lines
from elmo_pipeline.tasks import TaskSpec

_TOKEN = re.compile(r"\(|\)|[^ \t\r\n()]+")  # words hold no ASCII space; SST has one "8\xa01\\/2"
PTB_ESCAPES = {"-LRB-": "(", "-RRB-": ")", "-LSB-": "[", "-RSB-": "]", "-LCB-": "{", "-RCB-": "}", "``": '"', "''": '"'}


def unescape_ptb(word: str) -> str:
    """A Penn Treebank token as raw text: ``-LRB-`` -> ``(``, ``1\\/2`` -> ``1/2``, ``\\*`` -> ``*``."""
    return PTB_ESCAPES.get(word, word.replace("\\/", "/").replace("\\*", "*"))


@dataclass
class Tree:
    """A labelled tree node: a word (leaf) or a list of children."""

    label: str
    children: list[Tree] = field(default_factory=list)
    word: str | None = None

    def leaves(self) -> list[str]:
        if self.word is not None:
            return [self.word]
        return [w for child in self.children for w in child.leaves()]

    def subtrees(self) -> list[Tree]:
        """Every node, the root first (pre-order)."""
        return [self] + [s for child in self.children for s in child.subtrees()]

    def __str__(self) -> str:
        if self.word is not None:
            return f"({self.label} {self.word})"
        return f"({self.label} " + " ".join(str(c) for c in self.children) + ")"


def parse_tree(text: str, labels: list[str], path: str | Path = "<string>", line: int = 1) -> Tree:
    """Parse one PTB tree; unbalanced brackets, empty nodes and unknown labels raise :class:`ReaderError`."""
    tokens = _TOKEN.findall(text)
    if not tokens:
        raise ReaderError(path, line, "empty line: expected a tree such as (2 (2 a) (3 film))")
    opened = tokens.count("(") - tokens.count(")")
    if opened:
        what = f"{opened} '(' never closed" if opened > 0 else f"{-opened} ')' too many"
        raise ReaderError(path, line, f"unbalanced brackets: {what}")
    pos = 0

    def node() -> Tree:
        nonlocal pos
        if tokens[pos] != "(":
            raise ReaderError(path, line, f"expected '(' at token {pos + 1}, got {tokens[pos]!r}")
        if pos + 2 >= len(tokens) or tokens[pos + 1] in "()":
            raise ReaderError(path, line, f"a node without a label at token {pos + 1}")
        label = tokens[pos + 1]
        if label not in labels:
            raise ReaderError(path, line, f"unknown label {label!r} (expected one of {' '.join(labels)})")
        pos += 2
        if tokens[pos] == ")":
            raise ReaderError(path, line, f"empty node ({label}) at token {pos}")
        if tokens[pos] != "(":
            word = tokens[pos]
            pos += 1
            if tokens[pos] != ")":
                raise ReaderError(path, line, f"a leaf ({label} {word} ...) holds more than one word")
            pos += 1
            return Tree(label, word=word)
        children = []
        while tokens[pos] == "(":
            children.append(node())
        if tokens[pos] != ")":
            raise ReaderError(path, line, f"a node mixes words and subtrees at token {pos + 1} ({tokens[pos]!r})")
        pos += 1
        return Tree(label, children)

    tree = node()
    if pos != len(tokens):
        raise ReaderError(path, line, f"text after the tree's closing bracket (token {pos + 1})")
    return tree


def _examples(tree: Tree, subtrees: bool, unescape: bool = True) -> list[LabelledText]:
    nodes = tree.subtrees() if subtrees else [tree]
    if not unescape:
        return [LabelledText(node.leaves(), node.label) for node in nodes]
    return [LabelledText([unescape_ptb(w) for w in node.leaves()], node.label) for node in nodes]


def read_sst(
    path: str | Path, labels: list[str], subtrees: bool = False, unescape: bool = True
) -> tuple[list[LabelledText], dict[str, int]]:
    """Read an SST trees file.

    Args:
        path: the file (plain or .gz), one tree per line.
        labels: the allowed labels (``0`` .. ``4``).
        subtrees: one example per labelled subtree (training, as the paper does) instead of per sentence.
        unescape: words as raw text (``(`` for ``-LRB-``) rather than the treebank's escapes.

    Returns:
        The examples and counts (``sentences``, ``examples``).
    """
    examples: list[LabelledText] = []
    sentences = 0
    for line_no, line in open_lines(path):
        if not line.strip():
            continue
        examples.extend(_examples(parse_tree(line, labels, path, line_no), subtrees, unescape))
        sentences += 1
    return examples, {"sentences": sentences, "examples": len(examples)}


def from_hub_rows(
    rows: list[dict[str, Any]], spec: TaskSpec, name: str, subtrees: bool = False
) -> tuple[list[LabelledText], dict[str, int]]:
    """The same examples from hub rows that hold the PTB tree string (``hub.fields.tree``)."""
    key = spec.hub.fields.get("tree", "ptb_tree")
    examples: list[LabelledText] = []
    for row_no, row in enumerate(rows, start=1):
        if key not in row:
            raise ReaderError(name, row_no, f"missing field {key!r}")
        examples.extend(_examples(parse_tree(row[key], spec.labels, name, row_no), subtrees))
    return examples, {"sentences": len(rows), "examples": len(examples)}


FORMAT = Format(
    name="sst_ptb",
    read_file=lambda path, spec, options: read_sst(path, spec.labels, subtrees=options.subtrees),
    read_hub_rows=lambda rows, spec, name, options: from_hub_rows(rows, spec, name, subtrees=options.subtrees),
)
