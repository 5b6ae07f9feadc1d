"""The training loop: train_step, evaluate, and train(), which wires data, model, optimizer and logs.

A run directory ends up with config.yaml, train.log (Hydra), metrics.jsonl, summary.json, loss.png,
sample.txt and ckpt/{last,best}.pt.
"""

from __future__ import annotations

import logging
import math
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import torch
import torch.nn as nn
from tqdm import tqdm

from gpt2.checkpoint import checkpoint_state, save_checkpoint, unwrap
from gpt2.config import Config, to_dict
from gpt2.data import infinite_batches, make_dataloader
from gpt2.errors import ConfigError
from gpt2.logging import RunLogger
from gpt2.model import GPT
from gpt2.optim import build_optimizer, get_lr

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


# -------------------------------------------------------------------------------------- runtime
def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"trainer.device: {name!r} asked for, but CUDA is not available here "
                          f"(use trainer.device=auto or cpu)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"trainer.device: {name!r} asked for, but MPS is not available here")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return DTYPES[name]


@dataclass
class Runtime:
    """Where and in what precision the model runs."""

    device: torch.device
    dtype: torch.dtype
    scaler: Optional[torch.amp.GradScaler]

    @classmethod
    def create(cls, device_name: str, dtype_name: str) -> "Runtime":
        device = resolve_device(device_name)
        dtype = resolve_dtype(dtype_name, device)
        if device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
        return cls(device, dtype, scaler)

    def autocast(self):
        if self.dtype == torch.float32:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def to_device(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.device, non_blocking=True)  # async from pinned memory on CUDA


class StopRequest:
    """SIGINT/SIGTERM set a flag; the loop finishes its step, saves and stops. A second Ctrl-C
    raises KeyboardInterrupt as usual."""

    def __init__(self) -> None:
        self.signal_name: Optional[str] = None
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        if self.signal_name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name

    def __enter__(self) -> "StopRequest":
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: no signal handling
                pass
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


# ----------------------------------------------------------------------------------- the steps
def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, batches: Iterator, rt: Runtime,
               lr: float, grad_accum: int, grad_clip: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step over grad_accum micro-batches; returns (mean loss, grad norm) as tensors
    (no device sync here)."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    total = torch.zeros((), device=rt.device)
    for _ in range(grad_accum):
        x, y = next(batches)
        with rt.autocast():
            _, loss = model(rt.to_device(x), rt.to_device(y))
        loss = loss / grad_accum
        (rt.scaler.scale(loss) if rt.scaler else loss).backward()
        total += loss.detach()
    if rt.scaler:
        rt.scaler.unscale_(optimizer)
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip if grad_clip > 0 else math.inf)
    if rt.scaler:
        rt.scaler.step(optimizer)
        rt.scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return total, norm


@torch.no_grad()
def evaluate(model: nn.Module, loader, rt: Runtime) -> float:
    """Mean loss over the validation loader's fixed batches."""
    model.eval()
    losses = []
    for x, y in loader:
        with rt.autocast():
            _, loss = model(rt.to_device(x), rt.to_device(y))
        losses.append(loss.float())
    model.train()
    return torch.stack(losses).mean().item()


def sample_text(model: GPT, encoder, rt: Runtime, num_tokens: int, seed: int) -> str:
    prompt = encoder.encode("\n") or [0]
    idx = torch.tensor([prompt], dtype=torch.long, device=rt.device)
    generator = torch.Generator(device=rt.device).manual_seed(seed)
    model.eval()
    with rt.autocast():
        out = model.generate(idx, num_tokens, temperature=0.8, top_k=200, generator=generator)
    model.train()
    return encoder.decode(out[0, len(prompt):].tolist())


# ------------------------------------------------------------------------------------ the loop
@dataclass
class Progress:
    """What the loop tracks between logs."""

    best_val_loss: float = math.inf
    last_val_loss: float = math.nan
    last_train_loss: float = math.nan
    train_seconds: float = 0.0
    iters: int = 0


