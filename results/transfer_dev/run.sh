#!/usr/bin/env bash
# Dev-only experiments that choose the transfer options per task (docs/results.md, "Choosing the mix on dev"):
# every arm on GloVe + char-CNN, the one-hour biLM (results/pretrain_cpu_1h_2026-12-01/export), runs to a dev plateau, test never
# evaluated (--test_after_fit false). Two runs at a time, one torch thread each (2 CPU cores):
#   bash results/transfer_dev/run.sh [SEEDS]          # default seeds: "0 1"
# Each run writes results/transfer_dev/runs/<task>/<variant>/seed<k>.json; then
#   .venv/bin/python results/transfer_dev/summarize.py  -> results/transfer_dev/table.md
set -uo pipefail
cd "$(dirname "$0")/../.."   # the repository root
SEEDS=${1:-"0 1"}
BILM=results/pretrain_cpu_1h_2026-12-01/export
OUT=results/transfer_dev/runs
export WANDB_MODE=disabled PYTHONWARNINGS=ignore OMP_NUM_THREADS=1

NER="--config configs/finetune/ner_conll2003.yaml --trainer.max_epochs 10"
D=results/transfer_dev
SST="--config configs/finetune/sentiment_sst5.yaml --config $D/sst.yaml --trainer.max_epochs 12"
SNLI="--config configs/finetune/nli_snli.yaml --config $D/snli.yaml --trainer.max_epochs 12"

# task|variant|arguments
VARIANTS=(
  "ner_conll2003|baseline|$NER"
  "ner_conll2003|elmo|$NER --model.elmo $BILM"
  "ner_conll2003|random|$NER --model.elmo random:$BILM"
  "ner_conll2003|elmo_layernorm|$NER --model.elmo $BILM --model.elmo_layer_norm true"
  "sentiment_sst5|baseline|$SST"
  "sentiment_sst5|elmo|$SST --model.elmo $BILM"
  "sentiment_sst5|random|$SST --model.elmo random:$BILM"
  "sentiment_sst5|elmo_layernorm|$SST --model.elmo $BILM --model.elmo_layer_norm true"
  "sentiment_sst5|baseline_subtrees50k|$SST --data.train_subtrees true --data.max_train_examples 50000 --trainer.max_epochs 4"
  "nli_snli|baseline|$SNLI"
  "nli_snli|elmo_in_out|$SNLI --model.elmo $BILM"
  "nli_snli|elmo_in_out_gamma025|$SNLI --model.elmo $BILM --config $D/gamma025.yaml"
  "nli_snli|elmo_in|$SNLI --model.elmo $BILM --model.elmo_places [input]"
  "nli_snli|random_in_out_gamma025|$SNLI --model.elmo random:$BILM --config $D/gamma025.yaml"
)

one() {  # task variant seed args...
  local task=$1 variant=$2 seed=$3; shift 3
  local dest=$OUT/$task/$variant/seed$seed.json
  [ -f "$dest" ] && { echo "kept $dest"; return; }
  mkdir -p "$(dirname "$dest")" runs/transfer_dev
  local root=runs/transfer_dev/$task/$variant/seed$seed
  rm -rf "$root" && mkdir -p "$(dirname "$root")"
  .venv/bin/elmo-pipeline finetune $* --data.data_root ../shared/data --seed_everything "$seed" --data.seed "$seed" \
    --data.random_bilm_seed "$seed" --data.cache_dir runs/transfer_dev/cache --test_after_fit false \
    --trainer.enable_progress_bar false --trainer.max_time 00:00:20:00 --trainer.default_root_dir "$root" \
    --trainer.logger.init_args.save_dir "$root" --results_path "$dest" > "$root.log" 2>&1
  local rc=$?
  echo "$(date +%T) $task $variant seed$seed rc=$rc"
}
export -f one
export OUT
# the variants that choose the options first (every seed); the random controls and the subtree run last (evidence only)
for pass in choose control; do
  for seed in $SEEDS; do
    for v in "${VARIANTS[@]}"; do
      IFS='|' read -r task variant args <<< "$v"
      case $variant in random*|*subtrees*) [ $pass = control ] || continue ;; *) [ $pass = choose ] || continue ;; esac
      printf '%s\0' "$task $variant $seed $args"
    done
  done
done | xargs -0 -P 2 -I{} bash -c 'one {}'
