#!/usr/bin/env bash
# One training run of the Multi30k table (docs/seq2seq.md), from the repository root:
#   bash results/seq2seq/run.sh none 0     # no fusion; the same model decoded with shallow fusion too
#   bash results/seq2seq/run.sh cold 0     # cold fusion
# Checkpoints stay under runs/seq2seq_table/ (not tracked); results.json, the translations and the
# metrics are copied here, into results/seq2seq/<arm>/seed<seed>/.
set -euo pipefail
arm=$1
seed=$2
root=runs/seq2seq_table/$arm/seed$seed
rm -rf "$root"
OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} .venv/bin/elmo-pipeline seq2seq --config configs/seq2seq/multi30k_de_en.yaml \
    --model.fusion "$arm" --seed_everything "$seed" --trainer.enable_progress_bar false \
    --trainer.default_root_dir "$root" --trainer.logger.init_args.save_dir "$root"
run=$(ls -d "$root"/logs/version_* | tail -1)
dest=results/seq2seq/$arm/seed$seed
mkdir -p "$dest"
cp "$run"/results.json "$run"/metrics.csv "$run"/translations.*.txt "$dest"/
echo "wrote $dest"
