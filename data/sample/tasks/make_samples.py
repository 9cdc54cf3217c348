"""Make the bundled demo samples of the three downstream tasks in ``data/sample/tasks``.

Reads the full data folder (``../shared/data`` relative to the repository root unless ``--source``
says otherwise) and writes, with the same relative file names, so ``--data.data_root data/sample/tasks``
works unchanged:

- ``conll2003/{train,valid,test}.txt``: whole consecutive documents from the start of each split, a
  byte-exact prefix of the original file, stopping at the first document boundary with at least 250 / 100 / 100
  sentences, or earlier if the next document would go over 300 / 130 / 130.
- ``sst5/trees/{train,dev,test}.txt``: 300 / 100 / 100 lines chosen with ``random.Random(0)``, in file order.
- ``snli/snli_1.0_{train,dev,test}.jsonl.gz``: 300 / 100 / 100 labelled pairs chosen with ``random.Random(0)``
  (train from the 1% sample), in file order, fields ``gold_label``, ``sentence1``, ``sentence2``, ``pairID``,
  gzip with mtime 0.

The output is deterministic: running the script again gives byte-identical files.

    python data/sample/tasks/make_samples.py [--source ../shared/data] [--out data/sample/tasks]
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
DOCSTART = "-DOCSTART- -X- -X- O\n"
CONLL = {"train": (250, 300), "valid": (100, 130), "test": (100, 130)}
SST = {"train": 300, "dev": 100, "test": 100}
SNLI = {
    "train": ("snli_1.0_train.frac0.01_seed0.jsonl.gz", 300),
    "dev": ("snli_1.0_dev.jsonl.gz", 100),
    "test": ("snli_1.0_test.jsonl.gz", 100),
}
LABELS = ("entailment", "neutral", "contradiction")
FIELDS = ("gold_label", "sentence1", "sentence2", "pairID")


def sentences(text: str) -> int:
    """The number of blank-line-separated sentences in ``text`` (``-DOCSTART-`` lines not counted)."""
    return sum(1 for block in text.replace(DOCSTART, "\n").split("\n\n") if block.strip())


def conll_excerpt(text: str, target: int, limit: int) -> tuple[str, int]:
    """The longest prefix of whole documents that stops once ``target`` sentences are reached, never above ``limit``."""
    starts = [m.start() for m in re.finditer("^" + re.escape(DOCSTART), text, flags=re.MULTILINE)]
    end, count = 0, 0
    for k, start in enumerate(starts):
        stop = starts[k + 1] if k + 1 < len(starts) else len(text)
        n = sentences(text[start:stop])
        if count >= target or count + n > limit:
            break
        end, count = stop, count + n
    return text[:end], count


def sample(items: list, k: int) -> list:
    """``k`` items chosen with ``random.Random(0)``, kept in their original order."""
    return [items[i] for i in sorted(random.Random(0).sample(range(len(items)), k))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", type=Path, default=REPO.parent / "shared" / "data", help="full data folder")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent, help="output folder")
    args = parser.parse_args()
    src, out = args.source, args.out

    (out / "conll2003").mkdir(parents=True, exist_ok=True)
    for split, (target, limit) in CONLL.items():
        text = (src / "conll2003" / f"{split}.txt").read_text(encoding="utf-8")
        excerpt, count = conll_excerpt(text, target, limit)
        (out / "conll2003" / f"{split}.txt").write_text(excerpt, encoding="utf-8", newline="")
        print(f"conll2003/{split}.txt: {count} sentences, {excerpt.count(DOCSTART)} documents")

    (out / "sst5" / "trees").mkdir(parents=True, exist_ok=True)
    for split, k in SST.items():
        lines = (src / "sst5" / "trees" / f"{split}.txt").read_text(encoding="utf-8").splitlines(keepends=True)
        chosen = sample(lines, k)
        chosen[-1] = chosen[-1].rstrip("\n") + "\n"
        (out / "sst5" / "trees" / f"{split}.txt").write_text("".join(chosen), encoding="utf-8", newline="")
        print(f"sst5/trees/{split}.txt: {len(chosen)} trees")

    (out / "snli").mkdir(parents=True, exist_ok=True)
    for split, (name, k) in SNLI.items():
        with gzip.open(src / "snli" / name, "rt", encoding="utf-8") as f:
            records = [json.loads(line) for line in f if line.strip()]
        chosen = sample([r for r in records if r["gold_label"] in LABELS], k)
        data = "".join(json.dumps({key: r[key] for key in FIELDS}, ensure_ascii=False) + "\n" for r in chosen)
        with open(out / "snli" / f"snli_1.0_{split}.jsonl.gz", "wb") as raw:
            with gzip.GzipFile(filename="", mode="wb", compresslevel=9, fileobj=raw, mtime=0) as gz:
                gz.write(data.encode("utf-8"))
        print(f"snli/snli_1.0_{split}.jsonl.gz: {len(chosen)} pairs")


if __name__ == "__main__":
    main()
