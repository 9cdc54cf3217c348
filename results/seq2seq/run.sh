#!/usr/bin/env bash
# One training run of the Multi30k table (docs/seq2seq.md), from the repository root:
#   bash results/seq2seq/run.sh none 0     # no fusion; the same model decoded with shallow fusion too
#   bash results/seq2seq/run.sh cold 0     # cold fusion
#   bash results/seq2seq/run.sh none 1 resume   # an interrupted run, from its last epoch (last.ckpt)
# Checkpoints stay under runs/seq2seq_table/ (not tracked); results.json, the translations and the
# metrics are copied into $OUT/<arm>/seed<seed>/. OUT is results/seq2seq by default, and LM the config's
# --model.lm (the in-domain caption LM, results/caption_lm/export). The table in results/seq2seq was made
# with the 2026-12-01 one-hour biLM:
#   LM=results/pretrain_cpu_1h_2026-12-01/export bash results/seq2seq/run.sh none 0
# The runs with the in-domain LM go to their own folder:
#   OUT=results/seq2seq_caption_lm bash results/seq2seq/run.sh none 0
set -euo pipefail
arm=$1
seed=$2
out=${OUT:-results/seq2seq}
root=runs/seq2seq_table/$(basename "$out")/$arm/seed$seed
lm=()
if [ -n "${LM:-}" ]; then
  lm=(--model.lm "$LM")
fi
resume=()
if [ "${3:-}" = resume ]; then
  resume=(--ckpt_path last)
else
  rm -rf "$root"
fi
OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} .venv/bin/elmo-pipeline seq2seq --config configs/seq2seq/multi30k_de_en.yaml \
    --model.fusion "$arm" --seed_everything "$seed" --trainer.enable_progress_bar false \
    --trainer.default_root_dir "$root" --trainer.logger.init_args.save_dir "$root" "${lm[@]}" "${resume[@]}"
run=$(ls -d "$root"/logs/version_* | sort -V | tail -1)
dest=$out/$arm/seed$seed
mkdir -p "$dest"
cp "$run"/results.json "$run"/translations.*.txt "$dest"/
# the metrics of every attempt, in order (a resumed run logs to a new version folder). A resumed run starts
# again from its last checkpoint, the end of an epoch, so the rows that the interrupted attempt logged
# after that point are dropped: the resumed attempt logs those steps again.
.venv/bin/python - "$root" "$dest/metrics.csv" <<'PY'
import csv, sys
from pathlib import Path
rows, fields = [], []
for folder in sorted(Path(sys.argv[1]).glob("logs/version_*"), key=lambda p: int(p.name.split("_")[1])):
    with open(folder / "metrics.csv", newline="") as f:
        reader = csv.DictReader(f)
        fields += [k for k in reader.fieldnames or [] if k not in fields]
        attempt = list(reader)
    if attempt:
        first_step = min(int(r["step"]) for r in attempt)
        rows = [r for r in rows if int(r["step"]) < first_step]
    rows += attempt
with open(sys.argv[2], "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
PY
echo "wrote $dest"
