"""AdamW with weight decay on 2-D weights only, and the learning-rate schedule as a small stateful part."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional

import torch
import torch.nn as nn

from gpt2.config import OptimConfig


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Matrices and embeddings decay; biases and LayerNorm gains (1-D) do not."""
    params = [p for p in model.parameters() if p.requires_grad]  # tied weights appear once
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, cfg: OptimConfig, device: torch.device) -> torch.optim.AdamW:
    # the fused kernel exists for CPU and CUDA and is the fastest AdamW on both
    fused = device.type in ("cpu", "cuda") if cfg.fused is None else cfg.fused
    return torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr,
                             betas=(cfg.beta1, cfg.beta2), fused=fused or None)


@dataclass
class LRSchedule:
    """nanoGPT's schedule: linear warmup to lr over warmup_iters, cosine decay to min_lr at
    decay_iters, then flat. `schedule(step)` is the LR of that step.

    A run keeps its schedule across resumes (it is in the checkpoint). `decay_to(step, decay_iters)`
    moves the end of the decay at a resume point: from there the cosine starts again from the LR
    the run had at that step (`anchor_iter`, `anchor_lr`), so the LR never jumps up."""

    lr: float
    min_lr: float
    warmup_iters: int
    decay_iters: int
    decay: bool = True
    anchor_iter: Optional[int] = None
    """Where the cosine starts; None: at the end of warmup, from lr."""
    anchor_lr: Optional[float] = None

    @classmethod
    def from_config(cls, cfg: OptimConfig, decay_iters: int) -> "LRSchedule":
        return cls(lr=cfg.lr, min_lr=cfg.min_lr, warmup_iters=cfg.warmup_iters, decay_iters=decay_iters,
                   decay=cfg.decay_lr)

    def __call__(self, step: int) -> float:
        if not self.decay:
            return self.lr
        if step < self.warmup_iters:
            return self.lr * (step + 1) / (self.warmup_iters + 1)
        if step >= self.decay_iters:
            return self.min_lr
        start, peak = ((self.warmup_iters, self.lr) if self.anchor_iter is None
                       else (self.anchor_iter, self.anchor_lr))
        progress = (step - start) / max(1, self.decay_iters - start)
        return self.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (peak - self.min_lr)

    def decay_to(self, step: int, decay_iters: int) -> None:
        """End the decay at decay_iters instead, continuing from this schedule's LR at `step`."""
        if step >= self.warmup_iters:  # in warmup the LR does not depend on the decay end
            self.anchor_iter, self.anchor_lr = step, self(step)
        self.decay_iters = decay_iters

    def describe(self) -> str:
        if not self.decay:
            return f"constant {self.lr:.2e}"
        start = (f"from {self.anchor_lr:.2e} at iteration {self.anchor_iter}" if self.anchor_iter is not None
                 else f"warmup to {self.lr:.2e} over {self.warmup_iters} iterations, then cosine")
        return f"{start} to {self.min_lr:.2e} at iteration {self.decay_iters}, then flat"

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)
