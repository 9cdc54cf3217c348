"""When pretraining has diverged: the checks made before every update (PretrainSystem stops on them).

A non-finite loss, a loss spike (``spike_factor`` times the running mean; off by default) or a
non-finite gradient norm is a divergence, with one exception: under fp16
(``--trainer.precision 16-mixed``) the GradScaler's scaled gradients overflow now and then while its
scale settles, and the scaler then skips the update and halves the scale by itself; up to
:data:`MAX_SCALER_SKIPS` such steps in a row are not a divergence.
"""

from __future__ import annotations

import logging
import math
from collections import deque

import torch

log = logging.getLogger(__name__)

# consecutive steps fp16's GradScaler may skip (non-finite scaled gradients) before the run counts as diverged:
# halving its scale each time, 30 skips take the default 2**16 below 1e-4 (fairseq's min_loss_scale)
MAX_SCALER_SKIPS = 30


class DivergenceGuard:
    """The checks of one run, with what they remember between steps.

    Args:
        spike_factor: a loss above this many times the mean of the last ``spike_window`` is a spike (0: off).
        spike_window: losses in that running mean; the spike check starts once it is full.
    """

    def __init__(self, spike_factor: float, spike_window: int) -> None:
        self.spike_factor = spike_factor
        self.recent: deque[float] = deque(maxlen=max(1, spike_window))
        self.max_scaler_skips = MAX_SCALER_SKIPS
        self.scaler_skips = 0  # consecutive steps the GradScaler skipped

    def loss_problem(self, losses: list[float]) -> str | None:
        """The first non-finite or spiking loss among a step's ``losses``, described; None if all are sound
        (they then join the running mean)."""
        for value in losses:
            if not math.isfinite(value):
                return f"the loss is {value}"
            if self.spike_factor > 0 and len(self.recent) == self.recent.maxlen:
                mean = sum(self.recent) / len(self.recent)
                if value > self.spike_factor * mean:
                    return (
                        f"the loss spiked to {value:.4g}, {value / mean:.1f} x its mean {mean:.4g} over the last "
                        f"{len(self.recent)} steps (--model.spike_factor {self.spike_factor})"
                    )
        self.recent.extend(losses)
        return None

    def gradient_problem(self, norm: float, scaler: torch.amp.GradScaler | None, step: int) -> str | None:
        """None when the gradient norm is finite, or when fp16's ``scaler`` skips this step (its scaled
        gradients overflowed, at most ``max_scaler_skips`` steps in a row); else the problem, described."""
        if math.isfinite(norm):
            self.scaler_skips = 0
            return None
        if scaler is not None and self.scaler_skips < self.max_scaler_skips:
            # the scaler skips this update and halves its scale, so the gradients are never applied
            self.scaler_skips += 1
            log.info(
                "pretrain: fp16 gradients overflowed at global step %d; the GradScaler skips the step (scale %g)",
                step,
                scaler.get_scale(),
            )
            return None
        problem = f"the gradient norm is {norm}"
        if scaler is not None:
            problem += (
                f" after fp16's GradScaler skipped {self.scaler_skips} steps in a row (its scale is down to "
                f"{scaler.get_scale():g})"
            )
        return problem
