"""Batches per second of four ways to build (x, y) training batches from Tiny Shakespeare, side by side.

1. a textbook per-window loader: per-sample __getitem__ + default collate, shuffled, num_workers=1,
   pin_memory=True
2. the same with num_workers=0
3. nanoGPT's get_batch: torch.randint starts, np.memmap of a uint16 .bin, per-row stack
4. ours, as the trainer uses it: make_dataloader's train_dl (one gather per tensor, contiguous x, y)

Usage: python scripts/bench_data.py [--batch-size 64] [--block-size 256] [--batches 200] [--repeats 5]
Each figure is the median over repeats of batches/s; the ratios are ours / each baseline.
"""

from __future__ import annotations

import statistics
import tempfile
import time
import warnings
from itertools import islice
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from gpt2.config import DataConfig
from gpt2.data.loaders import LMSequenceDataset, make_dataloader
from gpt2.data.sources import load_tokens, train_valid_split
from gpt2.run.script import nonempty_str, positive_int, run_script, script_parser


def textbook_loader(tokens: torch.Tensor, batch_size: int, block_size: int, num_workers: int):
    """A Dataset of windows read one window per call, shuffle=True, default collate."""
    dataset = LMSequenceDataset(tokens, block_size)  # int index: one window per call
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=num_workers,
                        pin_memory=True, drop_last=False)
    while True:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pin_memory without CUDA warns; the textbook loader sets it anyway
            batches = iter(loader)
        yield from batches


def nanogpt_get_batch(tokens: torch.Tensor, batch_size: int, block_size: int, workdir: Path):
    """nanoGPT's train.py get_batch (CPU branch): memmap the uint16 .bin again for every batch."""
    path = workdir / "train.bin"
    tokens.numpy().astype(np.uint16).tofile(path)
    while True:
        data = np.memmap(path, dtype=np.uint16, mode="r")
        ix = torch.randint(len(data) - block_size, (batch_size,))
        x = torch.stack([torch.from_numpy(data[i:i + block_size].astype(np.int64)) for i in ix])
        y = torch.stack([torch.from_numpy(data[i + 1:i + 1 + block_size].astype(np.int64)) for i in ix])
        yield x, y


def ours(cfg: DataConfig):
    return make_dataloader(cfg).train_dl.forever()


def batches_per_sec(batches, count: int, repeats: int) -> float:
    for _ in islice(batches, 3):  # warm up (starts workers, first epoch permutation)
        pass
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for x, y in islice(batches, count):
            assert x.shape == y.shape
        rates.append(count / (time.perf_counter() - start))
    return statistics.median(rates)


def build_parser():
    parser = script_parser(__doc__)
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument("--block-size", type=positive_int, default=256)
    parser.add_argument("--batches", type=positive_int, default=200, help="batches timed per repeat")
    parser.add_argument("--repeats", type=positive_int, default=5)
    parser.add_argument("--mirror", type=nonempty_str, default=None,
                        help="offline copy of the data (default: $GPT2_DATA_MIRROR)")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)

    cfg = DataConfig(block_size=args.block_size, batch_size=args.batch_size, mirror=args.mirror)
    _, tokens, _ = load_tokens(cfg)
    train_tokens, _ = train_valid_split(tokens, cfg.train_frac)
    our_batches = ours(cfg)  # built first: refuses, in one line, a block or batch size the data cannot fill
    B, T, n, r = args.batch_size, args.block_size, args.batches, args.repeats
    print(f"Tiny Shakespeare, GPT-2 BPE: {len(train_tokens):,} train tokens; B={B}, T={T}; "
          f"{torch.get_num_threads()} threads; median of {r} x {n} batches")
    with tempfile.TemporaryDirectory() as tmp:
        results = {
            "per-window loader (num_workers=1)": batches_per_sec(textbook_loader(train_tokens, B, T, 1), n, r),
            "per-window loader, num_workers=0": batches_per_sec(textbook_loader(train_tokens, B, T, 0), n, r),
            "nanoGPT get_batch": batches_per_sec(nanogpt_get_batch(train_tokens, B, T, Path(tmp)), n, r),
            "ours (train_dl)": batches_per_sec(our_batches, n, r),
        }
    mine = results["ours (train_dl)"]
    print(f"{'loader':34s} {'batches/s':>10s} {'ours is':>9s}")
    for name, rate in results.items():
        print(f"{name:34s} {rate:10.1f} {mine / rate:8.1f}x")


if __name__ == "__main__":
    run_script(main)
