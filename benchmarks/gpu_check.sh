#!/usr/bin/env bash
# The prepared GPU check of issue 28 ("the first multi-GPU run works"): one script, one GPU, about 10 minutes at most.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]        # PYTHON=/path/to/python to use another interpreter
#
# Parts, each under its own timeout (seconds: 30 + 120 + 100 + 100 + 110 + 2 x 40 + 10 = 550,
# plus 10 s of grace per part):
#   cuda_tests the recurrence on the GPU against the CPU reference (tests/test_recurrence_cuda.py, marked
#              gpu): the fast backend, cuDNN's fused kernel with its flattened weights, the compiled
#              recurrence with CUDA graphs, fp32 and bf16 autocast, a whole biLM, and embed's runner
#   bench      the Original biLM's training tokens/s for each recurrence path (`elmo-pipeline bench`,
#              the bundled sample corpus, the config's batch of 128): the fast path in fp32 and
#              bf16-mixed, and unclipped on cuDNN (`fused`); the process's peak GPU memory (not
#              reset between variants)
#   bench_compiled
#              the same for the clipped recurrence under torch.compile with CUDA graphs, bf16-mixed
#              (`compiled-bf16`; its first steps compile each padded length, hence its own part)
#   ddp        a 1-GPU DDP pretraining run of the tiny config through two validations (the full softmax)
#              and a checkpoint: --trainer.strategy ddp --trainer.devices 1 --trainer.accelerator gpu
#   embed_fp32, embed_bf16
#              `embed` throughput of the Original biLM (random weights) on the GPU (benchmarks/bench_embed.py)
#   gpu_peak   the peak memory in use on the GPU over the whole check (nvidia-smi, sampled every 0.5 s)
# It prints one JSON summary on stdout (also written to OUT_DIR/summary.json) and exits non-zero if a
# part failed. Without a CUDA GPU it refuses at once, with exit status 2.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PY" ] || PY="$(command -v python3 || true)"
if [ -z "$PY" ]; then
    echo "gpu_check: no python found (set PYTHON=/path/to/python)" >&2
    exit 2
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" WANDB_MODE=disabled

# ---- fail fast without a CUDA GPU --------------------------------------------------------------
if ! timeout 30 "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu_check: no CUDA GPU: torch.cuda.is_available() is False (or torch did not load) with $PY;" \
        "this check needs one NVIDIA GPU and a CUDA build of torch. Nothing was run." >&2
    exit 2
fi

OUT="$(mkdir -p "${1:-$ROOT/runs/gpu_check}" && cd "${1:-$ROOT/runs/gpu_check}" && pwd)"
rm -rf "$OUT/ddp" && mkdir -p "$OUT/ddp"
CLI=("$PY" -m elmo_pipeline.cli)
declare -A RC

part() {  # part NAME TIMEOUT_S COMMAND...: run one part under its timeout, log to OUT/NAME.log
    local name="$1" limit="$2"
    shift 2
    echo "gpu_check: $name (at most ${limit}s)" >&2
    timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1
    RC[$name]=$?
    echo "gpu_check: $name exit ${RC[$name]}$( [ "${RC[$name]}" = 124 ] && echo ' (timed out)')" >&2
}

SMI_PID=""
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 500 >"$OUT/nvidia_smi_mib.csv" 2>/dev/null &
    SMI_PID=$!
fi

cd "$ROOT" || exit 2
part cuda_tests 120 "$PY" -m pytest -m gpu tests/test_recurrence_cuda.py -q -p no:cacheprovider
part bench 100 "${CLI[@]}" bench --config configs/pretrain/original.yaml --sample-data \
    --variants fast,fast-bf16,fused --steps 10 --warmup 3 --device cuda --json "$OUT/bench.json"
part bench_compiled 100 "${CLI[@]}" bench --config configs/pretrain/original.yaml --sample-data \
    --variants compiled-bf16 --steps 10 --warmup 6 --device cuda --json "$OUT/bench_compiled.json"

