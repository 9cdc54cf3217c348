"""``elmo-pipeline translate``: translate a file, one sentence per line, with a model ``elmo-pipeline seq2seq`` trained.

    elmo-pipeline translate --model runs/seq2seq/none/version_0 --input sentences.de [--output out.en]

``--model`` is the run's folder (or its ``seq2seq.pt``). The source lines are tokenised and
lowercased as in training; the output is detokenised, one translation per line. Beam size, length
normalisation and shallow fusion's lambda default to what the run chose on val; a fusion model reads
its LM again from the name it was trained with (``--lm`` overrides it, e.g. after moving the folder),
checked to be the LM of training (:mod:`elmo_pipeline.systems.translator`).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from pathlib import Path

import torch

from elmo_pipeline.data.readers.base import ReaderError, open_lines
from elmo_pipeline.errors import CannotProceed, InputError, MissingFileError, WouldOverwriteError
from elmo_pipeline.files import disk_full, is_disk_full, write_bytes_atomic
from elmo_pipeline.models.search import UNK_WORDS, replace_unknowns, translate
from elmo_pipeline.systems.translator import load_translator
from elmo_pipeline.text.tokenize import detokenize, tokenize
from elmo_pipeline.text.vocab import Vocabulary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="elmo-pipeline translate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="run folder of `elmo-pipeline seq2seq` (or its seq2seq.pt)")
    parser.add_argument("--input", required=True, type=Path, help="source text, one sentence per line (plain or .gz)")
    parser.add_argument("--output", type=Path, help="write the translations here (default: standard output)")
    parser.add_argument("--beam", type=int, help="beam size, at least 1 (default: the run's)")
    parser.add_argument(
        "--lm-weight", type=float, help="shallow fusion's lambda, finite and >= 0 (default: the one chosen on val)"
    )
    parser.add_argument("--lm", help="the fusion LM, if it moved since training (checked to be the same LM)")
    parser.add_argument(
        "--unk",
        choices=UNK_WORDS,
        default="keep",
        help="an output <UNK>: keep it, copy the source word the attention aligns it with (names and numbers "
        "pass through; Luong et al. 2015), or delete it",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    args = parser.parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.beam is not None and args.beam < 1:
        raise InputError(f"--beam must be at least 1, got {args.beam}")
    if args.lm_weight is not None and not (math.isfinite(args.lm_weight) and args.lm_weight >= 0):
        raise InputError(f"--lm-weight must be a finite number >= 0, got {args.lm_weight}")
    if args.input.is_dir():
        raise InputError(f"--input {args.input} is a folder; give a text file, one sentence per line (plain or .gz)")
    if not args.input.is_file():
        raise MissingFileError(f"--input {args.input}: no such file")
    if args.output is not None:
        if args.output.is_dir():
            raise InputError(f"--output {args.output} is a folder; give a file path")
        if args.output.exists() and os.path.samefile(args.output, args.input):  # a link to it, too
            raise WouldOverwriteError(
                f"--output {args.output} is the --input file {args.input}; writing the translations there would "
                "destroy the source text, even with --overwrite. Give another --output"
            )
        model_file = Path(args.model) / "seq2seq.pt" if Path(args.model).is_dir() else Path(args.model)
        if args.output.exists() and model_file.exists() and os.path.samefile(args.output, model_file):
            raise WouldOverwriteError(
                f"--output {args.output} is the --model file {model_file}; writing the translations there would "
                "destroy the model, even with --overwrite. Give another --output"
            )
        if args.output.exists() and not args.overwrite:
            raise WouldOverwriteError(f"--output {args.output} exists; pass --overwrite to replace it")
    sentences = []  # read before the model and its LM load: a bad line fails fast
    for number, line in open_lines(args.input):
        tokens = tokenize(line)
        if not tokens:
            raise ReaderError(args.input, number, "empty line; every line must hold one sentence")
        sentences.append(tokens)
    model, saved = load_translator(args.model, args.lm)
    vocabulary = Vocabulary(saved["source_words"])
    sources = [torch.tensor(vocabulary.ids(w.lower() for w in tokens)) for tokens in sentences]
    beam = saved["beam"] if args.beam is None else args.beam
    weight = saved["lm_weight"] if args.lm_weight is None else args.lm_weight
    words = saved["target_words"]
    lines = []
    for tokens, source in zip(sentences, sources, strict=True):
        found = translate(model, source, beam, weight, saved["length_penalty"])
        lines.append(
            detokenize(replace_unknowns([words[i] for i in found.ids], found.aligned, tokens, args.unk)) + "\n"
        )
    if args.output is None:
        sys.stdout.writelines(lines)
    else:
        data = "".join(lines).encode("utf-8")
        try:
            args.output.parent.mkdir(parents=True, exist_ok=True)
            write_bytes_atomic(args.output, data)  # complete, or the old file stays
        except OSError as err:
            if is_disk_full(err):
                raise disk_full(args.output, len(data)) from None
            raise CannotProceed(
                f"--output {args.output}: cannot be written ({err.strerror or err}); an earlier file there is "
                "unchanged. Give another --output"
            ) from None
    return 0
