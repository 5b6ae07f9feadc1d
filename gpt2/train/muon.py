"""Muon (momentum, Nesterov, an update orthogonalised by a Newton-Schulz iteration) for the blocks'
matrices, with AdamW for everything else, stepped as one optimizer (optim.name=muon).

torch.optim.Muon gives the algorithm, its hyperparameters and its state; `Muon` below only changes
how its step runs: the matrices of one shape (one per layer) are orthogonalised together, as one
batched iteration, instead of one at a time. Same arithmetic, the same result bit for bit, and on a
CPU at nanoGPT's 128-wide model about half the time (the per-matrix iteration is bound by per-op costs).
What torch's lacks and this file adds: that batching, the momentum warmup (`set_step` in optim.py
reads a group's `momentum_warmup`) and the split of a model's parameters between Muon and AdamW.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Optional

import torch
import torch.nn as nn

from gpt2.config import OptimConfig


def orthogonalise(g: torch.Tensor, coefficients: tuple, steps: int, eps: float,
                  dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """(..., m, n) -> the same shape, each matrix replaced by roughly its nearest semi-orthogonal
    matrix (U V^T of its SVD; singular values land in about [0.7, 1.2]): Keller Jordan's quintic
    Newton-Schulz iteration in bfloat16 (as torch.optim.Muon's) or `dtype`, over a batch of matrices
    at once."""
    if g.dim() == 2:
        return orthogonalise(g.unsqueeze(0), coefficients, steps, eps, dtype)[0]
    a, b, c = coefficients
    x = g.to(dtype)
    tall = g.size(-2) > g.size(-1)
    if tall:  # iterate on the wide side: the Gram matrix x x^T is the smaller one
        x = x.mT
    x = x / x.norm(dim=(-2, -1), keepdim=True).clamp(min=eps)  # spectral norm <= Frobenius norm <= 1
    for _ in range(steps):
        gram = x @ x.mT
        x = torch.baddbmm(x, torch.baddbmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.mT if tall else x


def scaled_lr(lr: float, scaling: Optional[str], shape: torch.Size) -> float:
    """torch.optim.Muon's per-shape LR: original (Keller Jordan's) sqrt(max(1, rows / cols)), so a
    tall matrix's update has the RMS of a square one's; match_rms_adamw (Moonshot's) 0.2 sqrt(max)."""
    rows, cols = shape[:2]
    if scaling == "match_rms_adamw":
        return lr * 0.2 * math.sqrt(max(rows, cols))
    return lr * math.sqrt(max(1.0, rows / cols))


DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


class Muon(torch.optim.Muon):
    """torch.optim.Muon whose step orthogonalises all the matrices of one shape in one batch, in
    bfloat16 or in a group's `precision`."""

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            for p in params:
                if "momentum_buffer" not in self.state[p]:
                    self.state[p]["momentum_buffer"] = torch.zeros_like(p)
            bufs = [self.state[p]["momentum_buffer"] for p in params]
            momentum = group["momentum"]
            torch._foreach_lerp_(bufs, grads, 1 - momentum)  # buf = momentum * buf + (1 - momentum) * grad
            updates = torch._foreach_lerp(grads, bufs, momentum) if group["nesterov"] else bufs
            by_shape = defaultdict(list)
            for i, p in enumerate(params):
                by_shape[p.shape].append(i)
            lr, decay = group["lr"], group["weight_decay"]
            for shape, index in by_shape.items():
                ortho = orthogonalise(torch.stack([updates[i] for i in index]), group["ns_coefficients"],
                                      group["ns_steps"], group["eps"], DTYPES[group.get("precision", "bfloat16")])
                step = scaled_lr(lr, group["adjust_lr_fn"], shape)
                for j, i in enumerate(index):
                    params[i].mul_(1 - lr * decay)
                    params[i].add_(ortho[j], alpha=-step)


def muon_split(model: nn.Module) -> tuple[list, list, list, list]:
    """(the blocks' 2-D matrices, the embedding tables, an untied head, the 1-D parameters)."""
    matrices, embeddings, head, vectors = [], [], [], []
    for name, p in model.named_parameters():  # a tied head is the token table: it appears once
        if not p.requires_grad:
            continue
        if p.dim() < 2:
            vectors.append(p)
        elif name.startswith("transformer.h."):
            matrices.append(p)
        else:
            (head if name == "lm_head.weight" else embeddings).append(p)
    return matrices, embeddings, head, vectors


class MuonWithAdamW:
    """torch.optim.Muon over the blocks' matrices and AdamW over the rest, as one optimizer: its
    param_groups are both optimizers' (each with its `lr_scale`), step/zero_grad step both, and its
    state_dict holds both. Muon's momentum rises from muon_momentum_start over muon_momentum_warmup
    iterations (`set_step`), as modded-nanogpt's."""

    def __init__(self, model: nn.Module, cfg: OptimConfig, fused: Optional[bool] = None):
        matrices, embeddings, head, vectors = muon_split(model)
        scale = (lambda lr: {} if lr is None else {"lr_scale": lr / cfg.lr})
        adam_groups = [{"params": embeddings, "weight_decay": cfg.weight_decay, **scale(cfg.embedding_lr)},
                       {"params": head, "weight_decay": cfg.weight_decay, **scale(cfg.head_lr)},
                       {"params": vectors, "weight_decay": 0.0}]
        self.adamw = torch.optim.AdamW([g for g in adam_groups if g["params"]], lr=cfg.lr,
                                       betas=(cfg.beta1, cfg.beta2), fused=fused or None)
        self.muon = Muon(
            [{"params": matrices, "lr_scale": cfg.muon_lr / cfg.lr, "precision": cfg.muon_precision,
              "momentum_warmup": (cfg.muon_momentum_start, cfg.muon_momentum, cfg.muon_momentum_warmup)}],
            lr=cfg.muon_lr, momentum=cfg.muon_momentum, nesterov=True, weight_decay=cfg.muon_weight_decay,
            adjust_lr_fn=cfg.muon_lr_scaling)
        self.param_groups = self.muon.param_groups + self.adamw.param_groups  # the same dicts: set_step sets both

    def step(self, closure=None) -> None:
        self.muon.step()
        self.adamw.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.muon.zero_grad(set_to_none)
        self.adamw.zero_grad(set_to_none)

    def state_dict(self) -> dict:
        return {"muon": self.muon.state_dict(), "adamw": self.adamw.state_dict()}

    def load_state_dict(self, state_dict: dict) -> None:
        self.muon.load_state_dict(state_dict["muon"])
        self.adamw.load_state_dict(state_dict["adamw"])
        self.param_groups = self.muon.param_groups + self.adamw.param_groups
