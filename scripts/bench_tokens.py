"""Figures for corpora of billions of tokens: prepare's tokenization speed, the memory-mapped loader's
speed and peak RSS against the in-memory path, the sampler at 10^10 windows, and a training run.

Usage: python scripts/bench_tokens.py [--workdir DIR] [--tokens 1e9] [--sections prepare,loader,sampler,train]

- prepare: MB/s of scripts/prepare.py (1 worker and --workers) against plain single-threaded
  tiktoken encode_ordinary of the same file (Tiny Shakespeare repeated to --text-mb MB).
- loader: batches/s and peak RSS at B=64, T=1024 over a synthetic --tokens train.bin (random GPT-2 ids,
  written once into --workdir): data=bin (memory-mapped) against the same tokens held in memory as the
  text path holds them (an int64 tensor), and nanoGPT's get_batch; each in its own process, so each
  peak RSS is its own.
- sampler: time per batch and memory of the window order at 10^10 windows.
- train: python train.py data=bin on that train.bin with a small model on the CPU (--train-override
  changes it, e.g. trainer.device=cuda model=gpt2); its peak RSS and tokens/s.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import torch

from gpt2.data.tokenfiles import read_manifest
from gpt2.files import atomic_file
from gpt2.run.record import RunSummary
from gpt2.run.script import comma_choices, nonempty_path, nonempty_str, positive_int, run_script, script_parser
from gpt2.train.runtime import peak_rss_mb

ROOT = Path(__file__).resolve().parents[1]
B, T = 64, 1024


def synthetic_corpus(workdir: Path, tokens: int) -> Path:
    """workdir/bin-N/{train,val}.bin of random GPT-2 token ids (made once, reused)."""
    directory = workdir / f"bin-{tokens}"
    train = directory / "train.bin"
    if not train.is_file() or train.stat().st_size != 2 * tokens:
        directory.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        with atomic_file(train) as f:
            for start in range(0, tokens, 1 << 26):
                f.write(rng.integers(0, 50257, min(1 << 26, tokens - start), dtype=np.uint16).tobytes())
        rng.integers(0, 50257, 1 << 20, dtype=np.uint16).tofile(directory / "val.bin")
    return directory


# ------------------------------------------------------------------------------------------- prepare
def run_prepare(corpus: Path, workers: int, workdir: Path, mirror) -> tuple[dict, float]:
    """scripts/prepare.py in its own process: (its manifest, its peak RSS in MB)."""
    with tempfile.TemporaryDirectory(dir=workdir) as out:
        result = subprocess.run([sys.executable, str(ROOT / "scripts" / "prepare.py"), str(corpus), "--out", out,
                                 "--workers", str(workers), "--data-dir", str(workdir / "data"),
                                 *(["--mirror", mirror] if mirror else [])],
                                capture_output=True, text=True, check=True, stdin=subprocess.DEVNULL)
        manifest = read_manifest(Path(out))
    return manifest, float(re.search(r"peak RSS ([\d,]+) MB", result.stdout)[1].replace(",", ""))


def bench_prepare(workdir: Path, text_mb: int, workers: int, mirror) -> None:
    from gpt2.data.tokenizer import GPT2Tokenizer

    shakespeare = Path(mirror or os.environ.get("GPT2_DATA_MIRROR", "data")) / "tinyshakespeare" / "input.txt"
    text = shakespeare.read_text()
    corpus = workdir / f"shakespeare-{text_mb}mb.txt"
    corpus.write_text(text * max(1, round(text_mb * 1e6 / len(text.encode()))))
    megabytes = corpus.stat().st_size / 1e6
    encoder = GPT2Tokenizer(workdir / "data", mirror)
    start = time.perf_counter()
    count = len(encoder.encode(corpus.read_text()))
    plain = time.perf_counter() - start
    print(f"prepare: {megabytes:.1f} MB of text (one file), {count:,} tokens, {os.cpu_count()} CPUs")
    print(f"  {'plain encode_ordinary (1 thread)':40s} {megabytes / plain:8.2f} MB/s")
    for n in sorted({1, workers}):
        manifest, rss = run_prepare(corpus, n, workdir, mirror)
        seconds = manifest["seconds"]
        assert sum(f["tokens"] for f in manifest["files"].values()) == count
        print(f"  {f'scripts/prepare.py --workers {n}':40s} {megabytes / seconds:8.2f} MB/s "
              f"({plain / seconds:.2f}x plain, files written and hashed; main process peak RSS {rss:,.0f} MB)")


# -------------------------------------------------------------------------------------------- loader
def loader_child(variant: str, directory: Path, batches: int) -> dict:
    """One loader in this process: batches/s after a warm-up, and this process's peak RSS."""
    from gpt2.config import DataConfig
    from gpt2.data.loaders import LMSequenceDataset, TrainLoader, WindowBatchSampler, make_dataloader

    cfg = DataConfig(source="bin", dir=str(directory), block_size=T, batch_size=B)
    if variant == "bin":
        stream = make_dataloader(cfg).train_dl.forever()
    elif variant == "memory":  # the text path's layout: every token an int64 in memory
        tokens = torch.from_numpy(np.fromfile(directory / "train.bin", dtype=np.uint16)).long()
        dataset = LMSequenceDataset(tokens, T)
        stream = TrainLoader(dataset, WindowBatchSampler(len(dataset), B, seed=cfg.seed), cfg, False).forever()
    else:  # nanoGPT's get_batch: a fresh np.memmap per batch, torch.randint starts, one row at a time
        def nanogpt():
            while True:
                data = np.memmap(directory / "train.bin", dtype=np.uint16, mode="r")
                ix = torch.randint(len(data) - T, (B,))
                yield (torch.stack([torch.from_numpy(data[i:i + T].astype(np.int64)) for i in ix]),
                       torch.stack([torch.from_numpy(data[i + 1:i + 1 + T].astype(np.int64)) for i in ix]))
        stream = nanogpt()
    for _ in range(20):
        next(stream)
    start = time.perf_counter()
    for _ in range(batches):
        x, y = next(stream)
    return {"batches_per_s": batches / (time.perf_counter() - start), "peak_rss_mb": peak_rss_mb()}


