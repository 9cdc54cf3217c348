"""The LightningDataModule of biLM pretraining."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

from elmo_pipeline.data.lm import LMBatches, ResumableLoader, Tokenizer, load_or_build_vocabulary
from elmo_pipeline.data.unigram import load_or_count_unigrams

log = logging.getLogger(__name__)


class LMDataModule(L.LightningDataModule):
    """Streaming corpora for pretraining, a validation set for model selection, a test set for the end.

    Testing also counts the words of ``sources`` for the unigram baseline (``unigram_counts``, see
    :mod:`elmo_pipeline.data.unigram`), cached in ``<vocab_path>.counts.json``.

    Args:
        sources: training corpora: local files or globs (plain or .gz, one sentence or paragraph per
            line) or ``hf:<dataset id>`` (a ``text`` column).
        weights: sampling weight of each source, to balance the mix (None: equal weights).
        vocab_path: the vocabulary file; built from ``sources`` and saved there if it does not exist.
        vocab_max_size: most words kept when building the vocabulary (specials included).
        vocab_min_count: least count of a kept word when building the vocabulary.
        val_sources: held-out text for validation perplexity (model selection).
        test_sources: held-out text for the final test perplexity.
        tokenizer: tokenizer of the training sources (``regex`` for raw text).
        eval_tokenizer: tokenizer of the validation and test sources (``wikitext`` for WikiText).
        max_tokens: sentences are cut into pieces of at most this many tokens.
        batch_size: sentences per batch (per device).
        eval_batch_size: sentences per validation/test batch.
        bucket_batches: batches per length-sorting window.
        shuffle_buffer: sentences held in the streaming shuffle buffer.
        val_max_sentences: validate on the first N sentences only (None: all).
        num_workers: DataLoader workers for training batches.
        shard_reading: each rank (and each of its workers) reads and tokenises only its part of the
            training corpus, so N ranks read 1/N each (see :mod:`elmo_pipeline.data.lm`); False: every
            rank reads the whole corpus and keeps its share of the single-process batch order.
        encoding_errors: ``strict`` stops at a non-UTF-8 byte naming file and line; ``replace`` counts.
        seed: seed of the data order (epoch e uses seed + e).
    """

    def __init__(
        self,
        sources: list[str],
        vocab_path: str,
        weights: list[float] | None = None,
        vocab_max_size: int | None = 50_000,
        vocab_min_count: int = 1,
        val_sources: list[str] | None = None,
        test_sources: list[str] | None = None,
        tokenizer: Tokenizer = "regex",
        eval_tokenizer: Tokenizer = "regex",
        max_tokens: int = 50,
        batch_size: int = 64,
        eval_batch_size: int = 64,
        bucket_batches: int = 20,
        shuffle_buffer: int = 10_000,
        val_max_sentences: int | None = None,
        num_workers: int = 0,
        shard_reading: bool = True,
        encoding_errors: str = "strict",
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.sources, self.weights = list(sources), weights
        self.val_sources, self.test_sources = list(val_sources or []), list(test_sources or [])
        self.vocab = load_or_build_vocabulary(
            vocab_path,
            self.sources,
            tokenizer=tokenizer,
            max_size=vocab_max_size,
            min_count=vocab_min_count,
            encoding_errors=encoding_errors,
        )
        self.unigram_counts: list[int] | None = None  # set by setup("test")

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def _load_or_count_unigrams(self) -> list[int]:
        hp = self.hparams
        return load_or_count_unigrams(
            Path(f"{hp.vocab_path}.counts.json"),
            self.sources,
            self.vocab,
            tokenizer=hp.tokenizer,
            max_tokens=hp.max_tokens,
            encoding_errors=hp.encoding_errors,
        )

    def prepare_data(self) -> None:
        # one process per node counts and writes the cache; setup() on every rank then reads it
        if self.trainer is not None and self.trainer.state.fn == "test":
            self._load_or_count_unigrams()

    def setup(self, stage: str) -> None:
        if stage == "test":
            self.unigram_counts = self._load_or_count_unigrams()

    def _rank(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _progress(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is None:
            return 0, 0
        return trainer.current_epoch, trainer.fit_loop.epoch_loop.batch_progress.current.processed

    def train_dataloader(self) -> DataLoader:
        hp = self.hparams
        rank, world_size = self._rank()
        dataset = LMBatches(
            self.sources,
            self.vocab,
            weights=self.weights,
            tokenizer=hp.tokenizer,
            max_tokens=hp.max_tokens,
            batch_size=hp.batch_size,
            bucket_batches=hp.bucket_batches,
            shuffle_buffer=hp.shuffle_buffer,
            seed=hp.seed,
            rank=rank,
            world_size=world_size,
            encoding_errors=hp.encoding_errors,
            shard_reading=hp.shard_reading,
        )
        return ResumableLoader(dataset, self._progress, num_workers=hp.num_workers, reduce_max=self._reduce_max())

    def _reduce_max(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """The elementwise maximum over the ranks, through the trainer's strategy (None: one rank)."""
        trainer = self.trainer
        if trainer is None or trainer.world_size == 1:
            return None
        strategy = trainer.strategy

        def reduce_max(values: torch.Tensor) -> torch.Tensor:
            return strategy.reduce(values.to(strategy.root_device), reduce_op="max").cpu()  # (n,)

        return reduce_max

    def _eval_loader(self, sources: list[str], max_sentences: int | None) -> DataLoader:
        hp = self.hparams
        rank, world_size = self._rank()
        dataset = LMBatches(
            sources,
            self.vocab,
            tokenizer=hp.eval_tokenizer,
            max_tokens=hp.max_tokens,
            batch_size=hp.eval_batch_size,
            bucket_batches=hp.bucket_batches,
            shuffle_buffer=0,
            rank=rank,
            world_size=world_size,
            max_sentences=max_sentences,
            encoding_errors=hp.encoding_errors,
            even_shards=False,
        )
        return DataLoader(dataset, batch_size=None)

    def val_dataloader(self) -> DataLoader | list:
        if not self.val_sources:
            return []
        return self._eval_loader(self.val_sources, self.hparams.val_max_sentences)

    def test_dataloader(self) -> DataLoader | list:
        if not self.test_sources:
            raise ValueError("lm data: no test set given (--data.test_sources)")
        return self._eval_loader(self.test_sources, None)
