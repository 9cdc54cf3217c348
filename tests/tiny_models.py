"""The tiny biLM most tests run on: one definition, imported by the test files (tests/ is on sys.path).

from tiny_models import tiny_bilm, tiny_config
"""

from __future__ import annotations

from typing import Any

import torch

from elmo_pipeline.models import BiLM, BiLMConfig

# char CNN of 16 filters, P 8, H 16, 2 layers, clipped at 3, no softmax: milliseconds per batch
TINY: dict[str, Any] = dict(
    char_embed_dim=4,
    filters=[[1, 4], [2, 4], [3, 8]],
    num_highway=1,
    projection_dim=8,
    cell_dim=16,
    num_layers=2,
    num_samples=0,
)


def tiny_config(**overrides: Any) -> BiLMConfig:
    """The tiny configuration, with ``overrides`` (any :class:`BiLMConfig` field)."""
    return BiLMConfig(**{**TINY, **overrides})


def tiny_bilm(seed: int = 0, **overrides: Any) -> BiLM:
    """A tiny biLM initialised from ``seed``, in eval mode."""
    torch.manual_seed(seed)
    return BiLM(tiny_config(**overrides)).eval()


def encoder_config(**overrides: Any) -> BiLMConfig:
    """The tiny configuration with two filters (no CNN projection needed in the published format)."""
    return tiny_config(**{"filters": [[1, 4], [2, 4]], **overrides})
