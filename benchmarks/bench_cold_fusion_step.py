"""Time training steps of the Multi30k translation model, with and without cold fusion.

    .venv/bin/python benchmarks/bench_cold_fusion_step.py none cold

The sizes of configs/seq2seq/multi30k_de_en.yaml (batch 64, the LM results/pretrain_cpu_1h_2026-12-01/export, 8,000
target words); each step is forward, backward and Adam's update on a real training batch. It prints
the median milliseconds of steps 5 to 24 for each arm named on the command line.
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import torch

from elmo_pipeline.data.translation import TranslationDataModule
from elmo_pipeline.machine import describe_machine
from elmo_pipeline.systems.seq2seq import Seq2SeqSystem

LM = "results/pretrain_cpu_1h_2026-12-01/export"


def multi30k(lm: str = LM) -> TranslationDataModule:
    """Multi30k as configs/seq2seq/multi30k_de_en.yaml reads it, set up for fit."""
    data = TranslationDataModule(
        data_root="../shared/data/multi30k",
        source_lang="de",
        target_lang="en",
        min_count=2,
        max_target_words=8000,
        batch_size=64,
        lm=lm,
    )
    data.setup("fit")
    return data


def multi30k_system(data: TranslationDataModule, fusion: str, lm: str = LM) -> Seq2SeqSystem:
    """The translation model at configs/seq2seq/multi30k_de_en.yaml's sizes, in train mode."""
    return Seq2SeqSystem(
        data.source_vocab_size,
        data.target_vocab_size,
        data.target_vocabulary,
        embedding_dim=128,
        encoder_dim=256,
        decoder_dim=256,
        attention_dim=128,
        fusion=fusion,
        lm=lm,
        cold_lm_dim=256,
        cold_hidden_dim=512,
    ).train()


def main(arms: list[str]) -> None:
    torch.manual_seed(0)
    data = multi30k()
    result = {}
    for fusion in arms:
        torch.manual_seed(0)
        system = multi30k_system(data, fusion)
        optimizer = torch.optim.Adam(system.parameters(), lr=1e-3)
        batches = iter(data.train_dataloader())
        seconds = []
        for _ in range(25):
            batch = next(batches)
            start = time.perf_counter()
            loss, _ = system._loss(batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            seconds.append(time.perf_counter() - start)
        result[fusion] = round(1000 * statistics.median(seconds[5:]), 1)
    print(json.dumps({"host": describe_machine(), "median_ms_per_step": result}))


if __name__ == "__main__":
    main(sys.argv[1:] or ["none", "cold"])
