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
from omegaconf.errors import OmegaConfBaseException

from gpt2.config import DataConfig
from gpt2.data.loaders import make_dataloader
from gpt2.errors import CheckpointError, ConfigError
from gpt2.run.compose import compose
from gpt2.train.model_source import ModelSource, check_tokenizer, make_model
from gpt2.train.runtime import DTYPES, Runtime, dtype_name
from gpt2.train.step import evaluate

DATA_OVERRIDE = re.compile(r"^data(=|\.[A-Za-z_]+=)")
FROM_HERE = ("mirror",)
"""Taken from this machine's composition, not the training run's (where the offline copy lives)."""
DTYPE_NAMES = ("auto", *DTYPES)
DATA_FIELDS = {f.name for f in dataclasses.fields(DataConfig)}


def data_config(source: ModelSource, overrides: list[str]) -> DataConfig:
    """The data to evaluate on: the model's run's data (when its checkpoint records it and no
    `data=NAME` is given), else the composed data group; then the `data.KEY=VALUE` overrides."""
    for override in overrides:
        if not DATA_OVERRIDE.match(override):
            raise ConfigError(f"{override}: evaluate.py takes data overrides only (data=NAME, data.KEY=VALUE)")
    composed = OmegaConf.to_container(compose(*overrides).data, resolve=True)
    if source.train_config is not None and not any(o.startswith("data=") for o in overrides):
        given = {o.split("=", 1)[0].removeprefix("data.") for o in overrides} | set(FROM_HERE)
        composed = {**run_data(source), **{k: composed[k] for k in given if k in composed}}
    return DataConfig(**{k: v for k, v in composed.items() if k in DATA_FIELDS})


def run_data(source: ModelSource) -> dict:
    """The data section of the model's run's config, each value read as DataConfig's field types (a
    key it lacks: the default): a value of another type, in a damaged or crafted checkpoint, is one
    line naming the file and the key, not a TypeError where the value is first compared."""
    data = {k: v for k, v in source.train_config["data"].items() if k in DATA_FIELDS}
    try:
        return OmegaConf.to_container(OmegaConf.merge(OmegaConf.structured(DataConfig), data))
    except OmegaConfBaseException as exc:
        key, reason = getattr(exc, "full_key", None) or "?", str(exc).splitlines()[0]
        raise CheckpointError(f"{source.path}: its config's data.{key} cannot be used ({reason})") from None


def check_dtype(dtype: object, where: str) -> str:
    """A precision's name, `where` naming whose in the line that refuses another value."""
    if not (isinstance(dtype, str) and dtype in DTYPE_NAMES):
        raise ConfigError(f"{where}: must be {', '.join(DTYPE_NAMES[:-1])} or {DTYPE_NAMES[-1]}, got {dtype!r}")
    return dtype


def default_dtype(source: ModelSource) -> str:
    """The precision the model's run evaluated in (trainer.dtype of our checkpoints), else auto (also
    for a config without trainer.dtype); a value that names no precision is one line naming the file."""
    if source.train_config is None:
        return "auto"
    return check_dtype(source.train_config["trainer"].get("dtype", "auto"), f"{source.path}: its config's trainer.dtype")


def evaluate_model(source: ModelSource, data_cfg: DataConfig, device: str = "auto", dtype: Optional[str] = None,
                   batches: Optional[int] = None) -> dict:
    """The model's validation loss and bits per byte on the data: over `batches` fixed batches (the
    trainer's with trainer.eval_iters=batches), or every validation token once (None). A split too
    short for one window (or one eval batch, see data.min_val_frac) is refused by the loader."""
    if batches is not None and (type(batches) is not int or batches < 1):
        raise ConfigError(f"--batches: must be at least 1, got {batches!r}")
    if data_cfg.block_size > source.config.block_size:
        raise ConfigError(f"data.block_size={data_cfg.block_size} is longer than the model's context "
                          f"({source.config.block_size}): set data.block_size={source.config.block_size} or less")
    runtime = Runtime.create(device, check_dtype(dtype, "--dtype") if dtype else default_dtype(source))
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
