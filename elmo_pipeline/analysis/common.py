"""What the analysis tools share: loading an export for inference, running the biLM over many sentences."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch

from elmo_pipeline.errors import InputError
from elmo_pipeline.models.bilm import BiLM, BiLMOutput
from elmo_pipeline.models.source import BiLMSource
from elmo_pipeline.text import Vocabulary, batch_to_char_ids
from elmo_pipeline.text.batching import length_sorted_batches


def load_for_inference(spec: str | Path, need_softmax: bool = False) -> tuple[BiLM, Vocabulary | None]:
    """The biLM that ``--bilm`` names (any :class:`BiLMSource` form), in eval mode, and its vocabulary.

    ``need_softmax``: the command predicts words, so the biLM needs its softmax and ``vocab.txt``
    (an export folder, or the random control of one; the published files have neither).
    """
    source = BiLMSource.parse(spec)
    bilm, vocab = source.load_with_vocab()
    if need_softmax and (bilm.softmax is None or vocab is None):
        raise InputError(
            f"--bilm {source}: this biLM has no softmax or no vocab.txt, so it cannot predict words (the published "
            "options.json + weights.hdf5 hold no softmax); pass the export folder of an `elmo-pipeline pretrain` run"
        )
    return bilm.eval(), vocab


@torch.no_grad()
def batched_outputs(
    bilm: BiLM, sentences: list[list[str]], batch_size: int = 64, add_boundaries: bool = True
) -> Iterator[tuple[list[int], BiLMOutput]]:
    """Run the biLM over ``sentences`` in batches of similar length.

    Yields:
        (the indices into ``sentences`` of the batch's rows, the biLM's output for them). With
        boundaries, row b's tokens sit at positions 1 .. len(sentence) and ``<S>``/``</S>`` around them.
    """
    for index in length_sorted_batches([len(s) for s in sentences], batch_size):
        chars = batch_to_char_ids([sentences[i] for i in index], add_boundaries=add_boundaries)  # (B, T, C)
        yield index, bilm(chars)