SAMPLE="$ROOT/data/sample"
cd "$OUT/ddp" || exit 2  # the tiny config's relative paths (runs/pretrain/tiny/...) land here
part ddp 110 "${CLI[@]}" pretrain --config "$ROOT/configs/pretrain/tiny.yaml" \
    --trainer.strategy ddp --trainer.devices 1 --trainer.accelerator gpu --trainer.precision bf16-mixed \
    --trainer.max_steps 20 --trainer.val_check_interval 10 --trainer.enable_progress_bar=false \
    "--data.sources=[$SAMPLE/gutenberg_emma.txt.gz,$SAMPLE/us_speeches.txt.gz]" \
    "--data.val_sources=[$SAMPLE/wikitext2_valid_excerpt.txt]" \
    "--data.test_sources=[$SAMPLE/wikitext2_test_excerpt.txt]"
cd "$ROOT" || exit 2

for precision in fp32 bf16; do
    part "embed_$precision" 40 "$PY" benchmarks/bench_embed.py --preset original --device cuda \
        --precision "$precision" --data "$SAMPLE/wikitext2_valid_excerpt.txt" --sentences 0 --repeat 20 \
        --json "$OUT/embed_$precision.json"
done

[ -n "$SMI_PID" ] && kill "$SMI_PID" 2>/dev/null
wait 2>/dev/null

RCS="$(for name in "${!RC[@]}"; do printf '%s=%s ' "$name" "${RC[$name]}"; done)"
timeout 10 "$PY" - "$OUT" "$RCS" <<'EOF'
"""The JSON summary of the parts' own outputs."""
import json
import sys
from pathlib import Path

out, rcs = Path(sys.argv[1]), dict(item.split("=") for item in sys.argv[2].split())


def load(name: str) -> dict:
    path = out / name
    return json.loads(path.read_text()) if path.is_file() else {}


def status(name: str) -> str:
    rc = int(rcs.get(name, -1))
    return "ok" if rc == 0 else "timed out" if rc in (124, 137) else f"failed (exit {rc}, see {out / name}.log)"


def variants(name: str) -> dict:
    found = load(name)
    return {
        "status": status(name.removesuffix(".json")),
        "device": found.get("device"),
        "batch_size": found.get("batch_size"),
        **{
            variant: {k: v.get(k) for k in ("tokens_per_s", "speedup", "step_ms", "peak_memory_mib")}
            for variant, v in found.get("variants", {}).items()
        },
    }


ddp = out / "ddp/runs/pretrain/tiny"
metrics = load("ddp/runs/pretrain/tiny/export/metrics.json")
smi_file = out / "nvidia_smi_mib.csv"
smi = [int(x) for x in smi_file.read_text().split() if x.isdigit()] if smi_file.is_file() else []
tests_log = out / "cuda_tests.log"
tests_tail = tests_log.read_text().strip().splitlines()[-1:] if tests_log.is_file() else []
summary = {
    "cuda_tests": {"status": status("cuda_tests"), "pytest": tests_tail[0] if tests_tail else None},
    "bench": variants("bench.json"),
    "bench_compiled": variants("bench_compiled.json"),
    "ddp": {
        "status": status("ddp"),
        "last_ckpt": (ddp / "checkpoints/last.ckpt").is_file(),
        "global_step": metrics.get("global_step"),
        "last_val_ppl": metrics.get("last_val_ppl"),
    },
    **{
        f"embed_{p}": {
            "status": status(f"embed_{p}"),
            **{k: load(f"embed_{p}.json").get(k) for k in ("tokens_per_s", "tokens", "gpu_max_memory_allocated_mib")},
        }
        for p in ("fp32", "bf16")
    },
    "gpu_peak_memory_used_mib": max(smi) if smi else None,
}
ok = all(v == "0" for v in rcs.values()) and summary["ddp"]["last_ckpt"]
summary["ok"] = bool(ok)
text = json.dumps(summary, indent=2)
(out / "summary.json").write_text(text + "\n")
print(text)
sys.exit(0 if ok else 1)
EOF
