"""The pretraining learning-rate schedule: warm-up, then a decay that ends at a horizon.

The horizon is a step: ``schedule_steps``, else the trainer's ``max_steps``, else estimated from the
time the trainer has left (``max_time``) and the step rate so far, and re-estimated as the run goes
(:func:`time_budget_horizon`). When it moves, the decay is re-anchored where it is, so the learning
rate stays continuous. The horizon and its anchor travel in checkpoints, so a resumed run continues
the same schedule.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Literal

import lightning as L
from lightning.pytorch.callbacks import Timer

SCHEDULES = ("constant", "linear", "cosine")
REHORIZON_EVERY = 250  # steps between re-estimates of a time-budget horizon


@dataclass
class LRSchedule:
    """The learning rate as a fraction of its peak, step by step.

    Args:
        warmup_steps: linear warm-up over this many steps (0: none).
        kind: after warm-up, ``constant``, or a ``linear``/``cosine`` decay to ``min_lr_ratio``.
        min_lr_ratio: the fraction at the horizon and after.
        horizon: the step where the decay ends (None: not known yet; the rate stays at the peak).
        anchor: ``(step, progress)`` the decay runs on from (None: the end of warm-up, progress 0).
    """

    warmup_steps: int
    kind: Literal["constant", "linear", "cosine"]
    min_lr_ratio: float = 0.0
    horizon: int | None = None
    anchor: tuple[int, float] | None = None

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise ValueError(
                f"pretrain: unknown lr_schedule {self.kind!r} (--model.lr_schedule constant|linear|cosine)"
            )

    def factor(self, step: int) -> float:
        """The learning rate at optimizer step ``step`` as a fraction of the peak: warm-up, then the decay."""
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.kind == "constant" or self.horizon is None:
            return 1.0
        progress = self.progress(step)
        if self.kind == "linear":
            return 1.0 - (1.0 - self.min_lr_ratio) * progress
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def progress(self, step: int) -> float:
        """How far the decay has gone at ``step``, from 0 (end of warm-up) to 1 (the horizon).

        Progress runs linearly from the anchor ``(step, progress)`` to the horizon.
        """
        anchor_step, anchor_progress = self.anchor or (self.warmup_steps, 0.0)
        span = max(1, self.horizon - anchor_step)
        return min(1.0, anchor_progress + (1.0 - anchor_progress) * max(0, step - anchor_step) / span)

    def move_horizon(self, step: int, horizon: int) -> None:
        """End the decay at ``horizon`` instead, going on from where it is at ``step`` (no jump)."""
        self.anchor = (step, self.progress(step))
        self.horizon = max(step + 1, horizon)


def time_budget_horizon(trainer: L.Trainer, attempt_start: tuple[float, int] | None) -> int | None:
    """The step where a time budget (``trainer.max_time``) runs out, at the step rate since ``attempt_start``.

    ``attempt_start`` is ``(time.monotonic(), step)`` of this process's 10th step, after the data
    stream has filled its shuffle buffer. 7% of the time left is kept for validation and saving.
    None without a time budget or before the rate can be measured.
    """
    timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
    remaining = timer.time_remaining("train") if timer is not None else None
    if remaining is None or attempt_start is None:
        return None
    started_at, first_step = attempt_start
    steps = trainer.global_step - first_step
    elapsed = time.monotonic() - started_at
    if steps <= 0 or elapsed <= 0:
        return None
    return trainer.global_step + int(0.93 * remaining * steps / elapsed)
