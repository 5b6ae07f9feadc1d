#!/usr/bin/env bash
# Build .gpu_carry/ (ignored by git) for an offline GPU machine whose python has torch but not our
# pure-Python config stack: hydra, omegaconf, antlr4 from this venv, and the offline data mirror.
set -euo pipefail
cd "$(dirname "$0")/.."
site=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
mirror=${GPT2_DATA_MIRROR:-../shared/data}
rm -rf .gpu_carry && mkdir -p .gpu_carry/site .gpu_carry/data
for pkg in hydra omegaconf antlr4; do cp -r "$site/$pkg" .gpu_carry/site/; done
cp -r "$mirror"/tinyshakespeare "$mirror"/gpt2-bpe .gpu_carry/data/
grep -qx "/.gpu_carry/" .git/info/exclude 2>/dev/null || echo "/.gpu_carry/" >> .git/info/exclude
du -sh .gpu_carry
