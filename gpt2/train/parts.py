"""The one factory: `build(config)` makes every part of a run from a Config, with no run directory,
so train.py, the benchmarks and other scripts assemble runs the same way.

The order is fixed (it fixes the random numbers): runtime -> torch.manual_seed(trainer.seed) ->
data (its sampler has its own generator) -> model init -> optimizer.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, replace
from typing import Optional

import torch
import torch.nn as nn
from torch.distributed.fsdp import fully_shard
from torch.nn.parallel import DistributedDataParallel

from gpt2.config import Config, ModelConfig
from gpt2.errors import ConfigError
from gpt2.data.loaders import DataLoaders, make_dataloader
from gpt2.model.gpt import GPT, GPTConfig
from gpt2.train import budget
from gpt2.train.budget import Footprint
from gpt2.train.optim import LRSchedule, build_optimizer
from gpt2.model.pretrained import HF_NAMES
from gpt2.train.model_source import ModelSource, check_tokenizer, make_model, open_model
from gpt2.train.runtime import Runtime, check_compiler, is_out_of_memory, resolve_device, resolve_dtype
from gpt2.world import World

log = logging.getLogger(__name__)

ARCHITECTURE = ("n_layer", "n_head", "n_embd", "bias", "rotary", "norm", "qk_norm", "activation", "tie_embeddings",
                "logit_softcap")
"""The model.* keys model.init_from's checkpoint decides (an override must agree with it)."""


@dataclass
class Parts:
    runtime: Runtime
    data: DataLoaders
    model: GPT
    """The plain module: checkpoints hold its state_dict (GPT-2 names)."""
    step_model: nn.Module
    """What the training step calls: torch.compile(model) with trainer.compile (null: with CUDA), else
    model; wrapped in DistributedDataParallel under torchrun. Evaluation and sampling call `model`."""
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    footprint: Optional[Footprint] = None
    """The memory estimate the model was checked against before it was built (gpt2/train/budget.py)."""


def gpt_config(config: Config, vocab_size: int) -> GPTConfig:
    """The model's own config from the Hydra schema (the one place the two meet)."""
    m = config.model
    return GPTConfig(n_layer=m.n_layer, n_head=m.n_head, n_embd=m.n_embd, vocab_size=vocab_size,
                     block_size=config.model_block_size, dropout=m.dropout, bias=m.bias,
                     vocab_multiple=m.vocab_multiple, rotary=m.rotary, norm=m.norm, qk_norm=m.qk_norm,
                     activation=m.activation, tie_embeddings=m.tie_embeddings, zero_init=m.zero_init,
                     logit_softcap=m.logit_softcap)


def init_source(config: Config) -> ModelSource:
    """model.init_from's model (fetched if need be), its architecture checked against the config
    before any data work: a model.* value that differs from both the schema's default and the
    checkpoint's is a conflict, refused in one line."""
    m = config.model
    modern = gpt_config(config, vocab_size=1).not_gpt2()
    source = None if modern and m.init_from in HF_NAMES else open_model(m.init_from)  # no download to refuse
    if modern and (source is None or source.kind == "huggingface"):
        raise ConfigError(f"model.init_from={m.init_from}: OpenAI's GPT-2 weights have GPT-2's block: drop "
                          f"{', '.join('model.' + option for option in modern)}")
    theirs, default = source.config, ModelConfig()
    for key in ARCHITECTURE:
        if getattr(m, key) != getattr(default, key) and getattr(m, key) != getattr(theirs, key):
            raise ConfigError(f"model.{key}={getattr(m, key)} conflicts with model.init_from={m.init_from} "
                              f"({key}={getattr(theirs, key)}): the architecture is the checkpoint's; drop the "
                              f"override")
    for key, value in (("data.block_size", config.data.block_size), ("model.block_size", m.block_size)):
        if value is not None and value > theirs.block_size:
            raise ConfigError(f"{key}={value} is longer than the context of model.init_from={m.init_from} "
                              f"({theirs.block_size})")
    log.info("model.init_from=%s: the weights of %s (%s), a fresh run from them", m.init_from, source.path, source.kind)
    return source


