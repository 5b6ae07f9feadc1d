"""The training loop: train_step, evaluate, and train(), which wires data, model, optimizer and logs.

A run directory ends up with config.yaml, train.log (Hydra), metrics.jsonl, summary.json, loss.png,
sample.txt and ckpt/{last,best}.pt.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import torch
import torch.nn as nn
from tqdm import tqdm

from gpt2.checkpoint import (BEST, FORMAT_VERSION, LAST, capture_rng_state, check_resumable,
                             load_checkpoint, restore_rng_state, save_checkpoint, save_periodic, unwrap)
from gpt2.config import Config, to_dict
from gpt2.data import infinite_batches, make_dataloader
from gpt2.errors import CheckpointError, NonFiniteLossError
from gpt2.logging import RunLogger
from gpt2.model import GPT
from gpt2.optim import build_optimizer, get_lr
from gpt2.runtime import Runtime, StopRequest, dtype_name

log = logging.getLogger(__name__)

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
    try:
        prompt = encoder.encode("\n") or [0]
    except ValueError:  # a char vocabulary without a newline
        prompt = [0]
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
    """What the loop tracks: the step count, losses, and the timing window since the last log."""

    iters: int = 0
    best_val_loss: float = math.inf
    last_val_loss: float = math.nan
    last_train_loss: float = math.nan
    train_seconds: float = 0.0
    window_start: float = 0.0
    window_steps: int = 0

    def state_dict(self) -> dict:
        return {k: getattr(self, k) for k in
                ("iters", "best_val_loss", "last_val_loss", "last_train_loss", "train_seconds")}


def resume_path(resume: Optional[str], run_dir: Path) -> Optional[Path]:
    """The checkpoint trainer.resume asks for: None for a fresh start (refused where it would
    overwrite the checkpoints of a run already in run_dir)."""
    if resume is None:
        if (run_dir / "ckpt" / LAST).is_file():
            raise CheckpointError(f"{run_dir} already holds a run ({run_dir / 'ckpt' / LAST}): continue it "
                                  f"with trainer.resume=auto, or start in another hydra.run.dir")
        return None
    if resume == "auto":
        last = run_dir / "ckpt" / LAST
        if not last.is_file():
            log.info("trainer.resume=auto: no %s yet, starting fresh", last)
            return None
        return last
    path = Path(resume).expanduser()
    if not path.is_file():
        raise CheckpointError(f"trainer.resume={resume}: there is no checkpoint file there")
    return path


class Trainer:
    """Builds data, model and optimizer from a Config and trains them, writing into run_dir."""

    def __init__(self, config: Config, run_dir: Path):
        self.config, self.run_dir = config, Path(run_dir)
        (self.run_dir / "ckpt").mkdir(parents=True, exist_ok=True)
        for stale in (self.run_dir / "ckpt").glob(".*.tmp"):  # left by a save that was killed
            stale.unlink()
        tc = config.trainer
        self.resumed_from = resume_path(tc.resume, self.run_dir)  # before any slow work
        if tc.num_threads:
            torch.set_num_threads(tc.num_threads)
        self.rt = Runtime.create(tc.device, tc.dtype)
        torch.manual_seed(tc.seed)  # model init, dropout (data order has its own generator)
        loaders = make_dataloader(config.data, eval_iters=tc.eval_iters, device=self.rt.device)
        self.train_dl, self.valid_dl, self.encoder = loaders["train_dl"], loaders["valid_dl"], loaders["encoder"]
        self.text_sha256 = loaders["text_sha256"]
        self.model = GPT(config.model, self.encoder.vocab_size, config.data.block_size).to(self.rt.device)
        self.optimizer = build_optimizer(self.model, config.optim, self.rt.device)
        self.step_model = torch.compile(self.model) if tc.compile else self.model
        self.tokens_per_step = config.data.batch_size * config.data.block_size * tc.grad_accum
        self.config_dict = to_dict(config)
        self.progress = Progress()
        self.wandb_id: Optional[str] = None
        self.last_saved: Optional[int] = None  # the iteration of the newest ckpt/last.pt
        # the first iteration whose loss was NaN/inf, kept on the device so checking costs no sync
        self.first_bad = torch.full((), -1, dtype=torch.long, device=self.rt.device)
        if self.resumed_from is not None:
            self.restore(self.resumed_from)  # last: restores the RNGs that model init consumed
        log.info("model: %.2fM parameters (%d non-embedding), vocab %d (padded to %d), device %s, %s",
                 self.model.num_params(False) / 1e6, self.model.num_params(), self.encoder.vocab_size,
                 self.model.padded_vocab_size, self.rt.device, dtype_name(self.rt.dtype))

    def state(self) -> dict:
        """Everything a resumed run needs to continue exactly: model, optimizer, step (which fixes the
        LR), losses, data order (the sampler's epoch and position), every RNG, the W&B run id."""
        base, p = unwrap(self.model), self.progress
        return {"format_version": FORMAT_VERSION, "model": base.state_dict(),
                "model_args": {"vocab_size": base.vocab_size, "block_size": base.block_size},
                "optimizer": self.optimizer.state_dict(), "config": self.config_dict,
                "iter": p.iters, "best_val_loss": p.best_val_loss, "tokenizer": self.encoder.state(),
                "text_sha256": self.text_sha256,
                "progress": p.state_dict(), "sampler": self.train_dl.sampler.state_dict(),
                "rng": capture_rng_state(), "wandb_id": self.wandb_id,
                "grad_scaler": self.rt.scaler.state_dict() if self.rt.scaler else None}

    def restore(self, path: Path) -> None:
        state = load_checkpoint(path)
        check_resumable(path, state, self.config_dict, self.encoder.state(), self.text_sha256)
        unwrap(self.model).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.progress = Progress(**state["progress"])
        self.train_dl.sampler.load_state_dict(state["sampler"])
        restore_rng_state(state["rng"])
        if self.rt.scaler is not None and state.get("grad_scaler"):
            self.rt.scaler.load_state_dict(state["grad_scaler"])  # fp16: keep the loss scale
        self.wandb_id, self.last_saved = state["wandb_id"], state["iter"]
        log.info("resumed from %s at iteration %d", path, state["iter"])

    def check_finite(self) -> None:
        bad = int(self.first_bad.item())
        if bad >= 0:
            kept = (f"the last good checkpoint, {self.run_dir / 'ckpt' / LAST} (iteration "
                    f"{self.last_saved}), is untouched" if self.last_saved is not None
                    else "no checkpoint had been saved yet")
            raise NonFiniteLossError(f"the training loss became NaN/inf at iteration {bad}; stopped ({kept})")

    def save(self, name: str) -> None:
        """best.pt, or (name=LAST) ckpt/last.pt plus the numbered periodic copies."""
        self.check_finite()  # never overwrite a good checkpoint with diverged weights
        ckpt_dir = self.run_dir / "ckpt"
        if name == LAST:
            save_periodic(ckpt_dir, self.state(), self.config.trainer.keep_last)
            self.last_saved = self.progress.iters
        else:
            save_checkpoint(ckpt_dir / name, self.state())

    def evaluate(self) -> float:
        return evaluate(self.step_model, self.valid_dl, self.rt)

    def metrics_row(self, loss: torch.Tensor, norm: torch.Tensor, lr: float, with_eval: bool) -> dict:
        """The row for this step (syncs the device); evaluates and saves best.pt when asked."""
        p = self.progress
        p.last_train_loss = loss.item()
        elapsed = time.perf_counter() - p.window_start
        p.train_seconds += elapsed
        row = {"iter": p.iters, "train_loss": p.last_train_loss, "lr": lr, "grad_norm": norm.item(),
               "tokens_per_sec": p.window_steps * self.tokens_per_step / elapsed}
        if with_eval:
            p.last_val_loss = row["val_loss"] = self.evaluate()
            if p.last_val_loss < p.best_val_loss:
                p.best_val_loss = p.last_val_loss
                self.save(BEST)
        log.info("iter %d: train loss %.4f%s, lr %.2e, %.0f tokens/s", p.iters, p.last_train_loss,
                 f", val loss {p.last_val_loss:.4f}" if with_eval else "", lr, row["tokens_per_sec"])
        return row

    def summary(self, wall_s: float, stopped_by: Optional[str], sample: str) -> dict:
        p = self.progress
        return {"best_val_loss": p.best_val_loss, "final_val_loss": p.last_val_loss,
                "final_train_loss": p.last_train_loss, "iters": p.iters,
                "tokens_seen": p.iters * self.tokens_per_step,
                "tokens_per_sec": p.iters * self.tokens_per_step / max(p.train_seconds, 1e-9),
                "wall_s": wall_s, "params": self.model.num_params(False), "device": str(self.rt.device),
                "dtype": dtype_name(self.rt.dtype), "stopped_by": stopped_by, "sample": sample}

    def fit(self, on_step: Optional[Callable[["Trainer"], None]] = None) -> dict:
        """Evaluate at step 0, every eval_interval and at the end; log every log_interval; stop early,
        with a checkpoint, on SIGINT/SIGTERM. Returns the summary (also in summary.json)."""
        tc, oc = self.config.trainer, self.config.optim
        wall_start = time.perf_counter()
        resume_from = self.progress.iters if self.resumed_from is not None else None
        with RunLogger(self.config.logger, self.run_dir, self.config_dict, resume_from,
                       self.wandb_id) as run_log, StopRequest() as stop:
            self.wandb_id = run_log.wandb_id
            p = self.progress
            bar = tqdm(total=tc.max_iters, initial=p.iters, desc="train", unit="it", dynamic_ncols=True,
                       disable=not (tc.progress and sys.stderr.isatty()))
            if resume_from is None:
                p.last_val_loss = self.evaluate()
                run_log.log({"iter": 0, "val_loss": p.last_val_loss, "lr": get_lr(0, oc)})
            batches = infinite_batches(self.train_dl)
            p.window_start = time.perf_counter()
            while p.iters < tc.max_iters and stop.signal_name is None:
                lr = get_lr(p.iters, oc)
                loss, norm = train_step(self.step_model, self.optimizer, batches, self.rt, lr,
                                        tc.grad_accum, oc.grad_clip)
                p.iters += 1
                p.window_steps += 1
                self.first_bad = torch.where((self.first_bad < 0) & ~torch.isfinite(loss),
                                             p.iters, self.first_bad)
                bar.update(1)
                if on_step is not None:
                    on_step(self)
                with_eval = p.iters % tc.eval_interval == 0 or p.iters == tc.max_iters
                if with_eval or p.iters % tc.log_interval == 0 or stop.signal_name:
                    self.check_finite()
                    row = self.metrics_row(loss, norm, lr, with_eval)
                    run_log.log(row)
                    bar.set_postfix(loss=f"{row['train_loss']:.4f}", tok_s=f"{row['tokens_per_sec']:.0f}")
                    p.window_start, p.window_steps = time.perf_counter(), 0
                if tc.ckpt_interval and p.iters % tc.ckpt_interval == 0 and p.iters < tc.max_iters:
                    saving = time.perf_counter()
                    self.save(LAST)
                    p.window_start += time.perf_counter() - saving  # not training time
            bar.close()
            self.save(LAST)
            sample = (sample_text(self.model, self.encoder, self.rt, tc.sample_tokens, tc.seed)
                      if tc.sample_tokens else "")
            (self.run_dir / "sample.txt").write_text(sample)
            summary = self.summary(time.perf_counter() - wall_start, stop.signal_name, sample)
            run_log.finish(summary)
        return summary


def train(config: Config, run_dir: Path, on_step: Optional[Callable[[Trainer], None]] = None) -> dict:
    """Train as the config says, writing everything into run_dir; returns the summary dict.
    `on_step(trainer)` is called after every optimizer step (tests use it to send signals)."""
    return Trainer(config, run_dir).fit(on_step)
