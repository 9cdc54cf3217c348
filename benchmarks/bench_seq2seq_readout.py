"""Training steps of the Multi30k translation model: the output layer once over every step, against once per step.

    .venv/bin/python benchmarks/bench_seq2seq_readout.py none|cold [THREADS]

``Seq2Seq.forward`` runs the decoder's recurrence step by step and then its output layer (cold fusion's
layers included) once over all T steps; before 2026-12-04 it ran the output layer inside the loop, T
small matrix products. Both are timed here in one process on the same real batches (the sizes of
configs/seq2seq/multi30k_de_en.yaml, the LM results/caption_lm/export), from the same weights,
interleaved step by step, so a change in the machine's speed hits both alike. Each step: forward,
backward, Adam. It prints the median milliseconds of 20 steps after 2 of warm-up, and the first step's
loss of each (equal: the same function).
"""

from __future__ import annotations

import copy
import json
import statistics
import sys
import time
import types

import torch
from bench_cold_fusion_step import multi30k, multi30k_system  # python puts the script's folder on the path

from elmo_pipeline.machine import describe_machine
from elmo_pipeline.models.seq2seq import Seq2Seq

LM = "results/caption_lm/export"


def per_step(model: Seq2Seq, source: torch.Tensor, lengths: torch.Tensor, target_in: torch.Tensor) -> torch.Tensor:
    """The forward before: the output layer inside the loop over the target steps."""
    memory, state = model.encode(source, lengths)
    lm = model.lm(target_in) if model.fusion is not None else None  # (B, T, V)
    logits = []
    for t in range(target_in.shape[1]):
        deep, state, _ = model.recur(target_in[:, t], state, memory)
        logits.append(model.readout(deep, lm[:, t] if lm is not None else None))
    return torch.stack(logits, dim=1)


def main(fusion: str, threads: int) -> None:
    torch.set_num_threads(threads)
    data = multi30k(LM)
    torch.manual_seed(0)
    once = multi30k_system(data, fusion, LM)
    stepwise = copy.deepcopy(once)
    stepwise.model.forward = types.MethodType(per_step, stepwise.model)
    systems = {"once": once, "per_step": stepwise}
    optimizers = {name: torch.optim.Adam(s.parameters(), lr=1e-3) for name, s in systems.items()}
    seconds: dict[str, list[float]] = {name: [] for name in systems}
    first_loss = {}
    batches = iter(data.train_dataloader())
    for i in range(22):
        batch = next(batches)
        for name in ("once", "per_step") if i % 2 == 0 else ("per_step", "once"):
            torch.manual_seed(i)  # the same dropout masks for both
            start = time.perf_counter()
            loss, _ = systems[name]._loss(batch)
            optimizers[name].zero_grad()
            loss.backward()
            optimizers[name].step()
            if i >= 2:
                seconds[name].append(time.perf_counter() - start)
            first_loss.setdefault(name, float(loss))
    ms = {name: round(1000 * statistics.median(v), 1) for name, v in seconds.items()}
    print(
        json.dumps(
            {
                "host": describe_machine(),
                "fusion": fusion,
                "threads": threads,
                "median_ms_per_step": ms,
                "speed_up": round(ms["per_step"] / ms["once"], 3),
                "first_loss": first_loss,
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "none", int(sys.argv[2]) if len(sys.argv) > 2 else 1)
