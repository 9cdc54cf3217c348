"""The LightningDataModule of downstream tasks: examples, vocabularies, cached biLM layers, batches.

For one task spec (``tasks/<name>/task.yaml``) it reads the three splits (local files under
``--data.data_root``, or the hub id when no root is given), builds the word and character
vocabularies from the training split, and -- when a biLM is given -- runs the frozen biLM once over
every distinct text of every split into the activation cache (``data.activation_cache``), so that a
training epoch costs the head only. A batch holds, per text of an example (one, or two for a
premise/hypothesis pair): word ids, character ids, the mask, the cached ELMo layers; and the labels.
"""

from __future__ import annotations

import logging
import math
import random
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from elmo_pipeline.data.activation_cache import (
    ActivationCache,
    build_activation_cache,
    layer_rms,
    pad_activations,
)
from elmo_pipeline.data.readers import Example, LabelledPair, LabelledText, TaggedSentence, read_split
from elmo_pipeline.data.readers.conll import bioul_tags
from elmo_pipeline.data.word_vectors import embedding_matrix, is_none
from elmo_pipeline.errors import InputError
from elmo_pipeline.models.source import BiLMSource
from elmo_pipeline.tasks import SPLITS, TaskSpec, find_resource, load_task
from elmo_pipeline.text.chars import is_truncated

