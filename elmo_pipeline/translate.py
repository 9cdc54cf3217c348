"""``elmo-pipeline translate``: translate a file, one sentence per line, with a model ``elmo-pipeline seq2seq`` trained.

    elmo-pipeline translate --model runs/seq2seq/none/version_0 --input sentences.de [--output out.en]

``--model`` is the run's folder (or its ``seq2seq.pt``). The source lines are tokenised and
lowercased as in training; the output is detokenised, one translation per line. Beam size, length
normalisation and shallow fusion's lambda default to what the run chose on val; a fusion model reads
its LM again from the name it was trained with (``--lm`` overrides it, e.g. after moving the folder).
"""

from __future__ import annotations

import argparse
import logging
import math
import pickle
import sys
from pathlib import Path

import torch

from elmo_pipeline.data.readers.base import ReaderError, open_lines
from elmo_pipeline.errors import (
    InputError,
    MissingFileError,
    UnsafeCheckpointError,
    WouldOverwriteError,
    unpickling_reason,
)
from elmo_pipeline.files import write_bytes_atomic
from elmo_pipeline.models.bilm import check_finite
from elmo_pipeline.models.search import beam_search
from elmo_pipeline.models.seq2seq import Seq2Seq, Seq2SeqConfig
from elmo_pipeline.models.source import BiLMSource
from elmo_pipeline.models.target_lm import TargetLM
from elmo_pipeline.text.tokenize import detokenize, tokenize
from elmo_pipeline.text.vocab import Vocabulary

log = logging.getLogger(__name__)


SAVED_KEYS = ("config", "lm", "lm_weight", "beam", "length_penalty", "source_words", "target_words", "state_dict")


def _read_saved(path: Path) -> dict:
    """The dict of a ``seq2seq.pt``, loaded weights-only; anything else is one line naming the file."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:  # weights_only refused an object: loading it could run code
        first = unpickling_reason(err)
        raise UnsafeCheckpointError(
            f"--model {path}: holds objects other than tensors and plain data, and loading it could run code; it "
            f"was not loaded ({first}). Use only models you trained or trust"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:  # truncated, or not a torch file
        raise InputError(
            f"--model {path}: cannot be read ({str(err).strip().splitlines()[0][:160]}); the file is damaged or not a "
            "seq2seq.pt. Give the run folder of `elmo-pipeline seq2seq`"
        ) from None
    missing = [k for k in SAVED_KEYS if not isinstance(saved, dict) or k not in saved]
    if missing:
        raise InputError(
            f"--model {path}: not a seq2seq.pt of elmo-pipeline (no {', '.join(missing[:3])}); give the run folder "
            "of `elmo-pipeline seq2seq`"
        )
    return saved


def load_translator(path: str | Path, lm: str | None = None) -> tuple[Seq2Seq, dict]:
    """The model of a ``seq2seq.pt`` (or of the run folder holding it), in eval mode, and the file's settings."""
    path = Path(path)
    if path.is_dir():
        path = path / "seq2seq.pt"
    if not path.is_file():
        raise MissingFileError(f"--model {path}: no such file; give a run folder of `elmo-pipeline seq2seq`")
    saved = _read_saved(path)
    try:
        config = Seq2SeqConfig(**saved["config"])
    except TypeError as err:
        raise InputError(f"--model {path}: its config does not fit this elmo-pipeline ({err})") from None
    for name, tensor in saved["state_dict"].items():
        check_finite(tensor, f"--model {path}: {name}")
    target_lm = None
    lm = lm or saved["lm"]
    if lm is not None:  # cold fusion needs it; shallow fusion (--lm-weight) uses it
        bilm, lm_vocabulary = BiLMSource.parse(lm).load_with_vocab()
        target_lm = TargetLM(bilm, lm_vocabulary, saved["target_words"])
        trained_with = saved.get("lm_fingerprint")
        if trained_with is None:
            log.warning("%s: made before seq2seq.pt recorded its LM; cannot check that %s is the same LM", path, lm)
        elif target_lm.fingerprint() != trained_with:
            raise InputError(
                f"--lm {lm}: not the LM this model was trained with ({saved['lm']}): its weights or its vocabulary "
                "differ, and the translations would be different. Pass the LM of the run, or retrain"
            )
        if target_lm.oov:
            log.warning(
                "translate: %d of the %d target words are not in the LM's vocabulary (they take its <UNK> score)",
                target_lm.oov,
                len(saved["target_words"]),
            )
    model = Seq2Seq(config, target_lm)
    result = model.load_state_dict(saved["state_dict"], strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("lm.")]
    if missing or result.unexpected_keys:
        raise InputError(
            f"{path}: the weights do not fit the model (missing {missing}, unexpected {result.unexpected_keys})"
        )
    return model.eval(), saved


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
        if args.output.exists() and args.output.resolve() == args.input.resolve():
            raise WouldOverwriteError(
                f"--output {args.output} is the --input file; writing the translations there would destroy the "
                "source text. Give another --output"
            )
        if args.output.exists() and not args.overwrite:
            raise WouldOverwriteError(f"--output {args.output} exists; pass --overwrite to replace it")
    model, saved = load_translator(args.model, args.lm)
    vocabulary = Vocabulary(saved["source_words"])
    sources = []
    for number, line in open_lines(args.input):
        tokens = tokenize(line)
        if not tokens:
            raise ReaderError(args.input, number, "empty line; every line must hold one sentence")
        sources.append(torch.tensor(vocabulary.ids(w.lower() for w in tokens)))
    beam = saved["beam"] if args.beam is None else args.beam
    weight = saved["lm_weight"] if args.lm_weight is None else args.lm_weight
    words = saved["target_words"]
    lines = [
        detokenize([words[i] for i in beam_search(model, source, beam, weight, saved["length_penalty"])]) + "\n"
        for source in sources
    ]
    if args.output is None:
        sys.stdout.writelines(lines)
    else:
        write_bytes_atomic(args.output, "".join(lines).encode("utf-8"))  # complete, or the old file stays
    return 0
