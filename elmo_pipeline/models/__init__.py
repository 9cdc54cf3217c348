"""Composed nn.Modules with documented output contracts: the biLM and its configuration."""

from elmo_pipeline.models.bilm import IGNORE, BiLM, BiLMOutput
from elmo_pipeline.models.config import PRESETS, BiLMConfig

__all__ = ["IGNORE", "PRESETS", "BiLM", "BiLMConfig", "BiLMOutput"]
