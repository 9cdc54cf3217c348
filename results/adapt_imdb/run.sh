#!/usr/bin/env bash
# the domain-adaptation run of docs/pretraining.md, then SST-5 dev with each biLM (2 seeds)
set -uo pipefail
cd "$(dirname "$0")/../.."   # the repository root
B=.venv/bin/elmo-pipeline
C=configs/pretrain/adapt_imdb.yaml
export WANDB_MODE=disabled PYTHONWARNINGS=ignore
# the held-out text and the source's vocabulary (the header of the config)
mkdir -p runs/adapt_imdb && cp results/pretrain_cpu_1h_2026-12-01/export/vocab.txt runs/adapt_imdb/vocab.txt
IMDB=../shared/data/lm/imdb_aclImdb/imdb_aclImdb_test_reviews.txt.gz
zcat $IMDB | sed -n 22801,23300p > runs/adapt_imdb/valid.txt
zcat $IMDB | sed -n 23801,24799p > runs/adapt_imdb/test.txt
echo "== before $(date +%T)"; $B pretrain test --config $C --trainer.enable_progress_bar=false 2>&1 | grep -E "test perplexity|error" 
echo "== fit $(date +%T)"; /usr/bin/time -v $B pretrain --config $C --trainer.enable_progress_bar=false > runs/adapt_imdb/fit.log 2>&1; echo "fit rc=$?"
grep -E "Elapsed|Maximum resident" runs/adapt_imdb/fit.log
echo "== after $(date +%T)"; $B pretrain test --config $C --ckpt_path best --trainer.enable_progress_bar=false 2>&1 | grep -E "test perplexity|error"
echo "== sst $(date +%T)"
for bilm in results/pretrain_cpu_1h_2026-12-01/export runs/adapt_imdb/export; do
  for seed in 0 1; do
    name=$(basename $(dirname $bilm))-seed$seed
    OMP_NUM_THREADS=2 $B finetune --config configs/finetune/sentiment_sst5.yaml --data.data_root ../shared/data \
      --model.elmo $bilm --seed_everything $seed --data.seed $seed --data.random_bilm_seed $seed \
      --trainer.max_time 00:00:02:30 --data.train_subtrees false \
      --model.head.init_args.pre_encode_dim 100 --model.head.init_args.hidden_size 100 \
      --model.head.init_args.integrator_size 100 --model.head.init_args.output_hidden 100 \
      --model.head.init_args.dropout 0.5 --test_after_fit false --trainer.enable_progress_bar false \
      --trainer.default_root_dir runs/adapt_imdb/sst/$name --data.cache_dir runs/adapt_imdb/cache \
      --results_path runs/adapt_imdb/sst/$name/results.json > runs/adapt_imdb/sst-$name.log 2>&1
    echo "$name rc=$? $(python3 -c "import json;r=json.load(open('runs/adapt_imdb/sst/$name/results.json'));print('best dev acc', r['best_val'], 'epochs', r['epochs'])" 2>&1)"
  done
done
echo "== done $(date +%T)"
