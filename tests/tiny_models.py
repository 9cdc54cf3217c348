"""The tiny biLM most tests run on, its LM batches, pretraining data and a quiet trainer: one definition each,
imported by the test files (tests/ is on sys.path).

from tiny_models import lm_batch, pretrain_config, quiet_trainer, shuffled_lm_data, tiny_bilm, tiny_config
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from elmo_pipeline.models import IGNORE, BiLM, BiLMConfig
from elmo_pipeline.text import Vocabulary, batch_to_char_ids

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


def lm_batch(sentences: list[list[str]], vocab: Vocabulary) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Character ids with <S> ... </S> and the forward (next word) / backward (previous word) targets."""
    chars = batch_to_char_ids(sentences, add_boundaries=True)  # (B, T, C)
    forward_targets = torch.full(chars.shape[:2], IGNORE)  # (B, T)
    backward_targets = torch.full(chars.shape[:2], IGNORE)  # (B, T)
    for b, sentence in enumerate(sentences):
        ids = torch.tensor(vocab.ids(["<S>", *sentence, "</S>"]))
        forward_targets[b, : len(ids) - 1] = ids[1:]
        backward_targets[b, 1 : len(ids)] = ids[:-1]
    return chars, forward_targets, backward_targets


def pretrain_config(**overrides: Any) -> BiLMConfig:
    """The ``tiny`` preset at the pretraining tests' size (H 16, P 8, two filters, 10 sampled negatives),
    with ``overrides``."""
    return BiLMConfig.preset(
        "tiny", cell_dim=16, projection_dim=8, num_samples=10, filters=[[1, 4], [2, 4]], **overrides
    )


def shuffled_lm_data(corpus: str, root: Any, **overrides: Any) -> Any:
    """The pretraining tests' LMDataModule on ``corpus``: batches of 4 in buckets of 3 batches, a shuffle buffer of
    16, sentences cut at 10 tokens, seed 3, the vocabulary written in ``root``; ``overrides``: any of its arguments."""
    from elmo_pipeline.data.lm_datamodule import LMDataModule

    settings = dict(batch_size=4, bucket_batches=3, shuffle_buffer=16, max_tokens=10, seed=3)
    return LMDataModule(sources=[corpus], vocab_path=str(Path(root) / "vocab.txt"), **{**settings, **overrides})


def quiet_trainer(root: Any, **overrides: Any) -> Any:
    """A CPU Lightning trainer under ``root`` that writes and prints nothing (no logger, checkpoints, progress bar
    or model summary); ``overrides``: any other ``L.Trainer`` argument, or one of these to replace."""
    import lightning as L  # only the tests that train pay for importing Lightning

    quiet = dict(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
    )
    return L.Trainer(**{**quiet, **overrides})