def initial_model(config: Config, source: ModelSource, encoder) -> GPT:
    """The model with model.init_from's weights, for data in its tokens; a shorter model.block_size
    crops its context."""
    check_tokenizer(source, encoder, "model.init_from")
    model = make_model(source, dropout=config.model.dropout, vocab_multiple=config.model.vocab_multiple)
    if config.model.block_size is not None and config.model.block_size < model.block_size:
        model.crop_block_size(config.model.block_size)
    return model


def build(config: Config, model_args: Optional[dict] = None) -> Parts:
    """The parts of a run. `model_args` (a resumed checkpoint's) gives the model's architecture
    instead of the config; model.init_from's weights are then not read (the checkpoint has them).
    Before the model is built, its memory is estimated and a run that cannot fit is refused."""
    tc = config.trainer
    runtime = Runtime.create(tc.device, tc.dtype, tc.num_threads, tc.tf32, tc.attention)
    compiled = runtime.device.type == "cuda" if tc.compile is None else tc.compile
    if compiled:  # a missing compiler is one line now, not a traceback at the first step
        check_compiler(runtime.device)
    torch.manual_seed(tc.seed)  # model init, dropout (data order has its own generator); every rank alike
    init_from = init_source(config) if config.model.init_from and model_args is None else None  # before data
    data = load_data(config, runtime)
    shape = model_shape(config, model_args, init_from, data.encoder.vocab_size)
    footprint = budget.estimate(shape, config, runtime.device, runtime.dtype, runtime.dist.world_size)
    budget.plan(footprint, config, runtime.device, budget.available_bytes(runtime.device))
    try:
        model = (initial_model(config, init_from, data.encoder) if init_from else GPT(shape)).to(runtime.device)
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        raise budget.out_of_memory(footprint, config, runtime.device, "while building the model") from None
    fsdp = runtime.dist.enabled and tc.parallel == "fsdp"
    if fsdp:  # each block's parameters sharded over the ranks, gathered for its forward and backward
        # our forward returns the logits as a view, never changed in place: FSDP's warning does not apply
        warnings.filterwarnings("ignore", message="FSDP2-wrapped module .* returned a view tensor")
        for block in model.transformer.h:
            fully_shard(block)
        fully_shard(model)
    optimizer = build_optimizer(model, config.optim, runtime.device)  # over the shards under fsdp
    step_model = torch.compile(model) if compiled else model
    if runtime.dist.enabled and not fsdp:  # averages gradients over ranks in backward
        step_model = DistributedDataParallel(step_model, device_ids=(
            [runtime.device.index] if runtime.device.type == "cuda" else None))
    return Parts(runtime=runtime, data=data, model=model, step_model=step_model, optimizer=optimizer,
                 schedule=LRSchedule.from_config(config.optim, config.lr_decay_iters, config.warmup_iters),
                 footprint=footprint)


def model_shape(config: Config, model_args: Optional[dict], source: Optional[ModelSource],
                vocab_size: int) -> GPTConfig:
    """The shape of the model `build` makes: a resumed checkpoint's, model.init_from's (its context
    cropped to a shorter model.block_size), or the config's over the data's vocabulary."""
    if model_args is not None:
        return GPTConfig(**model_args)
    if source is not None:
        cropped = min(source.config.block_size, config.model.block_size or source.config.block_size)
        return replace(source.config, block_size=cropped, dropout=config.model.dropout)
    return gpt_config(config, vocab_size)


def config_footprint(config: Config) -> Footprint:
    """The estimate from the config alone (the vocabulary as far as the config says), for an
    out-of-memory line where the built parts are not at hand."""
    device = resolve_device(config.trainer.device)
    shape = gpt_config(config, budget.config_vocab(config))
    return budget.estimate(shape, config, device, resolve_dtype(config.trainer.dtype, device),
                           World.from_env().world_size)


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
