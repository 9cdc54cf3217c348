"""The scale-matched random-biLM control: per-layer factors that give it the pretrained biLM's layer RMS.

So that the control differs from +ELMo in its weights only, not in the size of its vectors
(``--data.match_scale``).
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

import torch

from elmo_pipeline.data.activation_cache import build_activation_cache, layer_rms
from elmo_pipeline.models.bilm import BiLM
from elmo_pipeline.models.source import BiLMSource

log = logging.getLogger(__name__)


def matched_scale(
    source: BiLMSource,
    bilm: BiLM,
    texts: list[list[str]],
    cache_dir: str | Path,
    device: torch.device,
    name: str,
    sample_size: int = 2000,
) -> list[float]:
    """Per-layer factors that give the random control the pretrained biLM's layer RMS.

    Both biLMs run over the same seeded sample of distinct training texts (cached like any other
    texts), and layer j of the control is multiplied by RMS_pretrained(j) / RMS_random(j).

    Args:
        source: the control's ``random:`` source; its paths name the pretrained biLM.
        bilm: the control, loaded.
        texts: the distinct training texts to sample from.
        cache_dir: folder of the activation caches.
        device: where the biLMs run.
        name: the task, for the log.
        sample_size: texts in the sample.

    Returns:
        One factor per layer, token layer first.
    """
    order = list(range(len(texts)))
    random.Random(0).shuffle(order)
    sample = [texts[i] for i in sorted(order[:sample_size])]
    pretrained = BiLMSource(source.paths).load(frozen=True)
    root = Path(cache_dir)
    target = layer_rms(build_activation_cache(pretrained, sample, root, batch_size=64, device=device))
    current = layer_rms(build_activation_cache(bilm, sample, root, batch_size=64, device=device))
    scale = [t / c if c > 0 else 1.0 for t, c in zip(target, current, strict=True)]
    log.info(
        "%s: random control scaled per layer by %s (layer RMS %s -> the pretrained biLM's %s)",
        name,
        [round(x, 3) for x in scale],
        [round(x, 3) for x in current],
        [round(x, 3) for x in target],
    )
    return scale
