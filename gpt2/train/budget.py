"""What a run needs in memory, known before anything is built: the parameters a model's shape makes,
the bytes of their weights, gradients and optimizer state, and the activations of one micro-batch;
against what the device has free. `plan` refuses in one line a run that clearly cannot fit (naming
the largest part and the setting that makes it), and `out_of_memory` names the same part when a run
runs out of memory all the same: one estimate for both.

The estimate is a lower bound (a run that fits is never refused; one that does not can still get
through it and run out of memory later):

- parameters: exactly as `GPT` builds them (blocks, token table, position table unless
  model.rotary, an untied output layer), a tied head counted once;
- state: 4 bytes of weights and 4 of gradients per parameter, plus AdamW's two fp32 moments (8) or,
  with optim.name=muon, Muon's one momentum buffer (4) for the blocks' matrices and AdamW's for the
  rest; trainer.parallel=fsdp divides it by the processes;
- activations of one micro-batch of b = data.batch_size / processes windows of T = data.block_size:
  ACTIVATION_VALUES values per token, per layer and per n_embd kept for the backward pass (2 bytes
  each under 16-bit autocast, 4 in float32); the logits and their fp32 log-softmax, b x T x padded
  vocab x (2 or 4, plus 4) bytes, often the largest part; and, where no fused kernel applies
  (trainer.attention=math; model.dropout > 0 on a CPU, whose flash kernel has no dropout), the
  attention scores and their softmax, b x n_head x T x T x 2 values per layer.

Measured on a 2-core CPU (torch 2.13; the peak RSS of the first training step, VmHWM, over the RSS of
the built parts, plus their weights), the peak was 1.1 to 1.6 times this estimate in float32 and 1.5
to 2.3 times in bfloat16, for nanoGPT's 4/4/128 default, a 4-layer char model at T=1024, an 8-layer
512-wide one at T=256 and model=modern optim=muon: hence a warning from half of what is available,
and a refusal only above all of it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from gpt2.config import Config, DataConfig, ModelConfig
from gpt2.errors import HarnessError
from gpt2.model.gpt import GPTConfig

log = logging.getLogger(__name__)

ACTIVATION_VALUES = 17
"""Values a transformer block keeps per token and per n_embd for its backward pass (Korthikanti et
al. 2022, "Reducing Activation Recomputation in Large Transformer Models": 34 bytes in 16 bits), the
attention scores apart: the norms' inputs and outputs (4), q, k, v and the attention's output (4),
the MLP's input and hidden layer before and after its nonlinearity (9)."""
WARN_SHARE = 0.5
"""The share of the available memory above which the estimate is a warning (measured peaks reach
about twice the estimate)."""
LOUD_BUILD = 25_000_000
"""Parameters from which building (initialising) the model takes seconds on a CPU: a log line first."""
GPT2_VOCAB, CHAR_VOCAB = 50257, 256


@dataclass(frozen=True)
class Footprint:
    """The estimate of one process's memory for training (bytes)."""

    shape: GPTConfig
    params: dict
    """Parameters by part: the blocks (with the final norm), the token table, the position table,
    the output layer (0 when tied or absent)."""
    state: int
    """Weights, gradients and optimizer state."""
    optimizer: str
    activations: dict
    """One micro-batch's: block activations, attention scores, logits."""
    batch: int
    """Windows per micro-batch in this process."""

    @property
    def n_params(self) -> int:
        return sum(self.params.values())

    @property
    def total(self) -> int:
        return self.state + sum(self.activations.values())


def parameter_counts(c: GPTConfig) -> dict:
    """Parameters by part, as `GPT` builds them (nn.RMSNorm here has none; qk-norm, ReLU², rotary
    positions add none)."""
    C, V = c.n_embd, c.padded_vocab_size
    norm = 0 if c.norm == "rmsnorm" else C * (2 if c.bias else 1)
    block = 12 * C * C + (9 * C if c.bias else 0) + 2 * norm  # c_attn 3C², attn c_proj C², c_fc and c_proj 8C²
    return {"blocks": c.n_layer * block + norm, "token table": V * C,
            "position table": 0 if c.rotary else c.block_size * C,
            "output layer": 0 if c.tie_embeddings else V * C}


def state_bytes(c: GPTConfig, params: dict, optimizer: str, shards: int = 1) -> int:
    """Weights and gradients (fp32) and the optimizer's state, over `shards` processes (FSDP)."""
    n = sum(params.values())
    if optimizer == "muon":  # Muon's momentum for the blocks' matrices, AdamW's two moments for the rest
        matrices = c.n_layer * 12 * c.n_embd ** 2
        return (8 * n + 4 * matrices + 8 * (n - matrices)) // shards
    return 16 * n // shards


def activation_bytes(c: GPTConfig, batch: int, window: int, value_bytes: int, scores: bool) -> dict:
    """One micro-batch's activations kept for the backward pass (see the module's docstring)."""
    tokens = batch * window
    return {"block activations": ACTIVATION_VALUES * tokens * c.n_embd * c.n_layer * value_bytes,
            "attention scores": c.n_layer * batch * c.n_head * window * window * 2 * value_bytes if scores else 0,
            "logits": tokens * c.padded_vocab_size * (value_bytes + 4)}