def warm(path: Path) -> None:
    """Read the file once, so every loader finds it in the page cache (the figures are warm-cache)."""
    with open(path, "rb") as f:
        while f.read(1 << 24):
            pass


def bench_loader(directory: Path, batches: int) -> None:
    tokens = (directory / "train.bin").stat().st_size // 2
    warm(directory / "train.bin")
    print(f"loader: {tokens:,}-token train.bin ({tokens * 2 / 2**30:.1f} GiB), B={B}, T={T}, {batches} batches, "
          f"main process, page cache warm")
    results = {}
    for variant, name in [("bin", "data=bin (memory-mapped)"), ("memory", "in memory (int64 tensor)"),
                          ("nanogpt", "nanoGPT get_batch (memmap per batch)")]:
        out = subprocess.run([sys.executable, __file__, "--child", variant, "--workdir", str(directory),
                              "--batches", str(batches)], capture_output=True, text=True, check=True)
        results[variant] = json.loads(out.stdout.strip().splitlines()[-1])
        r = results[variant]
        print(f"  {name:40s} {r['batches_per_s']:9.1f} batches/s   peak RSS {r['peak_rss_mb']:8.0f} MB")
    print(f"  data=bin / in memory: {results['bin']['batches_per_s'] / results['memory']['batches_per_s']:.2f}x "
          f"the speed, {results['bin']['peak_rss_mb'] / results['memory']['peak_rss_mb']:.3f}x the memory")


