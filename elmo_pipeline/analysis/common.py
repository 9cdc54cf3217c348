"""What the analysis tools share: their command line, loading an export for inference, running the biLM over many
sentences."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import torch

from elmo_pipeline.errors import InputError
from elmo_pipeline.models.bilm import BiLM, BiLMOutput
from elmo_pipeline.models.source import BILM_HELP, BiLMSource
from elmo_pipeline.text import Vocabulary, batch_to_char_ids
from elmo_pipeline.text.batching import length_sorted_batches


def command_parser(command: str, doc: str | None, bilm_help: str | None = BILM_HELP) -> argparse.ArgumentParser:
    """The parser of ``elmo-pipeline <command>``, with the module's docstring as its description.

    Args:
        command: the subcommand's name.
        doc: the command module's ``__doc__``.
        bilm_help: the help of the required ``--bilm`` option; None for a command without one.
    """
    parser = argparse.ArgumentParser(
        prog=f"elmo-pipeline {command}", description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    if bilm_help is not None:
        parser.add_argument("--bilm", required=True, help=bilm_help)
    return parser


def require_at_least_one(args: argparse.Namespace, *names: str) -> None:
    """Raise InputError naming the option (``max_tokens`` -> ``--max-tokens``) of any value below 1."""
    for name in names:
        if getattr(args, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")


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
