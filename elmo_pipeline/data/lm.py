"""Language-model batches: corpus lines -> sentences -> shuffled, length-bucketed batches -> tensors.

Each batch is a dict::

    chars             (B, T, 50) int64   ELMo character ids, sentences wrapped in <S> ... </S>
    forward_targets   (B, T)     int64   vocabulary id of token t+1 (-1 where there is none)
    backward_targets  (B, T)     int64   vocabulary id of token t-1 (-1 where there is none)
    num_tokens        ()         int64   real tokens in the batch, boundaries included
    num_truncated     ()         int64   tokens longer than 48 bytes (their characters were cut)
    num_replaced      ()         int64   tokens holding U+FFFD (undecodable bytes, encoding_errors=replace)

The order of batches is a pure function of (seed, epoch) and the number of readers, so that resuming
is exact: the loader saves how many batches of the epoch were consumed and, on resume, skips exactly
those. Every rank gets the same number of batches, so that no rank waits in a collective (DDP's
gradient all-reduce, its buffer broadcast, a metric's sync) for one that has none.

**Training reads the corpus in parts** (``shard_reading``, the default). With R readers (ranks x
DataLoader workers, at least 1 each), reader r reads only part r of R of every source
(:func:`~elmo_pipeline.data.corpus.iter_part_lines`: byte ranges of plain files, whole gzip files), so
N ranks read and tokenise 1/N of the corpus each. The parts differ a little in size, so an epoch is
``epoch_batches`` batches for every reader, the most that any reader's part makes (counted once per
run, before the first epoch, and agreed over the ranks): a reader whose part makes fewer goes on into
a fresh shuffle of its part, so no sentence is dropped and the ranks stay in step. A rank's workers
are its readers and the DataLoader takes their batches in turn. ``shard_reading=False`` is the
single-process order at any scale: every rank reads the whole corpus, computes one global sequence of
batches and keeps every world_size-th (dropping a trailing incomplete round), and workers split a
rank's batches round-robin.

**Evaluation** keeps that global order and every batch: the ranks without a batch in the last round
get an empty batch (:func:`empty_batch`: no target, no token), so a metric summed over the ranks is
exactly the one over the whole set.
"""

from __future__ import annotations

import itertools
import logging
import random
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from elmo_pipeline.data.corpus import iter_lines, iter_part_lines, resolve_files
from elmo_pipeline.errors import InputError, WouldOverwriteError
from elmo_pipeline.files import OutputLock
from elmo_pipeline.models.bilm import IGNORE
from elmo_pipeline.text.chars import BOS_TOKEN, EOS_TOKEN, MAX_CHARS, batch_to_char_ids, is_truncated
from elmo_pipeline.text.tokenize import split_sentences, tokenize, tokenize_wikitext
from elmo_pipeline.text.vocab import Vocabulary

log = logging.getLogger(__name__)

Tokenizer = Literal["regex", "whitespace", "wikitext"]
TOKENIZERS: dict[str, Callable[[str], list[str]]] = {
    "regex": tokenize,
    "whitespace": str.split,
    "wikitext": tokenize_wikitext,
}


def sentences_from_lines(lines: Iterator[str], tokenizer: Tokenizer, max_tokens: int) -> Iterator[list[str]]:
    """Tokenise lines and split them into sentences of at most ``max_tokens`` tokens (blank lines skipped)."""
    tok = TOKENIZERS[tokenizer]
    for line in lines:
        tokens = tok(line)
        if tokens:
            yield from split_sentences(tokens, max_tokens)


def mix_sources(
    sources: list[str],
    weights: list[float] | None,
    rng: random.Random,
    encoding_errors: str = "strict",
    part: int = 0,
    parts: int = 1,
) -> Iterator[str]:
    """Interleave the lines of several sources, drawing source i with probability ``weights[i]``.

    A source that runs out starts again; the mix ends once every source has been read to its end at
    least once (so every line is seen each epoch, and small sources are repeated as their weight asks).
    With ``parts`` > 1 it mixes part ``part`` of each source (:func:`iter_part_lines`).
    """

    def read(source: str) -> Iterator[str]:
        if parts == 1:
            return iter_lines(source, encoding_errors=encoding_errors)
        return iter_part_lines(source, part, parts, encoding_errors)

    if weights is None:
        weights = [1.0] * len(sources)
    if len(weights) != len(sources) or min(weights) <= 0:
        raise ValueError(f"lm data: need one positive weight per source, got {weights} for {len(sources)} sources")
    if len(sources) == 1:
        yield from read(sources[0])
        return
    iterators = [read(s) for s in sources]
    finished = [False] * len(sources)
    while not all(finished):
        i = rng.choices(range(len(sources)), weights=weights)[0]
        try:
            yield next(iterators[i])
        except StopIteration:
            finished[i] = True
            iterators[i] = read(sources[i])


