"""Parallel text for translation: two files, line i of one translating line i of the other (Multi30k's layout).

    data_root/train.de.gz   data_root/train.en.gz     (plain or gzipped UTF-8, one sentence per line)

Both sides are tokenised with the project's tokenizer (``text.tokenize``). The source is lowercased
(German capitalises every noun, and lowercasing halves the rare-word tail); the target keeps its case,
because the fusion LM was trained on cased text and its vocabulary is cased.

Vocabularies come from the training split only, in bilm-tf's order (``<S>``, ``</S>``, ``<UNK>``, then
by frequency): the source keeps words seen at least ``min_count`` times; the target keeps at most
``max_target_words`` words seen at least ``min_count`` times. With a fusion LM the target keeps only
words the LM's vocabulary also has, so that every target word has its own LM probability; the
others become ``<UNK>`` on both sides of the loss and are counted in the log.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Sampler

from elmo_pipeline.data.readers.base import ReaderError, open_lines
from elmo_pipeline.errors import InputError, MissingFileError, WouldOverwriteError
from elmo_pipeline.files import write_bytes_atomic
from elmo_pipeline.models.source import BiLMSource
from elmo_pipeline.text.batching import length_sorted_batches
from elmo_pipeline.text.tokenize import tokenize
from elmo_pipeline.text.vocab import SPECIALS, Vocabulary

log = logging.getLogger(__name__)

Pair = tuple[list[str], list[str]]
SPLITS = ("train", "val", "test")
IGNORE_INDEX = -100


def read_parallel(source_path: str | Path, target_path: str | Path) -> tuple[list[Pair], list[str]]:
    """Tokenised ``(source, target)`` pairs of two line-aligned files, and the raw target lines (BLEU's references).

    Raises:
        ReaderError: a line that is empty or not UTF-8, or files of different lengths (naming the
            file that ends first and the first line without a partner).
    """
    source_lines, target_lines = open_lines(source_path), open_lines(target_path)
    pairs: list[Pair] = []
    raw: list[str] = []
    while True:
        source_line, target_line = next(source_lines, None), next(target_lines, None)
        if source_line is None and target_line is None:
            return pairs, raw
        if source_line is None or target_line is None:
            short, long_ = (source_path, target_path) if source_line is None else (target_path, source_path)
            raise ReaderError(
                long_,
                len(pairs) + 1,
                f"has no partner: {short} ends after {len(pairs)} lines; the two files must have one sentence "
                "per line, line i of one translating line i of the other",
            )
        pair = []
        for path, (number, text) in ((source_path, source_line), (target_path, target_line)):
            tokens = tokenize(text)
            if not tokens:
                raise ReaderError(path, number, "empty line; every line must hold one sentence")
            pair.append(tokens)
        pairs.append((pair[0], pair[1]))
        raw.append(target_line[1].strip())


def write_target_text(
    data_root: str | Path,
    out: str | Path,
    target_lang: str = "en",
    train_file: str = "train",
    dev_lines: int = 1000,
    overwrite: bool = False,
) -> dict[str, int]:
    """The training split's target side, as a fusion LM's in-domain corpus: ``out/train.txt`` and ``out/dev.txt``.

    Each line is tokenised as :class:`TranslationDataModule` tokenises a target (the project's tokenizer, case
    kept) and written with single spaces, for ``pretrain --data.tokenizer whitespace``. The last ``dev_lines``
    lines of the training file are held out into ``dev.txt`` (model selection of the LM's adaptation), so
    the LM never reads the translation's val or test text. Returns the counts of both files.

    Raises:
        WouldOverwriteError: ``train.txt`` or ``dev.txt`` is already in ``out`` and ``overwrite`` is not set.
        MissingFileError: the training file is not there.
        ReaderError: an empty or undecodable line (named by file and line).
        InputError: ``dev_lines`` is not below the number of training lines.
    """
    stem = Path(data_root) / f"{train_file}.{target_lang}"
    found = [p for p in (stem, stem.with_name(stem.name + ".gz")) if p.is_file()]
    if not found:
        raise MissingFileError(
            f"{stem}[.gz]: no such file (the training split's {target_lang} side; check --data-root)"
        )
    sentences = []
    for number, text in open_lines(found[0]):
        tokens = tokenize(text)
        if not tokens:
            raise ReaderError(found[0], number, "empty line; every line must hold one sentence")
        sentences.append(tokens)
    if not 0 <= dev_lines < len(sentences):
        raise InputError(
            f"--dev-lines {dev_lines}: {found[0]} has {len(sentences)} lines; hold out fewer than that (and 0 or more)"
        )
    cut = len(sentences) - dev_lines
    folder = Path(out)
    there = [str(folder / name) for name in ("train.txt", "dev.txt") if (folder / name).exists()]
    if there and not overwrite:
        raise WouldOverwriteError(f"{', '.join(there)} exists; pass --overwrite to replace it, or choose another --out")
    folder.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name, part in (("train", sentences[:cut]), ("dev", sentences[cut:])):
        write_bytes_atomic(folder / f"{name}.txt", "".join(" ".join(s) + "\n" for s in part).encode("utf-8"))
        counts[f"{name}_sentences"] = len(part)
        counts[f"{name}_tokens"] = sum(map(len, part))
    return counts


def build_vocabulary(sentences: list[list[str]], min_count: int, max_words: int = 0, keep=None) -> Vocabulary:
    """Words seen at least ``min_count`` times (and accepted by ``keep``), most frequent first.

    At most ``max_words`` words, specials included (0: no limit).
    """
    counts = Counter(word for sentence in sentences for word in sentence)
    words = sorted(
        (w for w, n in counts.items() if n >= min_count and w not in SPECIALS), key=lambda w: (-counts[w], w)
    )
    if keep is not None:
        words = [w for w in words if keep(w)]
    if max_words:
        words = words[: max(0, max_words - len(SPECIALS))]
    return Vocabulary([*SPECIALS, *words])


def _lm_vocabulary(lm: str) -> Vocabulary:
    vocabulary = BiLMSource.parse(lm).vocabulary()
    if vocabulary is None:
        raise InputError(
            f"--model.lm {lm}: this biLM has no softmax vocabulary (published files carry none); "
            "give an export folder (elmo-pipeline pretrain writes one)"
        )
    return vocabulary


class EpochShuffle(Sampler[int]):
    """A permutation of ``range(n)`` drawn from ``seed`` and the epoch alone.

    The epoch is read from ``epoch_source`` (the trainer's current epoch) when the iteration starts,
    else from :meth:`set_epoch`: a run resumed from a checkpoint creates its first iterator before
    Lightning calls ``set_epoch``, and must still see the batch order the uninterrupted run saw.
    """

    def __init__(self, n: int, seed: int, epoch_source: Callable[[], int | None] | None = None) -> None:
        self.n, self.seed, self.epoch, self.epoch_source = n, seed, 0, epoch_source

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        epoch = self.epoch_source() if self.epoch_source is not None else None
        epoch = self.epoch if epoch is None else epoch
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        return iter(torch.randperm(self.n, generator=generator).tolist())


class TranslationDataModule(L.LightningDataModule):
    """Multi30k-style parallel data: vocabularies from train, length-sorted batches.

    Args:
        data_root: folder with ``{split}.{lang}[.gz]`` files.
        source_lang: source file suffix (``de``).
        target_lang: target file suffix (``en``).
        split_files: the file stem of each split (``train``, ``val``, ``test_2016_flickr``).
        min_count: a word needs this many training occurrences to get its own id.
        max_target_words: the target vocabulary's size at most, specials included (0: no limit).
        batch_size: sentence pairs per batch.
        max_train_pairs: use only the first N training pairs (0: all); for quick runs.
        lm: the fusion LM (an export folder, see ``BiLMSource``); the target keeps only its words (None: no LM).
            Linked from ``--model.lm``, so that every arm of a comparison has the same target vocabulary.
        seed: the shuffling of training batches.
    """

    def __init__(
        self,
        data_root: str = "../shared/data/multi30k",
        source_lang: str = "de",
        target_lang: str = "en",
        split_files: dict[str, str] | None = None,
        min_count: int = 2,
        max_target_words: int = 8000,
        batch_size: int = 64,
        max_train_pairs: int = 0,
        lm: str | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.root = Path(data_root)
        self.files = split_files or {"train": "train", "val": "val", "test": "test_2016_flickr"}
        self.batch_size, self.seed = batch_size, seed
        self.pairs: dict[str, list[Pair]] = {}
        self.references: dict[str, list[str]] = {}  # the raw target lines, for BLEU
        self.source_tokens: dict[str, list[list[str]]] = {}  # the source as written (case kept): <UNK> copies
        for split in SPLITS:
            self.pairs[split], self.references[split], self.source_tokens[split] = self._read(
                split, source_lang, target_lang
            )
        if max_train_pairs:
            self.pairs["train"] = self.pairs["train"][:max_train_pairs]
            self.references["train"] = self.references["train"][:max_train_pairs]
        train = self.pairs["train"]
        self.source_vocabulary = build_vocabulary([s for s, _ in train], min_count)
        keep = None if lm is None else _lm_vocabulary(lm).index.__contains__
        self.target_vocabulary = build_vocabulary([t for _, t in train], min_count, max_target_words, keep)
        unknown = sum(1 for _, t in train for w in t if w not in self.target_vocabulary.index)
        total = sum(len(t) for _, t in train)
        log.info(
            "translation: %d training pairs; source vocabulary %d, target vocabulary %d "
            "(%.2f%% of target tokens <UNK>)",
            len(train),
            len(self.source_vocabulary),
            len(self.target_vocabulary),
            100 * unknown / max(total, 1),
        )

    def _read(self, split: str, source_lang: str, target_lang: str) -> tuple[list[Pair], list[str], list[list[str]]]:
        paths = []
        for lang in (source_lang, target_lang):
            stem = self.root / f"{self.files[split]}.{lang}"
            found = [p for p in (stem, stem.with_name(stem.name + ".gz")) if p.is_file()]
            if not found:
                raise MissingFileError(f"{stem}[.gz]: no such file (the {split} split; check --data.data_root)")
            paths.append(found[0])
        pairs, references = read_parallel(*paths)
        return [([w.lower() for w in s], t) for s, t in pairs], references, [s for s, _ in pairs]

    @property
    def source_vocab_size(self) -> int:
        return len(self.source_vocabulary)

    @property
    def target_vocab_size(self) -> int:
        return len(self.target_vocabulary)

    def encode_source(self, tokens: list[str]) -> list[int]:
        """Source ids of a tokenised (lowercased here) sentence."""
        return self.source_vocabulary.ids(w.lower() for w in tokens)

    def source_ids(self, split: str) -> list[torch.Tensor]:
        """The source sentences of a split as id tensors (S,), in file order."""
        return [torch.tensor(self.source_vocabulary.ids(s)) for s, _ in self.pairs[split]]

    def collate(self, split: str, indices: list[int]) -> dict[str, torch.Tensor]:
        """Padded ids of the pairs ``indices`` of ``split``: source (B, S), lengths (B,),
        target_in (B, T) = <S> y, target_out (B, T) = y </S> (``IGNORE_INDEX`` at padding), index (B,)."""
        pairs = [self.pairs[split][i] for i in indices]
        sources = [self.source_vocabulary.ids(s) for s, _ in pairs]
        targets = [self.target_vocabulary.ids(t) for _, t in pairs]
        S, T = max(map(len, sources)), max(map(len, targets)) + 1
        source = torch.zeros(len(pairs), S, dtype=torch.long)
        target_in = torch.zeros(len(pairs), T, dtype=torch.long)  # padding reads <S>; the loss ignores it
        target_out = torch.full((len(pairs), T), IGNORE_INDEX, dtype=torch.long)
        for i, (s, t) in enumerate(zip(sources, targets, strict=True)):
            source[i, : len(s)] = torch.tensor(s)
            target_in[i, : len(t) + 1] = torch.tensor([Vocabulary.bos_id, *t])
            target_out[i, : len(t) + 1] = torch.tensor([*t, Vocabulary.eos_id])
        lengths = torch.tensor([len(s) for s in sources])
        return {
            "source": source,
            "lengths": lengths,
            "target_in": target_in,
            "target_out": target_out,
            "index": torch.tensor(indices),
        }

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        lengths = [len(s) for s, _ in self.pairs[split]]
        batches = list(length_sorted_batches(lengths, self.batch_size, boundaries=0))
        sampler = EpochShuffle(len(batches), self.seed, self._current_epoch) if shuffle else None  # new order per epoch
        return DataLoader(batches, batch_size=None, sampler=sampler, collate_fn=partial(self.collate, split))

    def _current_epoch(self) -> int | None:
        """The epoch a new training iterator is for: the epochs already processed. Lightning's ``current_epoch``
        counts *completed* epochs, and a checkpoint written at the end of epoch k's validation has not
        completed it yet, so a run resumed from one would draw epoch k's order again for epoch k + 1."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return None
        progress = getattr(getattr(trainer, "fit_loop", None), "epoch_progress", None)
        return progress.current.processed if progress is not None else trainer.current_epoch

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
