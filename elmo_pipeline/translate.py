"""``elmo-pipeline translate``: translate a file, one sentence per line, with a model ``elmo-pipeline seq2seq`` trained.

    elmo-pipeline translate --model runs/seq2seq/none/version_0 --input sentences.de [--output out.en]

``--model`` is the run's folder (or its ``seq2seq.pt``). The source lines are tokenised and
lowercased as in training; the output is detokenised, one translation per line. Beam size, length
normalisation and shallow fusion's lambda default to what the run chose on val; a fusion model reads
its LM again from the name it was trained with (``--lm`` overrides it, e.g. after moving the folder).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from elmo_pipeline.data.readers.base import ReaderError, open_lines
from elmo_pipeline.errors import InputError, MissingFileError, WouldOverwriteError
from elmo_pipeline.models.search import beam_search
from elmo_pipeline.models.seq2seq import Seq2Seq, Seq2SeqConfig
from elmo_pipeline.models.source import BiLMSource
from elmo_pipeline.models.target_lm import TargetLM
from elmo_pipeline.text.tokenize import detokenize, tokenize
from elmo_pipeline.text.vocab import Vocabulary


def load_translator(path: str | Path, lm: str | None = None) -> tuple[Seq2Seq, dict]:
    """The model of a ``seq2seq.pt`` (or of the run folder holding it), in eval mode, and the file's settings."""
    path = Path(path)
    if path.is_dir():
        path = path / "seq2seq.pt"
    if not path.is_file():
        raise MissingFileError(f"--model {path}: no such file; give a run folder of `elmo-pipeline seq2seq`")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    config = Seq2SeqConfig(**saved["config"])
    target_lm = None
    lm = lm or saved["lm"]
    if lm is not None:  # cold fusion needs it; shallow fusion (--lm-weight) uses it
        bilm, lm_vocabulary = BiLMSource.parse(lm).load_with_vocab()
        target_lm = TargetLM(bilm, lm_vocabulary, saved["target_words"])
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
    parser.add_argument("--beam", type=int, help="beam size (default: the run's)")
    parser.add_argument("--lm-weight", type=float, help="shallow fusion's lambda (default: the one chosen on val)")
    parser.add_argument("--lm", help="the fusion LM, if it moved since training")
    parser.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    args = parser.parse_args(argv)
    if args.output is not None and args.output.exists() and not args.overwrite:
        raise WouldOverwriteError(f"--output {args.output} exists; pass --overwrite to replace it")
    model, saved = load_translator(args.model, args.lm)
    vocabulary = Vocabulary(saved["source_words"])
    sources = []
    for number, line in open_lines(args.input):
        tokens = tokenize(line)
        if not tokens:
            raise ReaderError(args.input, number, "empty line; every line must hold one sentence")
        sources.append(torch.tensor(vocabulary.ids(w.lower() for w in tokens)))
    beam = args.beam or saved["beam"]
    weight = saved["lm_weight"] if args.lm_weight is None else args.lm_weight
    words = saved["target_words"]
    lines = [
        detokenize([words[i] for i in beam_search(model, source, beam, weight, saved["length_penalty"])]) + "\n"
        for source in sources
    ]
    if args.output is None:
        sys.stdout.writelines(lines)
    else:
        args.output.write_text("".join(lines), encoding="utf-8")
    return 0
