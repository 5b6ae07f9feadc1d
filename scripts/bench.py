"""Training speed: ms/iter, tokens/s, MFU, peak memory and the share of step time spent waiting for
data, eager against compiled, over batch sizes; with --ablate, what each speed setting gives.

Usage: python scripts/bench.py [--preset gpt2|char|char_cpu ...] [--compile off,on] [--batch-sizes 16,32]
           [--iters 20] [--warmup 5] [--ablate] [--peak-tflops X] [--json FILE] [hydra overrides ...]

Presets: gpt2 (GPT-2 124M, T=1024, batch 16, on Tiny Shakespeare's BPE tokens), char
(experiment=shakespeare_char: the baby GPT, T=256, batch 64), char_cpu (experiment=shakespeare_char_cpu),
default (what `python train.py` runs);
default: gpt2 and char with CUDA, char_cpu on a CPU. Overrides apply to every preset.

Each row builds the run's parts as train.py does, takes --warmup steps (compiling, if on: its time is
reported apart), then times --iters steps twice: drawing batches from the run's loader, and reusing
one batch already on the device. The data wait is the share of the first time the second does not
need. MFU is against the device's peak (gpt2/train/mfu.py's table, or --peak-tflops); on a CPU against the
measured peak of a large matmul in the run's dtype. Peak memory: the GPU's allocated peak, or the
process's peak resident memory over the row on a CPU.
"""

from __future__ import annotations

import functools
import gc
import itertools
import json
import time
from pathlib import Path

import torch

from gpt2.config import from_hydra
from gpt2.files import atomic_write_text
from gpt2.run.compose import compose
from gpt2.run.script import (add_force_option, check_output, int_list, nonempty_path, positive_float, positive_int,
                             run_script, script_parser)
from gpt2.train.mfu import flops_per_token, peak_tflops, utilisation
from gpt2.train.parts import build
from gpt2.train.runtime import dtype_name, peak_rss_mb
from gpt2.train.step import train_step

