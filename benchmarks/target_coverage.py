"""How much of Multi30k's reference English a word-level target vocabulary can produce at all.

    .venv/bin/python benchmarks/target_coverage.py [--data-root ../shared/data/multi30k]
        [--lm results/caption_lm/export]

A reference token outside the decoder's target vocabulary can only come out as ``<UNK>`` (then kept,
copied from the source or deleted): no word-level model can match it, and subword units are the
only way to reach it. This prints, for val and test_2016_flickr, the share of reference tokens
outside the target vocabulary for the vocabularies the translation config could build: the training
targets' words seen at least once or twice, with and without the fusion LM's restriction (the seq2seq
config keeps only the words the LM also has, so that every arm predicts over the same words). The
tokenizer is the one ``seq2seq`` uses (``text.tokenize``, case kept).
"""

from __future__ import annotations

import argparse
import gzip
import json
from collections import Counter
from pathlib import Path

from elmo_pipeline.data.translation import _lm_vocabulary
from elmo_pipeline.text.tokenize import tokenize


def read(path: Path) -> list[list[str]]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [tokenize(line.strip()) for line in f]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default="../shared/data/multi30k")
    parser.add_argument("--lm", default="results/caption_lm/export")
    args = parser.parse_args()
    root = Path(args.data_root)
    counts = Counter(token for line in read(root / "train.en.gz") for token in line)
    lm_words = set(_lm_vocabulary(args.lm).index)
    result: dict[str, dict[str, float | int]] = {}
    for split in ("val", "test_2016_flickr"):
        tokens = [token for line in read(root / f"{split}.en.gz") for token in line]
        for min_count in (1, 2):
            words = {w for w, n in counts.items() if n >= min_count}
            for name, vocabulary in (("train", words), ("train & LM", words & lm_words)):
                outside = sum(token not in vocabulary for token in tokens)
                result[f"{split} | min_count {min_count} | {name}"] = {
                    "vocabulary": len(vocabulary),
                    "reference_tokens": len(tokens),
                    "outside_percent": round(100 * outside / len(tokens), 2),
                }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