log = logging.getLogger(__name__)

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


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of similar length: shuffle, sort within windows of ``window`` batches, shuffle the batches.

    Deterministic for a given seed and epoch (Lightning calls :meth:`set_epoch`).
    """

    def __init__(self, lengths: list[int], batch_size: int, shuffle: bool, seed: int = 0, window: int = 50) -> None:
        self.lengths, self.batch_size, self.shuffle, self.seed, self.window = lengths, batch_size, shuffle, seed, window
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        order = list(range(len(self.lengths)))
        rng = random.Random(self.seed + self.epoch)
        if self.shuffle:
            rng.shuffle(order)
        span = self.batch_size * self.window
        batches = []
        for first in range(0, len(order), span):
            chunk = sorted(order[first : first + span], key=lambda i: self.lengths[i])
            batches += [chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        if self.shuffle:
            rng.shuffle(batches)
        return iter(batches)


class TaskDataModule(L.LightningDataModule):
    """One downstream task's data.

    Args:
        task: a task name (``ner_conll2003``, ``sentiment_sst5``, ``nli_snli``) or the path of a task folder.
        data_root: folder of the spec's local files (e.g. ``../shared/data``; the bundled fixtures are
            ``tests/fixtures/tasks``); null reads the task's hub id.
        split_files: per-split file overrides relative to ``data_root``, e.g. ``{train:
            snli/snli_1.0_train.frac0.01_seed0.jsonl.gz}``.
        tag_scheme: tagging only: ``IOB1`` or ``IOB2`` tags in the files (default: the spec's).
        train_subtrees: SST only: train on every labelled subtree (the paper) instead of whole sentences.
        max_train_examples: keep a seeded random sample of this many training examples (null: all).
        elmo: the biLM, any form of :class:`~elmo_pipeline.models.source.BiLMSource`; linked from
            ``--model.elmo`` by the CLI.
        random_bilm_seed: seed of the weights of a ``random:`` biLM.
        match_scale: rescale each layer of a ``random:`` biLM to the per-layer RMS of the pretrained biLM it
            copies (measured on the same sample of training texts), so that the control differs from +ELMo in
            its weights only, not in the size of its vectors.
        word_vectors: pretrained word vectors for the word embedding (``glove-6b-50d``, ``none``, or the path of
            a GloVe-format text file); linked from ``--model.word_vectors`` by the CLI.
        lowercase_words: look words up in lowercase (the word embedding only; the character CNN and the biLM
            keep the case). GloVe 6B is uncased.
        cache_dir: folder of the activation caches (one sub-folder per biLM and dataset).
        batch_size: training examples per batch.
        eval_batch_size: examples per validation/test batch.
        min_word_count: training words seen fewer times map to the unknown word.
        max_word_chars: characters per word kept for the character CNN.
        seed: seed of the training sample and of the batch order.
    """

    def __init__(
        self,
        task: str = "ner_conll2003",
        data_root: str | None = None,
        split_files: dict[str, str] | None = None,
        tag_scheme: str | None = None,
        train_subtrees: bool = True,
        max_train_examples: int | None = None,
        elmo: str | None = None,
        random_bilm_seed: int = 0,
        match_scale: bool = True,
        word_vectors: str | None = None,
        lowercase_words: bool = False,
        cache_dir: str = "runs/cache/activations",
        batch_size: int = 32,
        eval_batch_size: int = 64,
        min_word_count: int = 1,
        max_word_chars: int = 30,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.spec: TaskSpec = load_task(task)
        self.batch_size, self.eval_batch_size, self.seed = batch_size, eval_batch_size, seed
        self.cache_dir = cache_dir
        unknown = set(split_files or {}) - set(SPLITS)
        if unknown:
            raise ValueError(f"task data: unknown splits {sorted(unknown)} in --data.split_files; splits are {SPLITS}")
        root = find_resource(data_root) if data_root else None
        self.counts: dict[str, dict[str, int]] = {}
        examples: dict[str, list[Example]] = {}
        for split in SPLITS:
            examples[split], self.counts[split] = read_split(
                self.spec,
                split,
                data_root=root,
                path=(split_files or {}).get(split),
                tag_scheme=tag_scheme,
                subtrees=train_subtrees and split == "train" and self.spec.format == "sst_ptb",
            )
            if not examples[split]:
                raise InputError(f"task data: the {split} split of {self.spec.name} has no examples")
        if max_train_examples is not None and max_train_examples < len(examples["train"]):
            keep = sorted(random.Random(seed).sample(range(len(examples["train"])), max_train_examples))
            examples["train"] = [examples["train"][i] for i in keep]
            self.counts["train"]["sampled"] = max_train_examples
        self.labels = bioul_tags(self.spec.labels) if self.spec.kind == "tagging" else list(self.spec.labels)
        self.splits = {split: self._build(examples[split]) for split in SPLITS}
        self.lowercase_words = lowercase_words
        self.word_vectors = None if is_none(word_vectors) else str(word_vectors)
        self.word_vector_matrix: torch.Tensor | None = None
        self.word_vector_summary: dict[str, Any] = {}
        self._build_vocabularies(self.splits["train"], min_word_count)
        for split in self.splits.values():
            split.word_index, split.char_index, split.max_word_chars = self.word_index, self.char_index, max_word_chars
            split.lowercase_words = lowercase_words
        self.elmo = elmo
        self.source = BiLMSource.parse(elmo) if elmo else None
        self.match_scale = match_scale
        self.layer_scale: list[float] | None = None
        self.bilm = self.source.load(seed=random_bilm_seed, frozen=True) if self.source is not None else None
        self.elmo_num_layers = self.bilm.config.num_layers + 1 if self.bilm is not None else 0
        self.elmo_dim = self.bilm.config.output_dim if self.bilm is not None else 0
        self._count_cut_words(max_word_chars)
        for split, counts in self.counts.items():
            log.info("%s %s: %s, %d examples", self.spec.name, split, counts, len(self.splits[split]))

    def _count_cut_words(self, max_word_chars: int) -> None:
        """Count, and warn about, words that the models see cut short: never silently.

        The task's character CNN keeps ``max_word_chars`` characters of a word; the biLM keeps 48
        UTF-8 bytes of a token (ELMo's limit). Counted over the distinct texts of each split.
        """
        for split, data in self.splits.items():
            words = [w for text in data.texts for w in text]
            cut = [w for w in words if len(w) > max_word_chars]
            if cut:
                self.counts[split]["words_cut_to_max_word_chars"] = len(cut)
                longest = max(cut, key=len)
                log.warning(
                    "%s %s: %d words are longer than %d characters and are cut for the character CNN (the longest "
                    "has %d characters: %s...); raise --data.max_word_chars to keep more",
                    self.spec.name,
                    split,
                    len(cut),
                    max_word_chars,
                    len(longest),
                    longest[:40],
                )
            if self.bilm is not None:
                over = sum(map(is_truncated, words))
                if over:
                    self.counts[split]["tokens_cut_to_48_bytes_for_the_bilm"] = over
                    log.warning(
                        "%s %s: %d tokens are longer than 48 UTF-8 bytes and are cut to 48 for the biLM (ELMo's "
                        "character limit)",
                        self.spec.name,
                        split,
                        over,
                    )

    # ---- building ----------------------------------------------------------------------------
    def _build(self, examples: list[Example]) -> TaskSplit:
        table: dict[tuple[str, ...], int] = {}

        def text_id(tokens: list[str]) -> int:
            return table.setdefault(tuple(tokens), len(table))

        label_index = {label: i for i, label in enumerate(self.labels)}
        instances = []
        for ex in examples:
            if isinstance(ex, TaggedSentence):
                instances.append(Instance((text_id(ex.tokens),), [label_index[t] for t in ex.tags]))
            elif isinstance(ex, LabelledText):
                instances.append(Instance((text_id(ex.tokens),), label_index[ex.label]))
            elif isinstance(ex, LabelledPair):
                instances.append(Instance((text_id(ex.premise), text_id(ex.hypothesis)), label_index[ex.label]))
        return TaskSplit([list(t) for t in table], instances)

    def _word_key(self, word: str) -> str:
        return word.lower() if self.lowercase_words else word

    def _build_vocabularies(self, train: TaskSplit, min_count: int) -> None:
        words: Counter[str] = Counter()
        for inst in train.instances:
            for t in inst.texts:
                words.update(train.texts[t])
        keys: Counter[str] = Counter()
        for word, count in words.items():
            keys[self._word_key(word)] += count
        kept = sorted((w for w, c in keys.items() if c >= min_count), key=lambda w: (-keys[w], w))
        if self.word_vectors is not None:
            others = {
                self._word_key(w)
                for name, split in self.splits.items()
                if name != "train"
                for text in split.texts
                for w in text
            }
            kept, self.word_vector_matrix, self.word_vector_summary = embedding_matrix(
                self.word_vectors, kept, others, self.cache_dir
            )
        self.word_index = {w: i + 2 for i, w in enumerate(kept)}  # 0 padding, 1 unknown
        chars = sorted({c for w in words for c in w})
        self.char_index = {c: i + 2 for i, c in enumerate(chars)}

    @property
    def num_words(self) -> int:
        """Word vocabulary size, padding and unknown included (linked to ``--model.num_words``)."""
        return len(self.word_index) + 2

    @property
    def num_chars(self) -> int:
        """Character vocabulary size, padding and unknown included (linked to ``--model.num_chars``)."""
        return len(self.char_index) + 2

    def setup(self, stage: str) -> None:
        needed = {"fit": ("train", "validation"), "validate": ("validation",), "test": ("test",)}.get(stage, SPLITS)
        if self.bilm is None:
            return
        for split in needed:
            data = self.splits[split]
            if data.cache is None:
                log.info("%s %s: biLM layers of %d distinct texts", self.spec.name, split, len(data.texts))
                data.cache = build_activation_cache(
                    self.bilm, data.texts, Path(self.cache_dir), batch_size=64, device=self.cache_device()
                )
                if data.cache.num_layers != self.elmo_num_layers or data.cache.dim != self.elmo_dim:
                    raise ValueError(f"{data.cache.directory}: cached layers do not match the biLM")
        if self.source is not None and self.source.random and self.match_scale and self.layer_scale is None:
            self.layer_scale = self._matched_scale()
            for data in self.splits.values():
                data.layer_scale = self.layer_scale

    def cache_device(self) -> torch.device:
        """Where the biLM runs while the caches are built: the attached trainer's device (its rank's GPU), else CPU."""
        trainer = self.trainer
        return trainer.strategy.root_device if trainer is not None else torch.device("cpu")

    def _matched_scale(self, sample_size: int = 2000) -> list[float]:
        """Per-layer factors that give the random control the pretrained biLM's layer RMS.

        Both biLMs run over the same seeded sample of distinct training texts (cached like any other
        texts), and layer j of the control is multiplied by RMS_pretrained(j) / RMS_random(j).
        """
        assert self.source is not None and self.bilm is not None
        texts = self.splits["train"].texts
        order = list(range(len(texts)))
        random.Random(0).shuffle(order)
        sample = [texts[i] for i in sorted(order[:sample_size])]
        pretrained = BiLMSource(self.source.paths).load(frozen=True)
        root, device = Path(self.cache_dir), self.cache_device()
        target = layer_rms(build_activation_cache(pretrained, sample, root, batch_size=64, device=device))
        current = layer_rms(build_activation_cache(self.bilm, sample, root, batch_size=64, device=device))
        scale = [t / c if c > 0 else 1.0 for t, c in zip(target, current, strict=True)]
        log.info(
            "%s: random control scaled per layer by %s (layer RMS %s -> the pretrained biLM's %s)",
            self.spec.name,
            [round(x, 3) for x in scale],
            [round(x, 3) for x in current],
            [round(x, 3) for x in target],
        )
        return scale

    # ---- loaders -----------------------------------------------------------------------------
    def _loader(self, split: str, train: bool) -> DataLoader:
        data = self.splits[split]
        size = self.batch_size if train else self.eval_batch_size
        sampler = BucketBatchSampler(data.lengths(), size, shuffle=train, seed=self.seed)
        return DataLoader(data, batch_sampler=sampler, collate_fn=collate)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("validation", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    def examples(self, split: str) -> tuple[list[list[list[str]]], list[list[str] | str]]:
        """The texts and gold labels (tag or label names) of a split's examples, in file order."""
        data = self.splits[split]
        texts = [[data.texts[t] for t in inst.texts] for inst in data.instances]
        gold = [self.label_names(inst.label) for inst in data.instances]
        return texts, gold

    def label_names(self, label: int | list[int]) -> list[str] | str:
        """Label ids -> names: one label, or a tag sequence."""
        return [self.labels[i] for i in label] if isinstance(label, list) else self.labels[label]

    def summary(self) -> dict[str, Any]:
        """Counts for the run record: examples per split, what was read and dropped, vocabulary sizes."""
        return {
            "task": self.spec.name,
            "examples": {split: len(data) for split, data in self.splits.items()},
            "distinct_texts": {split: len(data.texts) for split, data in self.splits.items()},
            "read": self.counts,
            "num_words": self.num_words,
            "num_chars": self.num_chars,
            "lowercase_words": self.lowercase_words,
            "word_vectors": self.word_vector_summary or None,
            "random_control_layer_scale": self.layer_scale,
        }
