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
import random
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from elmo_pipeline.data.activation_cache import build_activation_cache
from elmo_pipeline.data.bucket_sampler import BucketBatchSampler
from elmo_pipeline.data.random_control import matched_scale
from elmo_pipeline.data.readers import Example, LabelledPair, LabelledText, TaggedSentence, read_split
from elmo_pipeline.data.readers.conll import bioul_tags
from elmo_pipeline.data.task_dataset import Instance, TaskSplit, collate
from elmo_pipeline.data.task_vocabulary import build_vocabularies
from elmo_pipeline.data.word_vectors import is_none
from elmo_pipeline.errors import InputError
from elmo_pipeline.models.source import BiLMSource
from elmo_pipeline.tasks import SPLITS, TaskSpec, find_resource, load_task
from elmo_pipeline.text.chars import is_truncated

log = logging.getLogger(__name__)


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
        elmo: the biLM, any form of :class:`~elmo_pipeline.models.source.BiLMSource` (null: the baseline; an
            export folder or published files: ELMo; ``random:<folder>``: the random-biLM control). Its one home:
            the model gets only its sizes. ``--model.elmo`` is a deprecated alias of this option.
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
        vocabularies = build_vocabularies(
            self.splits["train"],
            [split for name, split in self.splits.items() if name != "train"],
            min_word_count,
            lowercase_words,
            self.word_vectors,
            self.cache_dir,
        )
        self.word_index, self.char_index = vocabularies.word_index, vocabularies.char_index
        self.word_vector_matrix = vocabularies.word_vector_matrix
        self.word_vector_summary = vocabularies.word_vector_summary
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
            texts = self.splits["train"].texts
            self.layer_scale = matched_scale(
                self.source, self.bilm, texts, self.cache_dir, self.cache_device(), self.spec.name
            )
            for data in self.splits.values():
                data.layer_scale = self.layer_scale

    def cache_device(self) -> torch.device:
        """Where the biLM runs while the caches are built: the attached trainer's device (its rank's GPU), else CPU."""
        trainer = self.trainer
        return trainer.strategy.root_device if trainer is not None else torch.device("cpu")

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
