"""The training stream of random numbers, kept apart so that a resumed run continues exactly.

Dropout (and the sampled softmax's negatives) draw from the global RNG, and so does anything else
that runs between two training steps: creating a DataLoader iterator (validation, a new epoch)
draws its base seed from it. So a system takes the state after every training forward pass
(:meth:`TrainingRNG.capture`) and puts it back at the start of the next step
(:meth:`TrainingRNG.restore`), and a checkpoint saves that state, wherever it is written (after a
step, or after validation). A resumed run therefore draws the same numbers as the uninterrupted one.
"""

from __future__ import annotations

from typing import Any

import torch


def rng_states() -> dict[str, Any]:
    states: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])


class TrainingRNG:
    """The RNG state as the last training step left it (None before the first step of a fresh run)."""

    def __init__(self) -> None:
        self.state: dict[str, Any] | None = None

    def capture(self) -> None:
        """After a training forward pass (the backward pass and the update draw no random numbers)."""
        self.state = rng_states()

    def restore(self) -> None:
        """At the start of a training step: continue the training stream where it stopped."""
        if self.state is not None:
            set_rng_states(self.state)

    def save(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["rng_states"] = self.state if self.state is not None else rng_states()

    def load(self, checkpoint: dict[str, Any]) -> None:
        self.state = checkpoint.get("rng_states")  # put back at the first training step
