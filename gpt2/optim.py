"""AdamW with weight decay on 2-D weights only, and the learning-rate schedule as a pure function."""

from __future__ import annotations

import math

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
    fused = device.type in ("cpu", "cuda")
    return torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr,
                             betas=(cfg.beta1, cfg.beta2), fused=fused)


def get_lr(step: int, cfg: OptimConfig) -> float:
    """Linear warmup to cfg.lr over warmup_iters, cosine decay to min_lr at lr_decay_iters, then flat
    (nanoGPT's schedule, so its runs reproduce step for step)."""
    if not cfg.decay_lr:
        return cfg.lr
    if step < cfg.warmup_iters:
        return cfg.lr * (step + 1) / (cfg.warmup_iters + 1)
    if step >= cfg.lr_decay_iters:
        return cfg.min_lr
    progress = (step - cfg.warmup_iters) / max(1, cfg.lr_decay_iters - cfg.warmup_iters)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.lr - cfg.min_lr)
