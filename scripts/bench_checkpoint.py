"""Checkpoint size and save/load times for a config (default: experiment=shakespeare_char on the CPU).

Usage: python scripts/bench_checkpoint.py [hydra overrides ...] [--repeats 5]
Builds the run's parts, takes one optimizer step (so AdamW's moments exist), then times what a periodic
checkpoint costs: collecting every part's state + atomic save of ckpt/last.pt, and load + restore for
a resume.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from gpt2.config import from_hydra
from gpt2.run.compose import compose
from gpt2.run.script import positive_int, run_script, script_parser
from gpt2.train.checkpoint import LAST, load_checkpoint
from gpt2.train.parts import build
from gpt2.train.resume import ResumePlan
from gpt2.train.run_checkpoints import RunCheckpoints
from gpt2.train.step import train_step
from gpt2.train.trainer import Progress


def build_parser():
    parser = script_parser(__doc__)
    parser.add_argument("overrides", nargs="*", default=["experiment=shakespeare_char", "trainer.device=cpu"])
    parser.add_argument("--repeats", type=positive_int, default=5)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    config = from_hydra(compose(*args.overrides, "logger=none"))
    parts = build(config)
    train_step(parts.model, parts.optimizer, parts.data.train_dl.forever(), parts.runtime, parts.schedule(0),
               config.trainer.grad_accum, config.optim.grad_clip)
    progress = Progress(iters=1)
    with tempfile.TemporaryDirectory() as tmp:
        ckpts = RunCheckpoints(Path(tmp) / "ckpt", config, parts, progress)
        saves, loads = [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            ckpts.save(LAST)
            saves.append(time.perf_counter() - start)
            start = time.perf_counter()
            path = ckpts.dir / LAST
            ckpts.restore(ResumePlan("resume", path, load_checkpoint(path)))
            loads.append(time.perf_counter() - start)
        size = (ckpts.dir / LAST).stat().st_size
    params = parts.model.num_params(non_embedding=False)
    print(f"config: {' '.join(args.overrides)}")
    print(f"model: {params / 1e6:.2f}M parameters; checkpoint {size / 2**20:.1f} MiB "
          f"(model + AdamW moments + RNG/loader/schedule state)")
    print(f"save (state + atomic write + fsync): median {statistics.median(saves) * 1e3:.0f} ms "
          f"over {args.repeats}")
    print(f"load + restore: median {statistics.median(loads) * 1e3:.0f} ms over {args.repeats}")


if __name__ == "__main__":
    run_script(main)
