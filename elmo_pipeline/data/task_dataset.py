"""A downstream task's examples as a Dataset: distinct texts, instances pointing into them, and batches.

A split keeps each distinct text once (what the activation cache is built over); an instance holds the
indices of its texts (one, or two for a premise/hypothesis pair) and its label(s). :func:`collate` pads
a list of items into a batch: per text word ids, character ids, the mask and the cached ELMo layers;
and the labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset

from elmo_pipeline.data.activation_cache import ActivationCache, pad_activations

PAD, UNK = 0, 1
IGNORE_INDEX = -100


@dataclass
class Instance:
    """One example: the indices of its texts in the split's table of distinct texts, and its label(s)."""

    texts: tuple[int, ...]
    label: int | list[int]


class TaskSplit(Dataset):
    """One split: a table of distinct texts (what the activation cache is built over) and the instances.

    Args:
        texts: the distinct token lists.
        instances: the examples, pointing into ``texts``.
    """

    def __init__(self, texts: list[list[str]], instances: list[Instance]) -> None:
        self.texts = texts
        self.instances = instances
        self.cache: ActivationCache | None = None
        self.word_index: dict[str, int] = {}
        self.char_index: dict[str, int] = {}
        self.max_word_chars = 30
        self.lowercase_words = False
        self.layer_scale: list[float] | None = None

    def __len__(self) -> int:
        return len(self.instances)

    def lengths(self) -> list[int]:
        return [sum(len(self.texts[t]) for t in inst.texts) for inst in self.instances]

    def __getitem__(self, i: int) -> dict[str, Any]:
        instance = self.instances[i]
        words, chars, elmo = [], [], []
        for t in instance.texts:
            tokens = self.texts[t]
            keys = [w.lower() for w in tokens] if self.lowercase_words else tokens
            words.append([self.word_index.get(w, UNK) for w in keys])
            chars.append([[self.char_index.get(c, UNK) for c in w[: self.max_word_chars]] for w in tokens])
            if self.cache is not None:
                layers = self.cache[t]  # (n, L+1, 2P) float16
                if self.layer_scale is not None:  # the scale-matched random control
                    layers = layers * torch.tensor(self.layer_scale, dtype=layers.dtype).unsqueeze(-1)  # (n, L+1, 2P)
                elmo.append(layers)
        return {"words": words, "chars": chars, "elmo": elmo, "label": instance.label, "index": i}


def collate(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Pad a list of :meth:`TaskSplit.__getitem__` items.

    Returns:
        ``words`` [(B, T_i)], ``chars`` [(B, T_i, C_i)], ``masks`` [(B, T_i)], ``elmo`` [L + 1 x (B, T_i, 2P)] per
        text (empty without a biLM), ``labels`` (B,) or (B, T) with -100 at padding.
    """
    num_texts = len(items[0]["words"])
    batch: dict[str, Any] = {"words": [], "chars": [], "masks": [], "elmo": []}
    for k in range(num_texts):
        seqs = [item["words"][k] for item in items]
        T = max(len(s) for s in seqs)
        C = max(len(w) for item in items for w in item["chars"][k])
        words = torch.zeros(len(items), T, dtype=torch.long)  # (B, T)
        chars = torch.zeros(len(items), T, C, dtype=torch.long)  # (B, T, C)
        for b, item in enumerate(items):
            words[b, : len(seqs[b])] = torch.tensor(seqs[b])
            for j, word in enumerate(item["chars"][k]):
                chars[b, j, : len(word)] = torch.tensor(word)
        batch["words"].append(words)
        batch["chars"].append(chars)
        batch["masks"].append(words != PAD)
        if items[0]["elmo"]:
            layers, mask = pad_activations([item["elmo"][k] for item in items])  # L+1 x (B, T, 2P), (B, T)
            if not torch.equal(mask, batch["masks"][-1]):
                raise ValueError("task data: cached ELMo layers do not match the tokens; delete the cache to rebuild")
            batch["elmo"].append(layers)
    batch["index"] = torch.tensor([item.get("index", -1) for item in items], dtype=torch.long)  # (B,)
    labels = [item["label"] for item in items]
    if isinstance(labels[0], list):
        tags = torch.full((len(items), batch["words"][0].shape[1]), IGNORE_INDEX, dtype=torch.long)  # (B, T)
        for b, seq in enumerate(labels):
            tags[b, : len(seq)] = torch.tensor(seq)
        batch["labels"] = tags
    else:
        batch["labels"] = torch.tensor(labels, dtype=torch.long)  # (B,)
    return batch
