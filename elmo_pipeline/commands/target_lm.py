"""``elmo-pipeline target-lm``: a fusion LM for a translation's target domain (docs/seq2seq.md, "An in-domain LM").

    elmo-pipeline target-lm text --data-root ../shared/data/multi30k --out runs/caption_lm/text
    elmo-pipeline pretrain --config configs/pretrain/captions.yaml          # continued pretraining on that text
    elmo-pipeline target-lm perplexity --data-root ../shared/data/multi30k \\
        --lm results/pretrain_cpu_1h_bf16_horizon/export --lm runs/caption_lm/export

``text`` writes the training split's target side (tokenised as ``seq2seq`` tokenises it, case kept) to
``train.txt``, holding its last ``--dev-lines`` lines out into ``dev.txt`` for the adaptation's model
selection: the LM never reads the translation's val or test text. ``perplexity`` gives each LM's
perplexity over the target words of a split, as ``seq2seq`` measures it (``lm_val_perplexity`` in its
``results.json``): the target vocabulary is built from the training targets and the LM's vocabulary, so
LMs with the same vocabulary (an adaptation keeps its source's) are compared on the same words.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from elmo_pipeline.data.translation import write_target_text
from elmo_pipeline.errors import InputError
from elmo_pipeline.files import write_json_atomic
from elmo_pipeline.systems.seq2seq_cli import target_lm_perplexity


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="elmo-pipeline target-lm", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    actions = parser.add_subparsers(dest="action", required=True)
    text = actions.add_parser("text", help="write the training targets as an LM corpus (train.txt, dev.txt)")
    text.add_argument("--data-root", required=True, help="the parallel corpus's folder (train.<lang>[.gz])")
    text.add_argument("--out", required=True, help="folder for train.txt and dev.txt")
    text.add_argument("--target-lang", default="en", help="the target files' suffix")
    text.add_argument("--train-file", default="train", help="the training split's file stem")
    text.add_argument("--dev-lines", type=int, default=1000, help="training lines held out (the last ones) as dev")
    text.add_argument("--overwrite", action="store_true", help="replace train.txt and dev.txt if --out has them")
    ppl = actions.add_parser("perplexity", help="each LM's perplexity over the target words of a split")
    ppl.add_argument("--data-root", required=True, help="the parallel corpus's folder (as --data.data_root)")
    ppl.add_argument("--lm", action="append", required=True, help="an export folder with a softmax; repeatable")
    ppl.add_argument(
        "--split",
        choices=("train", "val", "test"),
        default="val",
        help="train: the training targets, which an LM adapted with `target-lm text` has read (all but --dev-lines)",
    )
    ppl.add_argument("--source-lang", default="de", help="the source files' suffix (as --data.source_lang)")
    ppl.add_argument("--target-lang", default="en", help="the target files' suffix (as --data.target_lang)")
    ppl.add_argument("--min-count", type=int, default=2, help="as seq2seq's --data.min_count")
    ppl.add_argument("--max-target-words", type=int, default=8000, help="as seq2seq's --data.max_target_words")
    ppl.add_argument("--output", help="also write the figures here as JSON")
    args = parser.parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.action == "text":
        counts = write_target_text(
            args.data_root, args.out, args.target_lang, args.train_file, args.dev_lines, args.overwrite
        )
        print(json.dumps({"out": args.out, **counts}))
        return 0
    if args.min_count < 1 or args.max_target_words < 0:
        raise InputError(
            f"--min-count must be at least 1 and --max-target-words 0 (no limit) or more; got {args.min_count} "
            f"and {args.max_target_words}"
        )
    vocabulary = {
        "source_lang": args.source_lang,
        "target_lang": args.target_lang,
        "min_count": args.min_count,
        "max_target_words": args.max_target_words,
    }
    rows = [target_lm_perplexity(lm, args.data_root, args.split, **vocabulary) for lm in args.lm]
    if len({row["target_vocabulary_sha256"] for row in rows}) > 1:
        print(
            "target-lm: the LMs' target vocabularies differ (their own vocabularies do), so their perplexities are "
            "over different words and do not compare",
            file=sys.stderr,
        )
    for row in rows:
        print(json.dumps(row))
    if args.output:
        write_json_atomic(args.output, rows)
    return 0
