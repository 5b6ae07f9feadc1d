"""What one step of training does and what the loop measures with: `train_step` (one optimizer step
over grad_accum micro-batches), `FiniteGuard` (the first NaN/inf loss, kept on the device),
`evaluate` (validation loss and bits per byte) and `sample_text`."""

from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Iterator, NamedTuple, Optional

import torch
import torch.nn as nn

from gpt2.model.gpt import GPT
from gpt2.train.distributed import Dist
from gpt2.train.optim import set_step
from gpt2.train.runtime import Runtime, compile_failure


def grad_sync(model: nn.Module, sync: bool):
    """Under torchrun, gradients are reduced over ranks in the last micro-step's backward only:
    DDP's `no_sync()` for the others, FSDP's `set_requires_gradient_sync`. Nothing in one process."""
    if hasattr(model, "set_requires_gradient_sync"):
        model.set_requires_gradient_sync(sync)
    elif hasattr(model, "no_sync") and not sync:
        return model.no_sync()
    return nullcontext()


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, batches: Iterator, rt: Runtime,
               lr: float, grad_accum: int, grad_clip: float, step: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step (iteration `step`, at `lr`) over grad_accum micro-batches; returns (mean
    loss, grad norm) as tensors (no device sync here)."""
    set_step(optimizer, step, lr)
    total = torch.zeros((), device=rt.device)
    for micro in range(grad_accum):
        x, y = next(batches)
        with rt.compute(), grad_sync(model, micro == grad_accum - 1):
            try:  # torch.compile builds its kernels in the first step's forward and backward
                _, loss = model(rt.to_device(x), rt.to_device(y))
                loss = loss / grad_accum
                (rt.scaler.scale(loss) if rt.scaler else loss).backward()
            except Exception as exc:
                failure = compile_failure(exc)
                if failure is None:
                    raise
                raise failure from None
        total += loss.detach()
    if rt.scaler:
        rt.scaler.unscale_(optimizer)
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip if grad_clip > 0 else math.inf)
    if hasattr(norm, "full_tensor"):  # FSDP: the norm over every shard
        norm = norm.full_tensor()
    if rt.scaler:
        rt.scaler.step(optimizer)
        rt.scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return total, norm


class Evaluation(NamedTuple):
    loss: float
    """Mean cross-entropy per validation token (nats)."""
    bpb: float
    """Bits per UTF-8 byte of the validation targets: the same scale for any tokenizer (nan without
    the tokens' byte lengths)."""


@torch.no_grad()
def evaluate(model: nn.Module, loader, rt: Runtime, token_bytes: Optional[torch.Tensor] = None) -> Evaluation:
    """The mean loss per validation token over the loader's fixed batches (a short batch counts for
    its tokens, not as much as a full one), and bits per byte where `token_bytes` (the UTF-8 length of
    each token id, on rt.device) is given; under torchrun each rank scores its slices and the sums are reduced, so
    every validation window counts once."""
    model.eval()
    sums = torch.zeros(3, device=rt.device, dtype=torch.float64)  # loss x tokens, tokens, bytes
    for x, y in loader:
        tokens = y.numel()
        if not tokens:  # this rank's slice of a short last batch is empty: FSDP still needs its forward
            x = y = torch.zeros((1, x.shape[1]), dtype=torch.long)
        y = rt.to_device(y)
        with rt.compute():
            _, loss = model(rt.to_device(x), y)
        if tokens:
            sums[0] += loss.double() * tokens
            sums[1] += tokens
            if token_bytes is not None:
                sums[2] += token_bytes[y].sum()
    model.train()
    total, tokens, nbytes = rt.dist.sum_(sums).tolist()
    return Evaluation(total / tokens, total / math.log(2) / nbytes if nbytes else math.nan)


def sample_text(model: GPT, encoder, rt: Runtime, num_tokens: int, seed: int, text: str = "\n") -> str:
    """num_tokens sampled after the prompt `text` (temperature 0.8, top-k 200, seeded; the global RNG
    is not touched). A prompt the vocabulary cannot encode starts from token 0."""
    try:
        prompt = encoder.encode(text) or [0]
    except ValueError:  # a char vocabulary without one of its characters
        prompt = [0]
    idx = torch.tensor([prompt], dtype=torch.long, device=rt.device)
    generator = torch.Generator(device=rt.device).manual_seed(seed)
    model.eval()
    with rt.compute():
        out = model.generate(idx, num_tokens, temperature=0.8, top_k=200, generator=generator)
    model.train()
    return encoder.decode(out[0, len(prompt):].tolist())


NONE_BAD = 2**62  # no bad iteration (larger than any iteration, for the minimum over ranks)


class FiniteGuard:
    """The first iteration whose loss was NaN/inf, kept on the device: checking costs no sync per step."""

    def __init__(self, device: torch.device):
        self.first_bad = torch.full((), -1, dtype=torch.long, device=device)

    def update(self, loss: torch.Tensor, iteration: int) -> None:
        self.first_bad = torch.where((self.first_bad < 0) & ~torch.isfinite(loss), iteration, self.first_bad)

    def first(self, dist: Dist = Dist()) -> Optional[int]:
        """The first bad iteration on any rank (a collective under torchrun: every rank asks at once)."""
        bad = int(self.first_bad.item())
        bad = dist.min_int(bad if bad >= 0 else NONE_BAD)
        return bad if bad < NONE_BAD else None
