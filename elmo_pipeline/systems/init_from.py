"""Domain-adaptive pretraining: starting a run from another biLM (``--model.init_from``).

The run keeps the source's architecture (its character CNN and LSTM sizes) and chooses its own
softmax, vocabulary, dropout and training path (:data:`RUN_CHOICES`); the source's encoder weights
are copied in, and its softmax too when the run asks and it fits.
"""

from __future__ import annotations

import dataclasses
import logging

from elmo_pipeline.errors import InputError
from elmo_pipeline.models.bilm import BiLM
from elmo_pipeline.models.config import BiLMConfig
from elmo_pipeline.models.source import BiLMSource

log = logging.getLogger(__name__)


# what the run chooses when it starts from another biLM; the rest of the architecture is the source's
RUN_CHOICES = (
    "vocab_size",
    "softmax",
    "num_samples",
    "adaptive_cutoffs",
    "adaptive_div_value",
    "dropout",
    "fast",
    "compile_recurrence",
    "parallel_directions",
)


def adapted_config(source: BiLMConfig, run: BiLMConfig) -> BiLMConfig:
    """The source's architecture with this run's softmax, vocabulary, dropout and training path."""
    differs = [
        f"{name} {getattr(run, name)} -> {getattr(source, name)}"
        for name in dataclasses.asdict(source)
        if name not in RUN_CHOICES and getattr(run, name) != getattr(source, name)
    ]
    if differs:
        log.warning("pretrain: init_from sets the architecture of the source biLM: %s", ", ".join(differs))
    return dataclasses.replace(source, **{name: getattr(run, name) for name in RUN_CHOICES})


def load_encoder(bilm: BiLM, source: BiLMSource, init_softmax: bool = False) -> None:
    """Copy the source biLM's character CNN and LSTM layers (and, with ``init_softmax``, its softmax) into ``bilm``."""
    weights = source.load().state_dict()
    own = bilm.state_dict()
    encoder = {k: v for k, v in weights.items() if not k.startswith("softmax.")}
    missing = [k for k in own if not k.startswith("softmax.") and k not in encoder]
    if missing:
        raise InputError(
            f"--model.init_from {source}: the source biLM has no {missing[:3]}; is it a biLM of this project?"
        )
    if init_softmax:
        softmax = {k: v for k, v in weights.items() if k.startswith("softmax.")}
        expected = {k: tuple(v.shape) for k, v in own.items() if k.startswith("softmax.")}
        found = {k: tuple(v.shape) for k, v in softmax.items()}
        if found != expected:
            raise InputError(
                f"--model.init_from {source}: its softmax {found or '(none: the published files have none)'} is "
                f"not this run's {expected}; pass the source's vocab.txt as --data.vocab_path and the same "
                "softmax settings, or drop --model.init_softmax to train a new softmax"
            )
        encoder.update(softmax)
    bilm.load_state_dict(encoder, strict=False)


def source_exists(source: BiLMSource) -> bool:
    """Whether the source's files are there (a resumed run may no longer have them)."""
    try:
        source.files()
    except FileNotFoundError:
        return False
    return True
