"""The optimizer and the learning-rate schedule (a small stateful part).

optim.name=adamw: AdamW with weight decay on 2-D weights only (nanoGPT's). optim.name=muon: Muon for
the blocks' matrices, AdamW for the rest, stepped as one optimizer (gpt2/train/muon.py). Every group
follows the one schedule: a group with an `lr_scale` runs at that multiple of optim.lr's LR."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional

import torch
import torch.nn as nn

from gpt2.config import OptimConfig
from gpt2.train.muon import MuonWithAdamW


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Matrices and embeddings decay; biases and LayerNorm gains (1-D) do not."""
    params = [p for p in model.parameters() if p.requires_grad]  # tied weights appear once
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, cfg: OptimConfig, device: torch.device) -> "torch.optim.Optimizer | MuonWithAdamW":
    # the fused kernel exists for CPU and CUDA and is the fastest AdamW on both
    fused = device.type in ("cpu", "cuda") if cfg.fused is None else cfg.fused
    if cfg.name == "muon":
        return MuonWithAdamW(model, cfg, fused=fused)
    return torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr,
                             betas=(cfg.beta1, cfg.beta2), fused=fused or None)


def set_step(optimizer: torch.optim.Optimizer, step: int, lr: float) -> None:
    """The settings of iteration `step` in every group: the LR (times the group's `lr_scale`) and,
    for Muon's groups, the momentum of its warmup."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_scale"] if "lr_scale" in group else lr
        if "momentum_warmup" in group:
            start, end, iters = group["momentum_warmup"]
            group["momentum"] = end if step >= iters else start + (end - start) * step / iters


@dataclass
class LRSchedule:
    """The LR of each step: linear warmup to lr over warmup_iters, then down to min_lr at decay_iters,
    then flat. kind=cosine (nanoGPT's): a cosine decay from the end of warmup. kind=wsd
    (warmup-stable-decay, nanochat's and modded-nanogpt's): constant at lr, then a linear warmdown over
    the last warmdown_frac of decay_iters. `schedule(step)` is the LR of that step.

    A run keeps its schedule across resumes (it is in the checkpoint). `decay_to(step, decay_iters)`
    moves the end of the decay at a resume point: from there the schedule goes on from the LR the run
    had at that step (`anchor_iter`, `anchor_lr`), so the LR never jumps up."""

    lr: float
    min_lr: float
    warmup_iters: int
    decay_iters: int
    decay: bool = True
    anchor_iter: Optional[int] = None
    """Where the decay starts from anchor_lr; None: at the end of warmup, from lr."""
    anchor_lr: Optional[float] = None
    kind: str = "cosine"
    warmdown_frac: float = 0.0
    """kind=wsd: the fraction of decay_iters spent in the linear warmdown."""

    @classmethod
    def from_config(cls, cfg: OptimConfig, decay_iters: int, warmup_iters: Optional[int] = None) -> "LRSchedule":
        """The schedule of optim.*, over `decay_iters` (resolved), warming up over `warmup_iters`
        (Config.warmup_iters: resolved; default optim.warmup_iters)."""
        warmup_iters = cfg.warmup_iters if warmup_iters is None else warmup_iters
        return cls(lr=cfg.lr, min_lr=cfg.min_lr, warmup_iters=warmup_iters, decay_iters=decay_iters,
                   decay=cfg.decay_lr, kind=cfg.schedule, warmdown_frac=cfg.warmdown_frac)

    def __call__(self, step: int) -> float:
        if not self.decay:
            return self.lr
        if step < self.warmup_iters:
            return self.lr * (step + 1) / (self.warmup_iters + 1)
        if step >= self.decay_iters:
            return self.min_lr
        start, peak = ((self.warmup_iters, self.lr) if self.anchor_iter is None
                       else (self.anchor_iter, self.anchor_lr))
        if self.kind == "wsd":  # constant at peak until the warmdown, then a straight line to min_lr
            start = max(start, self.warmdown_start)
            return peak if step < start else peak + (self.min_lr - peak) * (step - start) / (self.decay_iters - start)
        progress = (step - start) / max(1, self.decay_iters - start)
        return self.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (peak - self.min_lr)

    @property
    def warmdown_start(self) -> int:
        """kind=wsd: the first step of the warmdown (never inside warmup)."""
        return max(self.warmup_iters, self.decay_iters - round(self.warmdown_frac * self.decay_iters))

    def decay_to(self, step: int, decay_iters: int) -> None:
        """End the decay at decay_iters instead, continuing from this schedule's LR at `step`."""
        if step >= self.warmup_iters:  # in warmup the LR does not depend on the decay end
            self.anchor_iter, self.anchor_lr = step, self(step)
        self.decay_iters = decay_iters

    def describe(self) -> str:
        if not self.decay:
            return f"constant {self.lr:.2e}"
        start = (f"from {self.anchor_lr:.2e} at iteration {self.anchor_iter}" if self.anchor_iter is not None
                 else f"warmup to {self.lr:.2e} over {self.warmup_iters} iterations")
        if self.kind == "wsd":
            start = (f"{start}, constant to iteration {max(self.warmdown_start, self.anchor_iter or 0)}, "
                     f"then linear")
        else:
            start += ", then cosine" if self.anchor_iter is None else ""
        return f"{start} to {self.min_lr:.2e} at iteration {self.decay_iters}, then flat"

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        """Take a checkpoint's schedule, each value checked first (a damaged or crafted one is refused
        whole, naming its key, not a traceback at the next step): KeyError for a key it lacks,
        ValueError for one it does not know or a value of the wrong kind. A state without `kind` and
        `warmdown_frac` (format 2 had neither) keeps this schedule's."""
        for key in STATE_CHECKS:
            if key not in state and key not in STATE_OPTIONAL:
                raise KeyError(key)
        for key, value in state.items():
            check, wants = STATE_CHECKS.get(key, (None, None))
            if check is None:
                raise ValueError(f"{key!r}: not a key of the schedule")
            if not check(value):
                raise ValueError(f"{key!r} must be {wants}, got {value!r}")
        if (state["anchor_iter"] is None) != (state["anchor_lr"] is None):
            raise ValueError(f"'anchor_iter' and 'anchor_lr' are set together, got {state['anchor_iter']!r} and "
                             f"{state['anchor_lr']!r}")
        for key, value in state.items():
            setattr(self, key, value)


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


STATE_CHECKS = {
    "lr": (lambda v: _number(v) and v > 0, "a finite number > 0"),
    "min_lr": (lambda v: _number(v) and v >= 0, "a finite number >= 0"),
    "warmup_iters": (_count, "an integer >= 0"),
    "decay_iters": (_count, "an integer >= 0"),
    "decay": (lambda v: isinstance(v, bool), "true or false"),
    "anchor_iter": (lambda v: v is None or _count(v), "None or an integer >= 0"),
    "anchor_lr": (lambda v: v is None or (_number(v) and v >= 0), "None or a finite number >= 0"),
    "kind": (lambda v: isinstance(v, str) and v in ("cosine", "wsd"), "'cosine' or 'wsd'"),
    "warmdown_frac": (lambda v: _number(v) and 0 <= v <= 1, "a number in [0, 1]"),
}
"""Each key of LRSchedule's state: its check and what it wants (the message of a value it refuses)."""
STATE_OPTIONAL = ("kind", "warmdown_frac")
"""Keys a format-2 checkpoint's schedule lacks (gpt2/train/checkpoint.py upgrade_v2)."""
