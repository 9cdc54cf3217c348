"""Shared fixtures: a tiny biLM configuration and a fixed seed for every test."""

from __future__ import annotations

import logging

import pytest
import torch

from elmo_pipeline.models.config import BiLMConfig


@pytest.fixture(autouse=True)
def seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _root_log_handlers():
    """A command may call logging.basicConfig on the captured stderr; drop those handlers after each test,
    so a later test's log never writes to a closed capture (a "Logging error" traceback in its stderr)."""
    before = list(logging.getLogger().handlers)
    yield
    logging.getLogger().handlers[:] = before


@pytest.fixture
def tiny_config() -> BiLMConfig:
    return BiLMConfig.preset("tiny", vocab_size=50, cell_dim=32, projection_dim=16, num_samples=20, dropout=0.0)
