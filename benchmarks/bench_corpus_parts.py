"""Benchmark reading the training corpus in parts: what one reader of R reads and tokenises.

    .venv/bin/python benchmarks/bench_corpus_parts.py ../shared/data/lm/enwiki_partial/enwiki_partial.part1.txt.gz

For R readers (ranks x DataLoader workers) it times reader 0 making one pass of batches over its part
(``LMBatches.count_part_batches``: lines read, tokenised, shuffled and bucketed; no tensors), once
for the corpus as a plain file (split by byte ranges) and once as one gzip file (every reader
decompresses it whole and tokenises every R-th line), and prints each time as a ratio of R = 1 (the
whole corpus through ``datasets``: what every rank read before parts). ``--megabytes`` cuts the text
to its first N MB. One warm-up pass first (imports, the page cache).
"""

from __future__ import annotations

import argparse
import gzip
import json
import tempfile
import time
from collections import Counter
from pathlib import Path

from elmo_pipeline.data.lm import LMBatches
from elmo_pipeline.machine import describe_machine
from elmo_pipeline.text.vocab import Vocabulary


def _reader_seconds(source: str, readers: int, vocab: Vocabulary) -> tuple[float, int]:
    batches = LMBatches([source], vocab, batch_size=64, shuffle_buffer=10_000, world_size=readers)
    start = time.perf_counter()
    count = batches.count_part_batches(0) if readers > 1 else sum(1 for _ in batches.global_batches())
    return time.perf_counter() - start, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("corpus", help="a plain or gzip text file")
    parser.add_argument("--megabytes", type=float, default=8.0)
    parser.add_argument("--readers", type=int, nargs="+", default=[1, 2, 4, 8])
    args = parser.parse_args()
    opener = gzip.open if args.corpus.endswith(".gz") else open
    with opener(args.corpus, "rb") as fh:
        text = fh.read(int(args.megabytes * 2**20))
    text = text[: text.rfind(b"\n") + 1]
    vocab = Vocabulary.from_counts(Counter(["the"]))  # the count pass never looks words up
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        plain, packed = Path(tmp) / "corpus.txt", Path(tmp) / "corpus.txt.gz"
        plain.write_bytes(text)
        packed.write_bytes(gzip.compress(text, compresslevel=6))
        _reader_seconds(str(plain), 64, vocab)  # warm up: imports (datasets for R = 1), the regex, the page cache
        _reader_seconds(str(packed), 1, vocab)
        for kind, path in (("plain", plain), ("gzip", packed)):
            for readers in args.readers:
                seconds, count = _reader_seconds(str(path), readers, vocab)
                rows.append({"file": kind, "readers": readers, "seconds": round(seconds, 2), "batches": count})
                print(f"{kind:5s} R={readers}: reader 0 {seconds:6.2f} s, {count} batches", flush=True)
    for kind in ("plain", "gzip"):
        whole = next(r["seconds"] for r in rows if r["file"] == kind and r["readers"] == 1)
        for row in rows:
            if row["file"] == kind:
                row["fraction_of_whole"] = round(row["seconds"] / whole, 3)
    print(json.dumps({"host": describe_machine(), "megabytes": args.megabytes, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
