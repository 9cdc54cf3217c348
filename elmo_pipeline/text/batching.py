"""Batches of sentences of similar length: the one loop every biLM pass over many sentences uses.

Sorting by length before cutting batches keeps padding small; a token budget keeps a batch of long
sentences within memory. ``embed``, the activation cache and the analysis tools all batch this way.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence


def length_sorted_batches(
    lengths: Sequence[int], batch_size: int, max_batch_tokens: int | None = None, boundaries: int = 2
) -> Iterator[list[int]]:
    """Indices of the sentences, shortest first, cut into batches.

    A batch holds at most ``batch_size`` sentences and, when ``max_batch_tokens`` is given, at most
    that many padded tokens (sentences x the longest, each sentence counting ``boundaries`` more for
    ``<S>`` and ``</S>``); a sentence longer than the budget gets a batch of its own. The sort is
    stable: sentences of equal length keep their order.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batch: list[int] = []
    longest = 0
    for i in order:
        size = lengths[i] + boundaries
        too_many = len(batch) == batch_size
        too_long = max_batch_tokens is not None and max(longest, size) * (len(batch) + 1) > max_batch_tokens
        if batch and (too_many or too_long):
            yield batch
            batch, longest = [], 0
        batch.append(i)
        longest = max(longest, size)
    if batch:
        yield batch
