#!/usr/bin/env bash
# Token-file checks for a CUDA machine, in one call: the GPU tests, prepare's speed with every CPU,
# the loader and sampler figures, and GPT-2 124M (compiled, bf16) trained on a 1B-token train.bin.
# Results land in $OUT (default /tmp/gpu_out).
#
# Usage: bash scripts/gpu_tokens.sh      (offline machines: scripts/prepare_gpu_carry.sh builds .gpu_carry/)
set -uo pipefail
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
if [ -d .gpu_carry ]; then
  export PYTHONPATH="$PWD/.gpu_carry/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
  export GPT2_DATA_MIRROR="$PWD/.gpu_carry/data"
fi
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
work=${WORK:-/tmp/bt}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
$PY -c "import torch, os; print('torch', torch.__version__, torch.cuda.get_device_name(), os.cpu_count(), 'CPUs')" \
  | tee -a "$OUT/gpu.txt"
echo "== GPU tests"
timeout 200 $PY -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider 2>&1 | tee "$OUT/pytest_gpu.log" | tail -8
echo "== token benchmarks"
timeout 100 $PY scripts/bench_tokens.py --workdir "$work" --sections prepare --text-mb 256 2>&1 | tee "$OUT/bench.txt"
timeout 120 $PY scripts/bench_tokens.py --workdir "$work" --sections loader,sampler 2>&1 | tee -a "$OUT/bench.txt"
echo "== GPT-2 124M on the 1B-token train.bin"
timeout 150 $PY train.py data=bin data.dir="$work/bin-1000000000" model=gpt2 data.block_size=1024 \
  data.batch_size=16 trainer.max_iters=60 trainer.eval_interval=60 trainer.eval_iters=5 trainer.log_interval=10 \
  trainer.compile=true optim.warmup_iters=10 trainer.sample_tokens=0 trainer.progress=false logger=none \
  hydra.run.dir=/tmp/runs/gpt2_bin > "$OUT/gpt2_bin.log" 2>&1
echo "exit $?"; tail -3 "$OUT/gpt2_bin.log"
cp /tmp/runs/gpt2_bin/summary.json "$OUT/gpt2_bin.summary.json" 2>/dev/null