# ------------------------------------------------------------------------------------------- sampler
def bench_sampler() -> None:
    from gpt2.data.loaders import WindowBatchSampler

    print("sampler: the window order, per batch")
    for windows in (10**8, 10**10):
        for batch in (64, 512):
            sampler = WindowBatchSampler(windows, batch, seed=1337)
            sampler.set_epoch(3, start_batch=windows // batch // 2)  # mid-epoch, as after a resume
            stream = iter(sampler)
            next(stream)
            start = time.perf_counter()
            for _ in range(1000):
                next(stream)
            per_batch = (time.perf_counter() - start) / 1000
            tracemalloc.start()  # memory measured apart: tracing slows every allocation
            next(stream)
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            print(f"  {windows:>14,} windows, B={batch:<4d} {per_batch * 1e6:8.1f} us/batch   peak Python "
                  f"memory per batch {peak / 2**10:6.1f} KiB   (a randperm of every window: "
                  f"{windows * 8 / 2**30:,.2f} GiB)")
    windows = WindowBatchSampler.CACHE_WINDOWS
    start = time.perf_counter()
    next(iter(WindowBatchSampler(windows, 64, seed=1337)))
    print(f"  up to {windows:,} windows the epoch's order is computed at once: "
          f"{(time.perf_counter() - start) * 1e3:.0f} ms per epoch at that size")


# --------------------------------------------------------------------------------------------- train
def bench_train(directory: Path, iters: int, extra: list[str]) -> None:
    """The same small run on the 1B-token files and on Tiny Shakespeare's text (tokens in memory): the
    difference in peak RSS is what the data costs. B=4, T=128 on the CPU: the logits (B*T x 50k vocab)
    and their gradients are most of a step's memory."""
    print("train: model=tiny data.batch_size=4 data.block_size=128, "
          f"{iters} iterations {' '.join(extra) or 'on the CPU'}")
    for data in (["data=bin", f"data.dir={directory}"], ["data=shakespeare"]):
        with tempfile.TemporaryDirectory() as run_dir:
            command = [sys.executable, str(ROOT / "train.py"), *data, "model=tiny", "data.batch_size=4",
                       "data.block_size=128", f"trainer.max_iters={iters}", f"trainer.eval_interval={iters}",
                       "trainer.eval_iters=2", "trainer.sample_tokens=0", "trainer.device=cpu", "logger=none",
                       *extra, f"hydra.run.dir={run_dir}"]
            subprocess.run(command, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
            summary = RunSummary.read(Path(run_dir))
        print(f"  {' '.join(data):60s} {summary['tokens_per_sec']:9,.0f} tokens/s   peak RSS "
              f"{summary['peak_rss_mb']:7,.0f} MB   final train loss {summary['final_train_loss']:.3f}")


SECTIONS = ("prepare", "loader", "sampler", "train")


def build_parser():
    parser = script_parser(__doc__)
    parser.add_argument("--workdir", type=nonempty_path, default=None,
                        help="where the synthetic train.bin is kept (default: a temp dir)")
    parser.add_argument("--tokens", type=positive_int, default=10**9, help="tokens in the synthetic train.bin")
    parser.add_argument("--sections", type=comma_choices(*SECTIONS), default=list(SECTIONS))
    parser.add_argument("--batches", type=positive_int, default=500, help="loader batches timed")
    parser.add_argument("--text-mb", type=positive_int, default=64, help="size of the text prepare tokenizes")
    parser.add_argument("--workers", type=positive_int, default=os.cpu_count() or 1)
    parser.add_argument("--train-iters", type=positive_int, default=20)
    parser.add_argument("--mirror", type=nonempty_str, default=None,
                        help="offline copy of the data (default: $GPT2_DATA_MIRROR)")
    parser.add_argument("--train-override", action="append", default=[],
                        help="a Hydra override for the train section (repeatable), e.g. trainer.device=cuda")
    parser.add_argument("--child", choices=("bin", "memory", "nanogpt"), default=None, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.child:
        print(json.dumps(loader_child(args.child, args.workdir, args.batches)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        sections = args.sections
        if "prepare" in sections:
            bench_prepare(workdir, args.text_mb, args.workers, args.mirror)
        directory = synthetic_corpus(workdir, args.tokens) if {"loader", "train"} & set(sections) else None
        if "loader" in sections:
            bench_loader(directory, args.batches)
        if "sampler" in sections:
            bench_sampler()
        if "train" in sections:
            bench_train(directory, args.train_iters, args.train_override)


if __name__ == "__main__":
    run_script(main)
