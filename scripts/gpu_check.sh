#!/usr/bin/env bash
# GPU checks for a CUDA machine, in one call (about 8 minutes on an H100): the GPU tests,
# experiment=shakespeare_char to completion, and scripts/bench.py on GPT-2 124M (T=1024) eager and
# compiled at batch 16 and 32 (tokens/s, MFU, memory, data wait). Results land in $OUT (default
# /tmp/gpu_out), with the table in $OUT/results.md.
#
# Usage: bash scripts/gpu_check.sh [budget_seconds]      (TESTS_ONLY=1: only the GPU tests; RECIPE=1:
#        also experiment=shakespeare_char_modern and 40 steps of speedrun_124m, docs/recipe.md)
# Offline machines: set GPT2_DATA_MIRROR (else ../shared/data) and put hydra-core/omegaconf on
# PYTHONPATH if the machine's python lacks them (scripts/prepare_gpu_carry.sh builds .gpu_carry/).
# PYTHON=... picks the interpreter; BENCH_ARGS=... replaces the bench's arguments (CI runs this
# script on a CPU with tiny ones, to keep it working).
set -uo pipefail
budget=${1:-540}
start=$SECONDS
OUT=${OUT:-/tmp/gpu_out}
RUNS=${RUNS:-/tmp/runs}
mkdir -p "$OUT"
if [ -d .gpu_carry ]; then
  export PYTHONPATH="$PWD/.gpu_carry/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
  export GPT2_DATA_MIRROR="$PWD/.gpu_carry/data"
fi
export PYTHONUNBUFFERED=1 HYDRA_FULL_ERROR=1
PY=${PYTHON:-python3}
left() { echo $((budget - (SECONDS - start))); }

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  $PY -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU')"
} | tee "$OUT/gpu.txt"

echo "== GPU tests"
reserve=330; [ -n "${TESTS_ONLY:-}" ] && reserve=10
timeout $(( $(left) - reserve )) $PY -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider 2>&1 \
  | tee "$OUT/pytest_gpu.log" | tail -15
if [ -n "${TESTS_ONLY:-}" ]; then echo "== done in $((SECONDS - start)) s (tests only)"; exit 0; fi

run() {  # run NAME SECONDS OVERRIDES...: a training run whose summary, metrics and log come back
  local name=$1 seconds=$2; shift 2
  echo "== $name ($seconds s at most)"
  timeout "$seconds" $PY train.py "$@" logger=none trainer.progress=false "hydra.run.dir=$RUNS/$name" \
    > "$OUT/$name.log" 2>&1
  echo "exit $?"; tail -4 "$OUT/$name.log"
  for f in summary.json metrics.jsonl; do
    [ -f "$RUNS/$name/$f" ] && cp "$RUNS/$name/$f" "$OUT/$name.$f"
  done
}

if [ -n "${RECIPE:-}" ]; then  # today's recipe (docs/recipe.md): the modern char run, then speedrun_124m steps
  run shakespeare_char_modern $(( $(left) - 320 )) experiment=shakespeare_char_modern ${CHAR_ARGS:-}
  $PY scripts/prepare.py "${GPT2_DATA_MIRROR:-../shared/data}/tinyshakespeare/input.txt" --out "$RUNS/ts_bin" \
    > "$OUT/prepare.log" 2>&1
  # shellcheck disable=SC2086
  run speedrun_124m 150 experiment=speedrun_124m "data.dir=$RUNS/ts_bin" trainer.max_iters=40 \
    trainer.grad_accum=1 data.batch_size=16 trainer.eval_interval=40 trainer.eval_iters=2 trainer.sample_tokens=0 \
    ${SPEEDRUN_ARGS:-}
fi
run shakespeare_char $(( $(left) - 200 )) experiment=shakespeare_char ${CHAR_ARGS:-}

echo "== bench ($(( $(left) - 10 )) s at most)"
# shellcheck disable=SC2086
timeout $(( $(left) - 10 )) $PY scripts/bench.py ${BENCH_ARGS:---preset gpt2 --compile off,on --batch-sizes 16,32 --iters 20 --warmup 5} \
  --json "$OUT/bench.json" 2>&1 | tee "$OUT/bench.log" | grep -v "^$"

$PY - "$OUT" "$RUNS" <<'PYEOF' | tee "$OUT/results.md"
import sys
from pathlib import Path
from gpt2.run.record import RunSummary
out = Path(sys.argv[1])
print((out / "gpu.txt").read_text().strip().replace("\n", "; "), "\n")
print("| experiment | dtype | best val loss | iterations | wall | tokens/s | MFU |\n| --- | --- | --- | --- | --- | --- | --- |")
for name in ("shakespeare_char", "shakespeare_char_modern", "speedrun_124m"):
    s = RunSummary.read(Path(sys.argv[2]) / name)
    if s is not None and s.status != "failed":
        mfu = f"{100 * s['mfu']:.1f}%" if s.get("mfu") is not None else "-"
        print(f"| {name} | {s['dtype']} | {s['best_val_loss']:.4f} | {s['iters']} | {s['wall_s']:.0f} s | "
              f"{s['tokens_per_sec']:,.0f} | {mfu} |")
print()
PYEOF
grep '^|' "$OUT/bench.log" | tee -a "$OUT/results.md"  # the bench's own table, as far as it got
echo "== done in $((SECONDS - start)) s"