def shuffled(items: Iterator[Any], buffer_size: int, rng: random.Random) -> Iterator[Any]:
    """Approximate shuffle of a stream with a fixed-size buffer (memory stays bounded)."""
    if buffer_size <= 1:
        yield from items
        return
    buffer: list[Any] = []
    for item in items:
        if len(buffer) < buffer_size:
            buffer.append(item)
            continue
        j = rng.randrange(buffer_size)
        yield buffer[j]
        buffer[j] = item
    rng.shuffle(buffer)
    yield from buffer


def bucketed_batches(
    sentences: Iterator[list[str]], batch_size: int, bucket_batches: int, rng: random.Random | None
) -> Iterator[list[list[str]]]:
    """Group sentences of similar length: sort each window of ``batch_size * bucket_batches``."""
    window: list[list[str]] = []

    def flush() -> Iterator[list[list[str]]]:
        window.sort(key=len)
        batches = [window[i : i + batch_size] for i in range(0, len(window), batch_size)]
        if rng is not None:
            rng.shuffle(batches)
        yield from batches
        window.clear()

    for sentence in sentences:
        window.append(sentence)
        if len(window) == batch_size * bucket_batches:
            yield from flush()
    if window:
        yield from flush()


def empty_batch() -> dict[str, torch.Tensor]:
    """A batch with no sentence: one padded position, no target, zero tokens.

    It pads the ranks that have no evaluation batch left in the last round (:class:`LMBatches`). It
    holds one all-padding row rather than none, because every backend runs on a (1, 1) input while
    the character CNN cannot reshape a batch of zero rows; the biLM's loss over no target is 0 and
    counts 0 targets, so the batch adds nothing to a metric weighted by targets.
    """
    return {
        "chars": torch.zeros(1, 1, MAX_CHARS, dtype=torch.long),  # (1, 1, 50), all padding
        "forward_targets": torch.full((1, 1), IGNORE, dtype=torch.long),  # (1, 1)
        "backward_targets": torch.full((1, 1), IGNORE, dtype=torch.long),  # (1, 1)
        "num_tokens": torch.tensor(0),
        "num_truncated": torch.tensor(0),
        "num_replaced": torch.tensor(0),
    }


def make_batch(sentences: list[list[str]], vocab: Vocabulary) -> dict[str, torch.Tensor]:
    """Tensors of one batch (see the module docstring); no sentence gives :func:`empty_batch`."""
    if not sentences:
        return empty_batch()
    wrapped = [[BOS_TOKEN, *s, EOS_TOKEN] for s in sentences]
    chars = batch_to_char_ids(wrapped)  # (B, T, 50)
    B, T = chars.shape[:2]
    forward_targets = torch.full((B, T), IGNORE, dtype=torch.long)  # (B, T)
    backward_targets = torch.full((B, T), IGNORE, dtype=torch.long)  # (B, T)
    for b, tokens in enumerate(wrapped):
        ids = torch.tensor(vocab.ids(tokens))  # (n,)
        forward_targets[b, : len(ids) - 1] = ids[1:]
        backward_targets[b, 1 : len(ids)] = ids[:-1]
    num_truncated = sum(is_truncated(t) for s in sentences for t in s)
    num_replaced = sum("\ufffd" in t for s in sentences for t in s)
    return {
        "chars": chars,
        "forward_targets": forward_targets,
        "backward_targets": backward_targets,
        "num_tokens": torch.tensor(sum(len(s) for s in wrapped)),
        "num_truncated": torch.tensor(num_truncated),
        "num_replaced": torch.tensor(num_replaced),
    }


