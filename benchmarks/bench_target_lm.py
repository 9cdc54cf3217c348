"""Benchmark the fusion LM's scores over a decoder's target words: only those words against the whole softmax.

    .venv/bin/python benchmarks/bench_target_lm.py --lm results/pretrain_cpu_1h_2026-12-01/export \
        --targets ../shared/data/multi30k/train.en.gz

Cold fusion runs the frozen LM over every training prefix (``TargetLM.forward``). With an adaptive
softmax it used to compute the log-probabilities of all the LM's words and keep the target words'
(``softmax.log_probs(top)[..., lm_ids]``); now it computes the target words' scores and each tail
cluster's normaliser a slice at a time (``TargetLM._log_probs``). Both run here on the same
top-layer states, interleaved, and the script prints each one's milliseconds per batch, their ratio,
and the largest difference of their log-probabilities. The target words are the ``--words`` most
frequent words of ``--targets`` that the LM's vocabulary has, cased, as the translation data module
chooses them.
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import time
from collections import Counter

import torch

from elmo_pipeline.machine import describe_machine
from elmo_pipeline.models.source import BiLMSource
from elmo_pipeline.models.target_lm import TargetLM
from elmo_pipeline.text.tokenize import tokenize


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lm", required=True, help="an export folder with a softmax")
    parser.add_argument("--targets", required=True, help="target-side text (plain or .gz) for the target words")
    parser.add_argument("--words", type=int, default=8000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--length", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    opener = gzip.open if args.targets.endswith(".gz") else open
    with opener(args.targets, "rt", encoding="utf-8") as fh:
        counts = Counter(w for line in fh for w in tokenize(line))
    bilm, vocab = BiLMSource.parse(args.lm).load_with_vocab()
    known = [w for w, _ in counts.most_common() if w in vocab.index and w not in ("<S>", "</S>", "<UNK>")]
    words = ["<S>", "</S>", "<UNK>", *known[: args.words - 3]]
    lm = TargetLM(bilm, vocab, words)
    torch.manual_seed(0)
    ids = torch.randint(0, len(words), (args.batch, args.length))
    with torch.no_grad():
        top = lm.token_vectors[ids]
        for index, layer in enumerate(lm.bilm.forward_layers):
            h = layer(top)
            top = h + top if lm.config.residual(index) else h  # (B, T, P): the LM's top layer

        def whole() -> torch.Tensor:
            return torch.log_softmax(lm.bilm.softmax.log_probs(top)[..., lm.lm_ids], dim=-1)

        def targets_only() -> torch.Tensor:
            return lm._log_probs(top)

        difference = (whole() - targets_only()).abs().max().item()
        times: dict[str, list[float]] = {"whole softmax": [], "target words": []}
        for _ in range(args.repeats):
            for name, run in (("whole softmax", whole), ("target words", targets_only)):
                start = time.perf_counter()
                run()
                times[name].append(1000 * (time.perf_counter() - start))
    ms = {name: statistics.median(values) for name, values in times.items()}
    result = {
        "host": describe_machine(),
        "lm": args.lm,
        "softmax": bilm.config.softmax,
        "lm_vocabulary": len(vocab),
        "target_words": len(words),
        "outside_the_lm": lm.oov,
        "rows": args.batch * args.length,
        "ms_median": {name: round(value, 2) for name, value in ms.items()},
        "speedup": round(ms["whole softmax"] / ms["target words"], 2),
        "max_abs_difference": difference,
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
