"""The one factory: `build(config)` makes every part of a run from a Config, with no run directory,
so train.py, the benchmarks and other scripts assemble runs the same way.

The order is fixed (it fixes the random numbers): runtime -> torch.manual_seed(trainer.seed) ->
data (its sampler has its own generator) -> model init -> optimizer.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.distributed.fsdp import fully_shard
from torch.nn.parallel import DistributedDataParallel

from gpt2.config import Config
from gpt2.data import DataLoaders, make_dataloader
from gpt2.model import GPT, GPTConfig
from gpt2.optim import LRSchedule, build_optimizer
from gpt2.runtime import Runtime


@dataclass
class Parts:
    runtime: Runtime
    data: DataLoaders
    model: GPT
    """The plain module: checkpoints hold its state_dict (GPT-2 names)."""
    step_model: nn.Module
    """What the training step calls: torch.compile(model) with trainer.compile, else model; wrapped in
    DistributedDataParallel under torchrun (its `.module` is what evaluation calls)."""
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule


def gpt_config(config: Config, vocab_size: int) -> GPTConfig:
    """The model's own config from the Hydra schema (the one place the two meet)."""
    m = config.model
    return GPTConfig(n_layer=m.n_layer, n_head=m.n_head, n_embd=m.n_embd, vocab_size=vocab_size,
                     block_size=config.model_block_size, dropout=m.dropout, bias=m.bias,
                     vocab_multiple=m.vocab_multiple)


def build(config: Config) -> Parts:
    tc = config.trainer
    runtime = Runtime.create(tc.device, tc.dtype, tc.num_threads)
    torch.manual_seed(tc.seed)  # model init, dropout (data order has its own generator); every rank alike
    data = load_data(config, runtime)
    model = GPT(gpt_config(config, data.encoder.vocab_size)).to(runtime.device)
    fsdp = runtime.dist.enabled and tc.parallel == "fsdp"
    if fsdp:  # each block's parameters sharded over the ranks, gathered for its forward and backward
        # our forward returns the logits as a view, never changed in place: FSDP's warning does not apply
        warnings.filterwarnings("ignore", message="FSDP2-wrapped module .* returned a view tensor")
        for block in model.transformer.h:
            fully_shard(block)
        fully_shard(model)
    optimizer = build_optimizer(model, config.optim, runtime.device)  # over the shards under fsdp
    step_model = torch.compile(model) if tc.compile else model
    if runtime.dist.enabled and not fsdp:  # averages gradients over ranks in backward
        step_model = DistributedDataParallel(step_model, device_ids=(
            [runtime.device.index] if runtime.device.type == "cuda" else None))
    return Parts(runtime=runtime, data=data, model=model, step_model=step_model, optimizer=optimizer,
                 schedule=LRSchedule.from_config(config.optim, config.lr_decay_iters))


def load_data(config: Config, runtime: Runtime) -> DataLoaders:
    """This rank's loaders. Under torchrun rank 0 downloads and tokenizes first, so the others read
    its token cache instead of building the same one at the same time."""
    dist = runtime.dist
    if not dist.is_main:
        dist.barrier()
    data = make_dataloader(config.data, eval_iters=config.trainer.eval_iters, device=runtime.device,
                           rank=dist.rank, world_size=dist.world_size)
    if dist.is_main:
        dist.barrier()
    return data