PRESETS = {
    "gpt2": ["model=gpt2", "data.block_size=1024", "data.batch_size=16"],
    "char": ["experiment=shakespeare_char"],
    "char_cpu": ["experiment=shakespeare_char_cpu"],
    "default": [],
}
COMPILES = {"off": ["false"], "on": ["true"], "off,on": ["false", "true"], "on,off": ["true", "false"]}
ABLATIONS = {  # one speed setting switched off at a time (those that apply to the device)
    "bf16 -> float32": ["trainer.dtype=float32"],
    "TF32 off": ["trainer.tf32=false"],
    "fused AdamW off": ["optim.fused=false"],
    "flash SDPA -> math": ["trainer.attention=math"],
    "vocab padding off": ["model.vocab_multiple=1"],
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@functools.lru_cache(maxsize=None)
def matmul_peak_tflops(device: torch.device, dtype: torch.dtype, n: int = 4096, reps: int = 5) -> float:
    """What a large matmul reaches here: the peak MFU is measured against where none is known (a CPU)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    a @ a
    sync(device)
    start = time.perf_counter()
    for _ in range(reps):
        a @ a
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e12


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:  # Linux: resets the process's VmHWM to its current resident size
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_memory_mb(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else peak_rss_mb()


def timed_steps(parts, batches, iters: int, grad_accum: int) -> float:
    """Seconds per optimizer step over iters steps (the device synchronised at both ends)."""
    rt = parts.runtime
    sync(rt.device)
    start = time.perf_counter()
    for _ in range(iters):
        train_step(parts.step_model, parts.optimizer, batches, rt, 1e-4, grad_accum, 1.0)
    sync(rt.device)
    return (time.perf_counter() - start) / iters


def measure(overrides: list[str], args) -> dict:
    """One row: build the parts, warm up, time with the loader and with a fixed on-device batch."""
    config = from_hydra(compose(*overrides, "logger=none"))
    parts = build(config)
    rt, d, accum = parts.runtime, config.data, config.trainer.grad_accum
    reset_peak_memory(rt.device)
    loader = parts.data.train_dl.forever()
    start = time.perf_counter()
    timed_steps(parts, loader, args.warmup, accum)
    warmup_s = time.perf_counter() - start
    with_loader = timed_steps(parts, loader, args.iters, accum)
    x, y = next(loader)
    fixed = timed_steps(parts, itertools.repeat((rt.to_device(x), rt.to_device(y))), args.iters, accum)
    tokens_per_sec = d.batch_size * d.block_size * accum / with_loader
    peak = peak_tflops(rt.device, args.peak_tflops) or matmul_peak_tflops(rt.device, rt.dtype)
    row = {"overrides": overrides, "device": str(rt.device), "dtype": dtype_name(rt.dtype),
           "compile": parts.step_model is not parts.model, "batch_size": d.batch_size, "block_size": d.block_size,
           "params_m": parts.model.num_params(False) / 1e6, "ms_per_iter": 1e3 * with_loader,
           "tokens_per_sec": tokens_per_sec, "peak_tflops": peak,
           "mfu": utilisation(tokens_per_sec, flops_per_token(parts.model, d.block_size), peak),
           "peak_memory_mb": peak_memory_mb(rt.device), "data_wait": max(0.0, 1 - fixed / with_loader),
           "warmup_s": warmup_s}
    del parts, loader
    gc.collect()
    torch._dynamo.reset()
    if rt.device.type == "cuda":
        torch.cuda.empty_cache()
    return row


HEADER = ("| run | compile | batch | ms/iter | tokens/s | MFU | peak memory | data wait | warm-up |\n"
          "| --- | --- | --- | --- | --- | --- | --- | --- | --- |")


def show(name: str, row: dict) -> None:
    print(f"| {name} | {'on' if row['compile'] else 'off'} | {row['batch_size']} | {row['ms_per_iter']:.1f} | "
          f"{row['tokens_per_sec']:,.0f} | {100 * row['mfu']:.1f}% (of {row['peak_tflops']:.1f} TFLOP/s) | "
          f"{row['peak_memory_mb']:,.0f} MB | {100 * row['data_wait']:.1f}% | {row['warmup_s']:.1f} s |", flush=True)


def plan(args) -> list[tuple[str, list[str]]]:
    """(row name, overrides) for every row asked for."""
    cuda = torch.cuda.is_available()
    presets = args.preset or (["gpt2", "char"] if cuda else ["char_cpu"])
    rows = []
    batches = int_list(args.batch_sizes, "--batch-sizes") if args.batch_sizes else [None]
    for preset, compiled, batch in itertools.product(presets, COMPILES[args.compile], batches):
        extra = [f"data.batch_size={batch}"] if batch else []
        rows.append((preset, [*PRESETS[preset], *args.overrides, f"trainer.compile={compiled}", *extra]))
    if args.ablate:
        base = [*PRESETS[presets[0]], *args.overrides, f"trainer.compile={COMPILES[args.compile][-1]}"]
        for name, switch in ABLATIONS.items():
            if cuda or name not in ("TF32 off",):
                rows.append((f"{presets[0]}: {name}", [*base, *switch]))
    return rows


def build_parser():
    parser = script_parser(__doc__)
    parser.add_argument("overrides", nargs="*", help="hydra overrides for every row (e.g. trainer.dtype=float32)")
    parser.add_argument("--preset", action="append", choices=sorted(PRESETS))
    parser.add_argument("--compile", default="off,on", choices=list(COMPILES),
                        help="off, on, or off,on (default: both)")
    parser.add_argument("--batch-sizes", default=None, help="comma-separated (default: the preset's)")
    parser.add_argument("--iters", type=positive_int, default=20)
    parser.add_argument("--warmup", type=positive_int, default=5)
    parser.add_argument("--ablate", action="store_true", help="also switch each speed setting off in turn")
    parser.add_argument("--peak-tflops", type=positive_float, default=None,
                        help="the device's peak (default: known GPUs)")
    parser.add_argument("--json", type=nonempty_path, default=None, help="also write every row here")
    add_force_option(parser)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.json:
        check_output(args.json, "--json", args.force)
    rows = plan(args)
    print(f"torch {torch.__version__}; {args.warmup} warm-up + {args.iters} timed steps per row\n\n{HEADER}")
    results: list[dict] = []
    for name, overrides in rows:
        if args.json:  # rewritten after every row: a bench cut short keeps the rows it measured
            atomic_write_text(args.json, json.dumps(results, indent=1))  # (first: is --json writable?)
        row = measure(overrides, args)
        show(name, row)
        results.append({"name": name, **row})
    if args.json:
        atomic_write_text(args.json, json.dumps(results, indent=1))


if __name__ == "__main__":
    run_script(main)
