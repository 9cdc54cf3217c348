"""`elmo-pipeline vocab`: build the vocabulary file of a corpus (the work: data/lm.py, build_vocabulary)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from elmo_pipeline.data.lm import TOKENIZERS, build_vocabulary, check_vocab_output


def main(argv: list[str]) -> int:
    """`elmo-pipeline vocab`: build the vocabulary file of a corpus."""
    parser = argparse.ArgumentParser(prog="elmo-pipeline vocab", description=build_vocabulary.__doc__)
    parser.add_argument("sources", nargs="+", help="corpus files, globs or hf:<id>")
    parser.add_argument("--output", required=True, help="vocabulary file to write (one word per line)")
    parser.add_argument("--max-size", type=int, default=None, help="keep the most frequent words (specials included)")
    parser.add_argument("--min-count", type=int, default=1)
    parser.add_argument("--tokenizer", choices=sorted(TOKENIZERS), default="regex")
    parser.add_argument("--encoding-errors", choices=["strict", "replace"], default="strict")
    parser.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    check_vocab_output(Path(args.output), args.sources, args.overwrite)
    vocab = build_vocabulary(
        args.sources, args.tokenizer, args.max_size, args.min_count, encoding_errors=args.encoding_errors
    )
    vocab.save(args.output)
    print(f"wrote {len(vocab)} words to {args.output}")
    return 0
