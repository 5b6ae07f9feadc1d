#!/usr/bin/env bash
# Create the W&B sweep in scripts/wandb_sweep.yaml and run COUNT trials with one agent here.
# Needs W&B credentials (wandb login). Start more agents elsewhere with the printed `wandb agent` line.
# Usage: bash scripts/wandb_sweep.sh [COUNT]
set -euo pipefail
cd "$(dirname "$0")/.."
count=${1:-8}
sweep_id=$(wandb sweep scripts/wandb_sweep.yaml 2>&1 | tee /dev/stderr | sed -n 's/.*wandb agent \(.*\)$/\1/p' | tail -1)
[ -n "$sweep_id" ] || { echo "error: could not create the sweep (see above)" >&2; exit 1; }
wandb agent --count "$count" "$sweep_id"
