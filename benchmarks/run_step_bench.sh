#!/usr/bin/env bash
# The training-step figures of docs/benchmarks.md, in one go, on an otherwise idle machine: the fp32 step
# against the bf16 one, interleaved on batches drawn from the one-hour recipe's real corpus and pipeline
# (../shared/data/lm), on one thread and on every core. Writes results/bench/*.json (and prints the tables).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p results/bench
BENCH=".venv/bin/elmo-pipeline bench"
for threads in 1 2; do
  $BENCH --config configs/pretrain/cpu_1h.yaml --threads $threads --steps 24 \
    --json results/bench/cpu_1h_real_threads$threads.json
done
