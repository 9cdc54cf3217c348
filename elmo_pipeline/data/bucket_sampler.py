"""Batches of similar length, in a seeded order that changes with the epoch."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator

from torch.utils.data import Sampler


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
