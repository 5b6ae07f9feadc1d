"""The validation loss and bits per byte of any model (gpt2/train/model_source.py) on any configured
data, without training: scripts/evaluate.py.

The data is the model's own run's (a checkpoint of ours records it) unless `data=NAME` chooses
another; `data.KEY=VALUE` overrides change either. The batches are the validation loader's: every
validation token once, or the first N fixed batches, which are the ones the trainer scores with
trainer.eval_iters=N, so a checkpoint's val loss is the one its run logged.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Optional

import torch
from omegaconf import OmegaConf

from gpt2.config import DataConfig
from gpt2.data.loaders import make_dataloader
from gpt2.errors import ConfigError
from gpt2.run.compose import compose
from gpt2.train.model_source import ModelSource, check_tokenizer, make_model
from gpt2.train.runtime import Runtime, dtype_name
from gpt2.train.step import evaluate

DATA_OVERRIDE = re.compile(r"^data(=|\.[A-Za-z_]+=)")
FROM_HERE = ("mirror",)
"""Taken from this machine's composition, not the training run's (where the offline copy lives)."""


def data_config(source: ModelSource, overrides: list[str]) -> DataConfig:
    """The data to evaluate on: the model's run's data (when its checkpoint records it and no
    `data=NAME` is given), else the composed data group; then the `data.KEY=VALUE` overrides."""
    for override in overrides:
        if not DATA_OVERRIDE.match(override):
            raise ConfigError(f"{override}: evaluate.py takes data overrides only (data=NAME, data.KEY=VALUE)")
    composed = OmegaConf.to_container(compose(*overrides).data, resolve=True)
    fields = {f.name for f in dataclasses.fields(DataConfig)}
    if source.train_config is not None and not any(o.startswith("data=") for o in overrides):
        given = {o.split("=", 1)[0].removeprefix("data.") for o in overrides} | set(FROM_HERE)
        composed = {**source.train_config["data"], **{k: composed[k] for k in given if k in composed}}
    return DataConfig(**{k: v for k, v in composed.items() if k in fields})


def default_dtype(source: ModelSource) -> str:
    """The precision the model's run evaluated in (trainer.dtype of our checkpoints), else auto."""
    return source.train_config["trainer"]["dtype"] if source.train_config is not None else "auto"


def evaluate_model(source: ModelSource, data_cfg: DataConfig, device: str = "auto", dtype: Optional[str] = None,
                   batches: Optional[int] = None) -> dict:
    """The model's validation loss and bits per byte on the data: over `batches` fixed batches (the
    trainer's with trainer.eval_iters=batches), or every validation token once (None)."""
    if data_cfg.block_size > source.config.block_size:
        raise ConfigError(f"data.block_size={data_cfg.block_size} is longer than the model's context "
                          f"({source.config.block_size}): set data.block_size={source.config.block_size} or less")
    runtime = Runtime.create(device, dtype or default_dtype(source))
    data = make_dataloader(data_cfg, eval_iters=batches, device=runtime.device)
    check_tokenizer(source, data.encoder)
    with torch.random.fork_rng(devices=[]):
        model = make_model(source).to(runtime.device).eval()
    token_bytes = torch.tensor(data.encoder.token_bytes(), device=runtime.device)
    loss, bpb = evaluate(model, data.valid_dl, runtime, token_bytes)
    return {"model": source.name, "kind": source.kind, "checkpoint": str(source.path), "iter": source.iteration,
            "data": data_cfg.path or data_cfg.dir or "Tiny Shakespeare", "tokenizer": data.encoder.name,
            "block_size": data_cfg.block_size, "batch_size": data_cfg.batch_size,
            "batches": len(data.valid_dl), "whole_split": batches is None, "val_loss": loss, "val_bpb": bpb,
            "device": str(runtime.device), "dtype": dtype_name(runtime.dtype)}
