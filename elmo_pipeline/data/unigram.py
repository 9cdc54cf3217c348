"""The unigram baseline of test perplexity: how well word frequencies alone predict the test targets.

A closed-vocabulary perplexity means little without a reference on the same vocabulary and the same
tokens. The reference is the unigram model of the training corpus, add-one smoothed::

    p(w) = (c(w) + 1) / (N + V)        for each of the V vocabulary words, N = sum of the c(w)

``c(w)`` counts ``w`` in the training sources, each read once to its end (the vocabulary builder's
view of the corpus: the sampling ``weights`` of the training mix are not applied). A token outside
the vocabulary counts as ``<UNK>``, and each sentence, cut as the training stream cuts it
(``split_sentences`` with ``max_tokens``), adds one ``<S>`` and one ``</S>``. Add-one gives every
vocabulary word a nonzero probability, ``<UNK>`` and the specials included, even when it never
occurs in the training sources.

Since ``c(<S>) == c(</S>)``, the perplexity over the forward targets of a test set (its words and
one ``</S>`` per sentence) equals that over its backward targets (``<S>`` and the words): one number
compares with the biLM's average of its two directions, over exactly the targets of its test loss.

Counting a large corpus takes a while (one pass over it), so the counts are cached in
a JSON file beside the vocabulary, under a key of everything they depend on: the sources (and each
local file's size and modification time), the vocabulary's words, the tokenizer, ``max_tokens`` and
``encoding_errors``. A cache whose key differs is recounted, never used.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from elmo_pipeline.data.corpus import iter_lines, resolve_files
from elmo_pipeline.data.lm import Tokenizer, sentences_from_lines
from elmo_pipeline.files import write_json_atomic
from elmo_pipeline.models.bilm import IGNORE
from elmo_pipeline.text.vocab import Vocabulary

log = logging.getLogger(__name__)


def count_unigrams(
    sources: list[str],
    vocab: Vocabulary,
    tokenizer: Tokenizer = "regex",
    max_tokens: int = 50,
    encoding_errors: str = "strict",
) -> list[int]:
    """Count each vocabulary id in the training sources, streaming (see the module docstring).

    Returns:
        ``counts[i]``: occurrences of word ``i``; ``<UNK>`` holds every token outside the vocabulary,
        ``<S>`` and ``</S>`` the number of sentences.
    """
    from tqdm.auto import tqdm

    words: Counter[str] = Counter()
    sentences = 0
    start = time.perf_counter()
    for source in sources:
        lines = tqdm(
            iter_lines(source, encoding_errors=encoding_errors),
            desc=f"unigram counts {source}",
            unit=" lines",
            mininterval=2.0,
        )
        for sentence in sentences_from_lines(lines, tokenizer, max_tokens):
            words.update(sentence)
            sentences += 1
        log.info("unigram counts: %s read, %d tokens so far", source, sum(words.values()))
    counts = [0] * len(vocab)
    for word, count in words.items():
        counts[vocab.id(word)] += count
    counts[vocab.bos_id] += sentences
    counts[vocab.eos_id] += sentences
    log.info(
        "unigram counts: %d tokens in %d sentences (%.2f%% <UNK>) in %.0f s",
        sum(words.values()),
        sentences,
        100 * counts[vocab.unk_id] / max(1, sum(words.values())),
        time.perf_counter() - start,
    )
    return counts


_COUNTING = inspect.signature(count_unigrams)  # its arguments, defaults included, key the counts


def counts_key(sources: list[str], vocab: Vocabulary, **options: Any) -> str:
    """A hash of everything the counts depend on (a changed file changes its size or modification time):
    the files, the vocabulary, and :func:`count_unigrams`'s other arguments (``options``, defaults filled in)."""
    bound = _COUNTING.bind(sources, vocab, **options)
    bound.apply_defaults()
    settings = {name: value for name, value in bound.arguments.items() if name not in ("sources", "vocab")}
    files: list[list[str | int]] = []
    for source in sources:
        if source.startswith("hf:"):
            files.append([source])  # a hub dataset is known by its id
            continue
        for path in resolve_files(source):
            stat = path.stat()
            files.append([str(path.resolve()), stat.st_size, stat.st_mtime_ns])
    record = {
        "sources": list(sources),
        "files": files,
        "vocab": hashlib.sha256("\n".join(vocab.words).encode("utf-8")).hexdigest(),
        **settings,  # tokenizer, max_tokens, encoding_errors
    }
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode("utf-8")).hexdigest()


def load_or_count_unigrams(cache_path: str | Path, sources: list[str], vocab: Vocabulary, **options: Any) -> list[int]:
    """:func:`count_unigrams`, read from ``cache_path`` when its key matches, else counted and saved there.

    Args:
        cache_path: the cache file (a JSON record of the counts and the key they were counted under).
        sources, vocab: what to count, as for :func:`count_unigrams`.
        **options: the rest of :func:`count_unigrams`'s arguments (``tokenizer``, ``max_tokens``,
            ``encoding_errors``); they are part of the key.
    """
    cache_path = Path(cache_path)
    key = counts_key(sources, vocab, **options)
    if cache_path.is_file():
        try:
            record = json.loads(cache_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            record = {}
        if record.get("key") == key:
            log.info("unigram counts: read from %s", cache_path)
            return [int(record["counts"][word]) for word in vocab.words]
        log.info("unigram counts: %s is stale (the sources or vocabulary changed); counting again", cache_path)
    log.info("unigram counts: counting %s (cached in %s)", sources, cache_path)
    counts = count_unigrams(sources, vocab, **options)
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(
        cache_path,
        {"key": key, "sources": list(sources), "tokens": sum(counts), "counts": dict(zip(vocab.words, counts))},
    )
    return counts


def unigram_log_probs(counts: Sequence[int]) -> torch.Tensor:
    """Add-one smoothed ``log p(w)`` of each vocabulary id: ``log((c + 1) / (N + V))``, shape (V,), float64."""
    smoothed = torch.tensor(counts, dtype=torch.float64) + 1.0  # (V,)
    return smoothed.log() - smoothed.sum().log()  # (V,)


def unigram_nll(log_probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``-log p`` of every target that is not ``IGNORE``, shape (number of targets,)."""
    return -log_probs[targets[targets != IGNORE]]  # (n,)