def train(config: Config, run_dir: Path, on_step: Optional[Callable[[int], None]] = None) -> dict:
    """Train as the config says, writing everything into run_dir; returns the summary dict."""
    run_dir = Path(run_dir)
    tc, oc = config.trainer, config.optim
    wall_start = time.perf_counter()
    rt = Runtime.create(tc.device, tc.dtype)
    torch.manual_seed(tc.seed)
    loaders = make_dataloader(config.data, eval_iters=tc.eval_iters, device=rt.device)
    encoder = loaders["encoder"]
    model = GPT(config.model, encoder.vocab_size, config.data.block_size).to(rt.device)
    optimizer = build_optimizer(model, oc, rt.device)
    step_model = torch.compile(model) if tc.compile else model
    log.info("model: %.2fM parameters (%d non-embedding), vocab %d (padded to %d), device %s, %s",
             model.num_params(False) / 1e6, model.num_params(), encoder.vocab_size,
             model.padded_vocab_size, rt.device, str(rt.dtype).removeprefix("torch."))

    config_dict = to_dict(config)
    ckpt_dir = run_dir / "ckpt"
    ckpt_dir.mkdir(parents=True, exist_ok=True)

    def save(name: str, progress: Progress) -> None:
        save_checkpoint(ckpt_dir / name, checkpoint_state(
            model, optimizer, config_dict, progress.iters, progress.best_val_loss, encoder.state()))

    tokens_per_step = config.data.batch_size * config.data.block_size * tc.grad_accum
    p = Progress()
    with RunLogger(config.logger, run_dir, config_dict) as run_log, StopRequest() as stop:
        bar = tqdm(total=tc.max_iters, disable=not (tc.progress and sys.stderr.isatty()),
                   desc="train", unit="it", dynamic_ncols=True)
        p.last_val_loss = evaluate(step_model, loaders["valid_dl"], rt)
        run_log.log({"iter": 0, "val_loss": p.last_val_loss, "lr": get_lr(0, oc)})
        batches = infinite_batches(loaders["train_dl"])
        window_start, window_steps = time.perf_counter(), 0
        while p.iters < tc.max_iters and stop.signal_name is None:
            lr = get_lr(p.iters, oc)
            loss, norm = train_step(step_model, optimizer, batches, rt, lr, tc.grad_accum, oc.grad_clip)
            p.iters += 1
            window_steps += 1
            bar.update(1)
            if on_step is not None:
                on_step(p.iters)
            evaluate_now = p.iters % tc.eval_interval == 0 or p.iters == tc.max_iters
            if not (evaluate_now or p.iters % tc.log_interval == 0 or stop.signal_name):
                continue
            p.last_train_loss = loss.item()  # syncs the device: only on logging steps
            elapsed = time.perf_counter() - window_start
            p.train_seconds += elapsed
            row = {"iter": p.iters, "train_loss": p.last_train_loss, "lr": lr,
                   "grad_norm": norm.item(), "tokens_per_sec": window_steps * tokens_per_step / elapsed}
            if evaluate_now:
                p.last_val_loss = row["val_loss"] = evaluate(step_model, loaders["valid_dl"], rt)
                if p.last_val_loss < p.best_val_loss:
                    p.best_val_loss = p.last_val_loss
                    save("best.pt", p)
            run_log.log(row)
            bar.set_postfix(loss=f"{p.last_train_loss:.4f}", tok_s=f"{row['tokens_per_sec']:.0f}")
            log.info("iter %d: train loss %.4f%s, lr %.2e, %.0f tokens/s", p.iters, p.last_train_loss,
                     f", val loss {row['val_loss']:.4f}" if evaluate_now else "", lr,
                     row["tokens_per_sec"])
            window_start, window_steps = time.perf_counter(), 0
        bar.close()
        save("last.pt", p)
        sample = sample_text(model, encoder, rt, tc.sample_tokens, tc.seed) if tc.sample_tokens else ""
        (run_dir / "sample.txt").write_text(sample)
        summary = {
            "best_val_loss": p.best_val_loss, "final_val_loss": p.last_val_loss,
            "final_train_loss": p.last_train_loss, "iters": p.iters,
            "tokens_seen": p.iters * tokens_per_step,
            "tokens_per_sec": p.iters * tokens_per_step / max(p.train_seconds, 1e-9),
            "wall_s": time.perf_counter() - wall_start, "params": unwrap(model).num_params(False),
            "device": str(rt.device), "dtype": str(rt.dtype).removeprefix("torch."),
            "stopped_by": stop.signal_name, "sample": sample,
        }
        run_log.finish(summary)
    return summary
