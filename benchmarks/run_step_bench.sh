#!/usr/bin/env bash
# The fast-step figures of docs/benchmarks.md, in one go, on an otherwise idle machine:
# today's pretraining step against the new one, for the one-hour recipe's biLM and for the tiny preset,
# on one thread and on every core. Writes results/bench/*.json (and prints the tables).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p results/bench
BENCH=".venv/bin/elmo-pipeline bench"
for threads in 1 2; do
  $BENCH --config configs/pretrain/cpu_1h.yaml --threads $threads --steps 8 \
    --variants today,plain,fast,fast-bf16 --json results/bench/cpu_1h_threads$threads.json
done
$BENCH --preset tiny --threads 1 --steps 8 --variants today,fast,fast-bf16,fast-adaptive-bf16 \
  --json results/bench/tiny_threads1.json
