#!/usr/bin/env bash
# GPU checks for a CUDA machine, in one call: the GPU tests, nanoGPT's shakespeare_char baby GPT
# (compiled, bf16), and a short GPT-2 124M throughput run. Results land in $OUT (default /tmp/gpu_out).
#
# Usage: bash scripts/gpu_check.sh [budget_seconds]      (TESTS_ONLY=1: only the GPU tests)
# Offline machines: set GPT2_DATA_MIRROR (else ../shared/data) and put hydra-core/omegaconf on
# PYTHONPATH if the machine's python lacks them (scripts/prepare_gpu_carry.sh builds .gpu_carry/).
set -uo pipefail
budget=${1:-540}
start=$SECONDS
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
if [ -d .gpu_carry ]; then
  export PYTHONPATH="$PWD/.gpu_carry/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
  export GPT2_DATA_MIRROR="$PWD/.gpu_carry/data"
fi
export PYTHONUNBUFFERED=1 HYDRA_FULL_ERROR=1
PY=${PYTHON:-python3}
left() { echo $((budget - (SECONDS - start))); }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
$PY -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" | tee -a "$OUT/gpu.txt"

echo "== GPU tests"
reserve=240; [ -n "${TESTS_ONLY:-}" ] && reserve=10
timeout $(( $(left) - reserve )) $PY -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider 2>&1 \
  | tee "$OUT/pytest_gpu.log" | tail -15

run() {  # run NAME SECONDS OVERRIDES...: a training run whose summary, metrics and log come back
  local name=$1 seconds=$2; shift 2
  echo "== $name ($seconds s at most)"
  timeout "$seconds" $PY train.py "$@" logger=none trainer.progress=false "hydra.run.dir=/tmp/runs/$name" \
    > "$OUT/$name.log" 2>&1
  echo "exit $?"; tail -4 "$OUT/$name.log"
  for f in summary.json metrics.jsonl; do
    [ -f "/tmp/runs/$name/$f" ] && cp "/tmp/runs/$name/$f" "$OUT/$name.$f"
  done
}

if [ -n "${TESTS_ONLY:-}" ]; then echo "== done in $((SECONDS - start)) s (tests only)"; exit 0; fi
run shakespeare_char $(( $(left) - 100 )) experiment=shakespeare_char trainer.compile=true
if [ "$(left)" -gt 90 ]; then
  run gpt2_124m $(( $(left) - 10 )) model=gpt2 data.block_size=1024 data.batch_size=16 \
    trainer.max_iters=50 trainer.eval_interval=50 trainer.eval_iters=5 trainer.log_interval=10 \
    trainer.compile=true optim.warmup_iters=10 trainer.sample_tokens=0
fi
echo "== done in $((SECONDS - start)) s"
