"""The heads' BiLSTM (nn.LSTM over packed sequences) forward + backward in fp32 and under bf16 autocast.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_head_lstm_bf16.py

The CoNLL-2003 tagger's encoder with ELMo at its input (input 434 = 50 word + 128 char-CNN + 256 ELMo,
2 x 200, 2 layers), 64 sentences of random lengths from T/3 to T. fp32 and bf16 alternate in one run,
so a change in the machine's speed hits both; the ratio is what to read (docs/tasks.md, "bf16").
"""

from __future__ import annotations

import time

import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from elmo_pipeline.machine import describe_machine


def step(lstm: torch.nn.LSTM, x: torch.Tensor, lengths: torch.Tensor, bf16: bool) -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, _ = lstm(packed)
        out, _ = pad_packed_sequence(out, batch_first=True)
        loss = out.float().pow(2).mean()
    loss.backward()


def main(repeats: int = 10) -> None:
    print(describe_machine())
    torch.manual_seed(0)
    for length in (20, 40):
        lstm = torch.nn.LSTM(434, 200, num_layers=2, bidirectional=True, batch_first=True)
        x = torch.randn(64, length, 434, requires_grad=True)
        lengths = torch.randint(length // 3, length + 1, (64,))
        lengths[0] = length
        ms = {False: [], True: []}
        for _ in range(2):  # two rounds, each precision in turn
            for bf16 in (False, True):
                for _ in range(2):
                    step(lstm, x, lengths, bf16)  # warm-up
                start = time.perf_counter()
                for _ in range(repeats):
                    step(lstm, x, lengths, bf16)
                ms[bf16].append(1000 * (time.perf_counter() - start) / repeats)
        fp32, bf16 = min(ms[False]), min(ms[True])
        print(f"T {length}: fp32 {fp32:.1f} ms, bf16 {bf16:.1f} ms, bf16 speed-up {fp32 / bf16:.2f}x")


if __name__ == "__main__":
    main()