class LMBatches(IterableDataset):
    """The stream of LM batches of one rank (see the module docstring for the guarantees).

    Args:
        sources: corpus sources (paths, globs or ``hf:<id>``).
        vocab: the softmax vocabulary.
        weights: sampling weight of each source (None: equal).
        tokenizer: ``regex`` for raw text, ``whitespace`` for tokenised text, ``wikitext`` for WikiText.
        max_tokens: longer sentences are cut into pieces of this many tokens.
        batch_size: sentences per batch.
        bucket_batches: batches per length-sorting window (1: no bucketing).
        shuffle_buffer: sentences in the shuffle buffer (0: keep corpus order).
        seed: base seed; epoch e uses seed + e.
        rank, world_size: this process's shard of the batches.
        max_sentences: stop after this many sentences (None: the whole corpus).
        encoding_errors: ``strict`` (error naming the line) or ``replace`` (U+FFFD, counted).
        even_shards: drop a trailing incomplete round so every rank gets as many batches (training);
            False keeps every batch and pads the ranks left without one in that round with an empty
            batch (evaluation: every batch counts, and the ranks still run as many steps).
        shard_reading: with ``even_shards`` and more than one reader, each reader reads its part of
            the corpus only (the module docstring); False: every rank reads the whole corpus.
    """

    def __init__(
        self,
        sources: list[str],
        vocab: Vocabulary,
        weights: list[float] | None = None,
        tokenizer: Tokenizer = "regex",
        max_tokens: int = 50,
        batch_size: int = 64,
        bucket_batches: int = 20,
        shuffle_buffer: int = 0,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        max_sentences: int | None = None,
        encoding_errors: str = "strict",
        even_shards: bool = True,
        shard_reading: bool = True,
    ) -> None:
        if not sources:
            raise ValueError("lm data: no corpus source given (--data.sources)")
        if tokenizer not in TOKENIZERS:
            raise ValueError(f"lm data: tokenizer must be one of {sorted(TOKENIZERS)}, got {tokenizer!r}")
        self.sources, self.vocab, self.weights, self.tokenizer = sources, vocab, weights, tokenizer
        self.max_tokens, self.batch_size, self.bucket_batches = max_tokens, batch_size, bucket_batches
        self.shuffle_buffer, self.seed, self.rank, self.world_size = shuffle_buffer, seed, rank, world_size
        self.max_sentences, self.encoding_errors, self.even_shards = max_sentences, encoding_errors, even_shards
        self.shard_reading = shard_reading
        self.readers_per_rank = 1  # the DataLoader's workers (set by ResumableLoader)
        self.epoch_batches: int | None = None  # batches of every reader per epoch (read in parts)
        self.epoch = 0
        self.skip = 0  # batches of this rank to skip (resuming mid-epoch)

    def _batches(self, lines: Iterator[str], rng: random.Random) -> Iterator[list[list[str]]]:
        """Lines -> sentences -> (shuffled) -> length-bucketed batches of sentences."""
        sentences = sentences_from_lines(lines, self.tokenizer, self.max_tokens)
        if self.max_sentences is not None:
            sentences = (s for s, _ in zip(sentences, range(self.max_sentences)))
        if self.shuffle_buffer > 1:
            sentences = shuffled(sentences, self.shuffle_buffer, rng)
        return bucketed_batches(
            sentences, self.batch_size, self.bucket_batches, rng if self.shuffle_buffer > 1 else None
        )

    def global_batches(self) -> Iterator[list[list[str]]]:
        """Every rank's batches, in the one deterministic order of this epoch."""
        rng = random.Random(self.seed * 1_000_003 + self.epoch)
        return self._batches(mix_sources(self.sources, self.weights, rng, self.encoding_errors), rng)

    def rank_batches(self) -> Iterator[list[list[str]]]:
        """This rank's batches: the ``rank``-th of each round of ``world_size`` batches.

        A trailing incomplete round is dropped (``even_shards``) or, for evaluation, gives this rank
        its batch or, where it has none, ``[]`` (an empty batch): every rank yields as many batches.
        """
        if self.world_size == 1:
            yield from self.global_batches()
            return
        round_: list[list[list[str]]] = []
        for batch in self.global_batches():
            round_.append(batch)
            if len(round_) == self.world_size:
                yield round_[self.rank]
                round_ = []
        if not self.even_shards and round_:
            yield round_[self.rank] if self.rank < len(round_) else []

    @property
    def readers(self) -> int:
        """How many readers share the corpus: ranks x workers."""
        return self.world_size * self.readers_per_rank

    @property
    def reads_in_parts(self) -> bool:
        """Whether each reader reads its own part of the corpus (training, more than one reader)."""
        return self.shard_reading and self.even_shards and self.readers > 1

    def part_batches(self, reader: int, epoch: int, fill: int = 0) -> Iterator[list[list[str]]]:
        """One pass over reader ``reader``'s part of the corpus; ``fill`` > 0 are further passes of an
        epoch (:meth:`reader_batches`), each shuffled anew."""
        rng = random.Random(f"{self.seed}/{epoch}/{reader}/{self.readers}/{fill}")
        lines = mix_sources(self.sources, self.weights, rng, self.encoding_errors, part=reader, parts=self.readers)
        return self._batches(lines, rng)

    def count_part_batches(self, reader: int) -> int:
        """The batches one pass over a reader's part makes (its sentences are read, not turned into tensors)."""
        return sum(1 for _ in self.part_batches(reader, epoch=0))

    def reader_batches(self, reader: int) -> Iterator[list[list[str]]]:
        """The ``epoch_batches`` batches of one reader in this epoch: its part, then fresh passes over it.

        Raises:
            InputError: the reader's part holds no sentence (a corpus too small for so many readers).
        """
        if self.epoch_batches is None:
            raise RuntimeError("lm data: epoch_batches is not set; ResumableLoader counts it before the first epoch")
        produced = 0
        for fill in itertools.count():
            before = produced
            for batch in self.part_batches(reader, self.epoch, fill):
                if produced == self.epoch_batches:
                    if fill == 0:  # a weighted mix draws a different number of lines each epoch
                        log.warning(
                            "lm data: reader %d's pass of epoch %d makes more than the %d batches of an epoch "
                            "(its weighted mix drew more lines than at the count); the rest is not read this epoch",
                            reader,
                            self.epoch,
                            self.epoch_batches,
                        )
                    return
                yield batch
                produced += 1
            if produced == self.epoch_batches:
                return
            if produced == before:
                raise InputError(_too_small(self.sources, self.readers))

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        # The DataLoader takes its workers' batches in turn from worker 0, also when it resumes after
        # `skip` batches; so worker i plays the part of worker (i + skip) % W of the uninterrupted
        # epoch, whose turn comes first, and the resumed order is the uninterrupted one.
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        role = (worker + self.skip) % num_workers
        if self.reads_in_parts:
            if num_workers != self.readers_per_rank:
                raise RuntimeError(
                    f"lm data: {num_workers} DataLoader workers read {self.readers_per_rank} parts per rank; "
                    "iterate through ResumableLoader"
                )
            done = max(0, -(-(self.skip - role) // num_workers))  # the role's batches among the first `skip`
            reader_batches = self.reader_batches(self.rank * num_workers + role)
            for sentences in itertools.islice(reader_batches, done, None):
                yield make_batch(sentences, self.vocab)
            return
        for index, sentences in enumerate(self.rank_batches()):
            if index >= self.skip and index % num_workers == role:
                yield make_batch(sentences, self.vocab)


def _too_small(sources: list[str], readers: int) -> str:
    return (
        f"lm data: {', '.join(sources)} is too small to read in {readers} parts (ranks x DataLoader workers): "
        "a part holds no sentence. Use fewer --data.num_workers or devices, or more text, or set "
        "--data.shard_reading false"
    )


class ResumableLoader(DataLoader):
    """A DataLoader over :class:`LMBatches` that Lightning can checkpoint mid-epoch.

    Lightning saves ``state_dict()`` in every checkpoint and calls ``load_state_dict()`` when it
    resumes (its ``_Stateful`` protocol). The state is the epoch and the number of batches the
    trainer has processed in it, read from the trainer (not from the loader, which prefetches).

    Args:
        dataset: the batches of this rank.
        progress: returns (epoch, batches processed in that epoch) from the trainer.
        num_workers: DataLoader worker processes; with ``dataset.shard_reading`` each reads a part.
        reduce_max: the elementwise maximum of a tensor over the ranks (None: one rank); it agrees
            the epoch's length when the corpus is read in parts.
    """

    def __init__(
        self,
        dataset: LMBatches,
        progress: Callable[[], tuple[int, int]],
        num_workers: int = 0,
        reduce_max: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        super().__init__(dataset, batch_size=None, num_workers=num_workers, persistent_workers=False)
        dataset.readers_per_rank = max(1, num_workers)
        self.progress = progress
        self.reduce_max = reduce_max
        self._resume: tuple[int, int] | None = None

    def count_epoch_batches(self) -> int:
        """Count the batches of this rank's parts and agree with the other ranks on an epoch's length:
        the most any reader makes (each rank reads 1/N of the corpus once for this, at the first epoch).

        Raises:
            InputError: some reader's part holds no sentence.
        """
        dataset = self.dataset
        first = dataset.rank * dataset.readers_per_rank
        log.info(
            "reading the corpus in %d parts: counting the batches of this rank's %d",
            dataset.readers,
            dataset.readers_per_rank,
        )
        counts = [dataset.count_part_batches(reader) for reader in range(first, first + dataset.readers_per_rank)]
        extremes = torch.tensor([max(counts), -min(counts)])  # (2,): the most, minus the fewest
        if self.reduce_max is not None:
            extremes = self.reduce_max(extremes)
        most, fewest = int(extremes[0]), -int(extremes[1])
        if fewest == 0:
            raise InputError(_too_small(dataset.sources, dataset.readers))
        log.info(
            "an epoch is %d batches per reader (%d parts; the smallest makes %d, then reads itself again)",
            most,
            dataset.readers,
            fewest,
        )
        return most

    def __iter__(self):
        epoch, _ = self.progress()
        self.dataset.epoch = epoch
        self.dataset.skip = 0
        if self._resume is not None:
            resume_epoch, done = self._resume
            if resume_epoch == epoch:
                self.dataset.skip = done
                log.info("resuming epoch %d after %d batches", epoch, done)
            self._resume = None
        if self.dataset.reads_in_parts and self.dataset.epoch_batches is None:
            self.dataset.epoch_batches = self.count_epoch_batches()
        return super().__iter__()

    def state_dict(self) -> dict[str, int]:
        epoch, done = self.progress()
        return {"epoch": epoch, "batches_done": done}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self._resume = (int(state_dict["epoch"]), int(state_dict["batches_done"]))


def build_vocabulary(
    sources: list[str],
    tokenizer: Tokenizer = "regex",
    max_size: int | None = None,
    min_count: int = 1,
    max_lines: int | None = None,
    encoding_errors: str = "strict",
) -> Vocabulary:
    """Count the words of every source (each read once, to its end or ``max_lines``)."""
    from tqdm.auto import tqdm

    tok = TOKENIZERS[tokenizer]
    counts: Counter[str] = Counter()
    for source in sources:
        lines = iter_lines(source, encoding_errors=encoding_errors)
        for n, line in enumerate(tqdm(lines, desc=f"vocab {source}", unit=" lines", mininterval=2.0)):
            if max_lines is not None and n >= max_lines:
                break
            counts.update(tok(line))
    vocab = Vocabulary.from_counts(counts, max_size=max_size, min_count=min_count)
    covered = sum(counts[w] for w in vocab.words)
    log.info(
        "vocabulary: %d words cover %.2f%% of %d tokens",
        len(vocab),
        100 * covered / max(1, sum(counts.values())),
        sum(counts.values()),
    )
    return vocab


def check_vocab_output(output: Path, sources: list[str], overwrite: bool) -> None:
    """Refuse an ``--output`` that is one of the corpus files (even with ``--overwrite``), a folder, or
    (unasked) an existing file."""
    if output.is_dir():
        raise InputError(f"--output {output} is a folder; give a file path, e.g. {output / 'vocab.txt'}")
    if not output.exists():
        return
    for source in sources:
        if source.startswith("hf:"):
            continue
        for path in resolve_files(source):
            if path.resolve() == output.resolve():
                raise WouldOverwriteError(
                    f"--output {output} is the corpus file {source}; writing the vocabulary there would destroy "
                    "the corpus. Give another --output"
                )
    if not overwrite:
        raise WouldOverwriteError(f"--output {output} exists; pass --overwrite to replace it, or give another --output")


def load_or_build_vocabulary(path: str | Path, sources: list[str], **kwargs: Any) -> Vocabulary:
    """The vocabulary at ``path`` (``--data.vocab_path``); built from ``sources`` and saved there first if absent.

    Every rank of a distributed run calls this at once (torchrun, SLURM: each builds its data module).
    The first to take the lock on ``<path>.lock`` builds and saves the vocabulary; the others wait
    for it, then load the file it wrote, so every rank has the same vocabulary and it is built once.

    Args:
        path: the vocabulary file.
        sources: the corpora to count if it does not exist.
        **kwargs: passed to :func:`build_vocabulary`.
    """
    path = Path(path)
    if path.is_file():
        return Vocabulary.load(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with OutputLock(path, option="--data.vocab_path", wait=True):
        if path.is_file():  # another rank built it while this one waited
            return Vocabulary.load(path)
        log.info("%s does not exist: building the vocabulary from %s", path, sources)
        vocab = build_vocabulary(sources, **kwargs)
        vocab.save(path)
        return vocab