def estimate(shape: GPTConfig, config: Config, device: torch.device, dtype: torch.dtype,
             world_size: int = 1) -> Footprint:
    """The footprint of training `shape` as the config says, in one of world_size processes."""
    tc, batch = config.trainer, max(1, config.data.batch_size // world_size)
    params = parameter_counts(shape)
    shards = world_size if tc.parallel == "fsdp" else 1
    scores = tc.attention == "math" or (device.type == "cpu" and shape.dropout > 0)
    value_bytes = 2 if dtype in (torch.bfloat16, torch.float16) else 4
    return Footprint(shape, params, state_bytes(shape, params, config.optim.name, shards),
                     "Muon and AdamW" if config.optim.name == "muon" else "AdamW",
                     activation_bytes(shape, batch, config.data.block_size, value_bytes, scores), batch)


def size(n: float) -> str:
    """Bytes as GiB (MiB under one)."""
    if n < 2 ** 30:
        return f"{n / 2 ** 20:.0f} MiB"
    return f"{n / 2 ** 30:,.0f} GiB" if n >= 100 * 2 ** 30 else f"{n / 2 ** 30:.1f} GiB"


def count(n: int) -> str:
    """1.98B, 7.2M, 12K."""
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.{2 if unit == 'B' else 1}f}{unit}"
    return str(n)


DEFAULTS = {"data.batch_size": DataConfig.batch_size, "data.block_size": DataConfig.block_size,
            "model.n_layer": ModelConfig.n_layer, "model.n_embd": ModelConfig.n_embd,
            "model.block_size": DataConfig.block_size}
"""The schema's defaults of the settings an estimate can blame: the further a value is above its
default, the sooner it is named."""
LOWER = {"data.batch_size": "data.batch_size (raise trainer.grad_accum to keep the batch)"}


def contributors(fp: Footprint, config: Config) -> list[tuple[str, int, list, str]]:
    """The footprint's parts: (what, bytes, the settings that scale it, a fix to try first)."""
    c = fp.shape
    top = max(fp.params, key=fp.params.get)
    position = "data.block_size" if config.model.block_size is None else "model.block_size"
    by_part = {"blocks": ["model.n_layer", "model.n_embd"], "position table": [position]}
    state_keys = by_part.get(top, ["model.n_embd"])  # the token table, an untied output layer
    first = {"position table": "set model.rotary=true (no position table), or "}.get(top, "")
    window = ["data.block_size", "data.batch_size"]
    math = config.trainer.attention == "math"
    attention = ("use trainer.attention=auto (a fused kernel keeps no scores), or " if math
                 else "set model.dropout=0 (the cpu's flash kernel has no dropout), or ")
    a = fp.activations
    return [(f"weights, gradients and {fp.optimizer} state of {count(fp.n_params)} parameters, most in the "
             f"{top}", fp.state, state_keys, first),
            ("block activations of one micro-batch", a["block activations"], window + ["model.n_layer", "model.n_embd"],
             ""),
            ("attention scores of one micro-batch", a["attention scores"], window, attention),
            (f"logits of one micro-batch over {c.padded_vocab_size} tokens", a["logits"], window, "")]


def describe(fp: Footprint, config: Config) -> tuple[str, str]:
    """('<settings> needs ~X to train (<its largest part>: Y)', what to lower): the settings of the
    largest part, those furthest above their defaults first."""
    what, nbytes, keys, first = max(contributors(fp, config), key=lambda part: part[1])
    c, d = fp.shape, config.data
    values = {"data.batch_size": d.batch_size, "data.block_size": d.block_size, "model.n_layer": c.n_layer,
              "model.n_embd": c.n_embd, "model.block_size": c.block_size}
    ranked = sorted(keys, key=lambda key: values[key] / DEFAULTS[key], reverse=True)
    named = [key for key in ranked if values[key] > DEFAULTS[key]] or ranked[:1]
    settings = " x ".join(f"{key}={values[key]}" for key in named)
    lower = [LOWER.get(key, key) for key in ranked]
    fix = "lower " + (", ".join(lower[:-1]) + " or " + lower[-1] if len(lower) > 1 else lower[0])
    return f"{settings} needs ~{size(fp.total)} to train ({what}: {size(nbytes)})", first + fix


def available_bytes(device: torch.device) -> Optional[int]:
    """Memory free for this run: the GPU's free memory (CUDA), the system's MemAvailable capped by a
    cgroup's limit (CPU, Linux); None where unknown (MPS, other systems): then nothing is checked."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type != "cpu":
        return None
    try:
        free = next(int(line.split()[1]) * 1024 for line in Path("/proc/meminfo").read_text().splitlines()
                    if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return None
    for limit in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            free = min(free, int(Path(limit).read_text()))
        except (OSError, ValueError):  # absent, or "max"
            pass
    return free


def plan(fp: Footprint, config: Config, device: torch.device, available: Optional[int]) -> None:
    """Refuse in one line a run whose estimate exceeds the available memory; warn from WARN_SHARE of
    it; say what is being built when building takes seconds."""
    core, fix = describe(fp, config)
    if available is not None and fp.total > available:
        raise HarnessError(f"{core}, but {device} has {size(available)} available: {fix}")
    if available is not None and fp.total > WARN_SHARE * available:
        log.warning("%s, %.0f%% of the %s available on %s: it may run out of memory (the estimate is a lower "
                    "bound); if it does, %s", core, 100 * fp.total / available, size(available), device, fix)
    if fp.n_params >= LOUD_BUILD:
        log.info("building a %s-parameter model on %s (~%s to train by estimate)", count(fp.n_params), device,
                 size(fp.total))


def out_of_memory(fp: Footprint, config: Config, device: torch.device, when: str) -> HarnessError:
    """The one line for running out of memory: where, and the estimate's largest part and its fix."""
    core, fix = describe(fp, config)
    return HarnessError(f"out of memory on {device} {when} ({core}): {fix}")


def config_vocab(config: Config) -> int:
    """The vocabulary the data will have, as far as the config says: GPT-2's, or (char) 256 at most
    in practice; for an estimate made without the data at hand."""
    return CHAR_VOCAB if config.data.tokenizer == "char" and config.data.source == "text" else GPT2_VOCAB
