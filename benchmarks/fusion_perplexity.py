"""What a fusion LM could add to a trained translation model, measured without search: teacher-forced perplexity.

    .venv/bin/python benchmarks/fusion_perplexity.py CHECKPOINT [CHECKPOINT ...] [--split val]

For each reference target word y_t of the split (``</S>`` included), with the model fed the reference
prefix, it takes the translation model's log p_TM(y_t | x, y_<t) and the fusion LM's log p_LM(y_t | y_<t)
(the run's LM, over the same target words), and prints the perplexity of

    q_lambda(y_t) = p_TM(y_t)  p_LM(y_t)^lambda / sum_w p_TM(w) p_LM(w)^lambda

for each lambda of the grid: shallow fusion's score, normalised. lambda = 0 is the translation model
alone. If no lambda > 0 lowers it, the LM tells the model nothing about the next word that the model
does not already know, and shallow fusion can only move the search, not inform it. Also: the LM's own
perplexity, and the share of words where the LM gives the reference more probability than the model.
No beam search, so it takes seconds; the references are the split's target side as the data module
reads it (the target vocabulary's ids, ``<UNK>`` for a word outside it).
"""

from __future__ import annotations

import argparse
import json
import math

import torch
from unk_modes import load_run  # python puts the script's folder on the path

from elmo_pipeline.machine import describe_machine

GRID = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3)


def measure(path: str, split: str, data_root: str) -> dict:
    system, data = load_run(path, data_root)
    system.eval()
    loader = data.val_dataloader() if split == "val" else data.test_dataloader()
    nll = dict.fromkeys(GRID, 0.0)
    lm_nll, lm_better, words = 0.0, 0, 0
    for batch in loader:
        model_log_probs = torch.log_softmax(system.model(batch["source"], batch["lengths"], batch["target_in"]), -1)
        lm_log_probs = system.model.lm(batch["target_in"])  # (B, T, V)
        targets = batch["target_out"]  # (B, T), padding below 0
        valid = targets >= 0
        index = targets.clamp(min=0).unsqueeze(-1)
        for weight in GRID:
            fused = torch.log_softmax(model_log_probs + weight * lm_log_probs, dim=-1)
            nll[weight] -= float(fused.gather(-1, index).squeeze(-1)[valid].sum())
        tm_picked = model_log_probs.gather(-1, index).squeeze(-1)[valid]
        lm_picked = lm_log_probs.gather(-1, index).squeeze(-1)[valid]
        lm_nll -= float(lm_picked.sum())
        lm_better += int((lm_picked > tm_picked).sum())
        words += int(valid.sum())
    return {
        "checkpoint": path,
        "split": split,
        "words": words,
        "fused_perplexity_by_lambda": {str(w): round(math.exp(v / words), 3) for w, v in nll.items()},
        "lm_perplexity": round(math.exp(lm_nll / words), 2),
        "lm_gives_the_reference_more_probability": round(lm_better / words, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--split", default="val", choices=["val", "test"])
    parser.add_argument("--data-root", default="../shared/data/multi30k")
    args = parser.parse_args()
    results = [measure(path, args.split, args.data_root) for path in args.checkpoints]
    print(json.dumps({"host": describe_machine(), "runs": results}, indent=1))


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
