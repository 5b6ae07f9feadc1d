"""Checkpoint size and save/load times for a config (default: experiment=shakespeare_char on the CPU).

Usage: python scripts/bench_checkpoint.py [hydra overrides ...] [--repeats 5]
Builds the Trainer, takes one optimizer step (so AdamW's moments exist), then times what a periodic
checkpoint costs: Trainer.state() + atomic save of ckpt/last.pt, and load + restore for a resume.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gpt2.checkpoint import LAST  # noqa: E402
from gpt2.config import compose, from_hydra  # noqa: E402
from gpt2.data import infinite_batches  # noqa: E402
from gpt2.optim import get_lr  # noqa: E402
from gpt2.trainer import Trainer, train_step  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", default=["experiment=shakespeare_char", "trainer.device=cpu"])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    config = from_hydra(compose(*args.overrides, "logger=none"))
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(config, Path(tmp))
        train_step(trainer.model, trainer.optimizer, infinite_batches(trainer.train_dl), trainer.rt,
                   get_lr(0, config.optim), config.trainer.grad_accum, config.optim.grad_clip)
        trainer.progress.iters = 1
        saves, loads = [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            trainer.save(LAST)
            saves.append(time.perf_counter() - start)
            start = time.perf_counter()
            trainer.restore(Path(tmp) / "ckpt" / LAST)
            loads.append(time.perf_counter() - start)
        size = (Path(tmp) / "ckpt" / LAST).stat().st_size
    params = trainer.model.num_params(non_embedding=False)
    print(f"config: {' '.join(args.overrides)}")
    print(f"model: {params / 1e6:.2f}M parameters; checkpoint {size / 2**20:.1f} MiB "
          f"(model + AdamW moments + RNG/sampler state)")
    print(f"save (state + atomic write + fsync): median {statistics.median(saves) * 1e3:.0f} ms "
          f"over {args.repeats}")
    print(f"load + restore: median {statistics.median(loads) * 1e3:.0f} ms over {args.repeats}")


if __name__ == "__main__":
    main()
