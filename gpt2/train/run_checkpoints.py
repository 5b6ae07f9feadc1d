"""The checkpoints of one run directory (ckpt/): what a checkpoint of this run holds, saving
ckpt/last.pt (with its numbered copies) and ckpt/best.pt, restoring a resume plan's checkpoint into
the parts, and the weights of the run's best validation loss."""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional

import torch

from gpt2.config import Config, to_dict
from gpt2.errors import CheckpointError, error_line
from gpt2.files import remove_stale_temporaries
from gpt2.model.gpt import GPT
from gpt2.train.checkpoint import (BEST, FORMAT_VERSION, LAST, Checkpointer, RNGState, check_weights, keep_numbered,
                                   load_model, save_checkpoint)
from gpt2.train.distributed import WholeModelState, WholeOptimizerState, is_sharded
from gpt2.train.parts import Parts
from gpt2.train.resume import ResumePlan, check_resumable, continue_schedule

log = logging.getLogger(__name__)


class RunCheckpoints:
    """The checkpoints of one run directory (ckpt/): each holds what identifies the run (config,
    model_args, tokenizer, data fingerprint, W&B run id) and the state of every stateful part."""

    def __init__(self, ckpt_dir: Path, config: Config, parts: Parts, progress: Any):
        self.dir, self.config, self.parts, self.progress = Path(ckpt_dir), config, parts, progress
        self.dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.dir)  # left by a save that was killed
        self.config_dict = to_dict(config)
        self.sharded = is_sharded(parts.model)  # FSDP: the whole state is gathered from every rank
        # fsdp checkpoints key the optimizer state by parameter name, at every world size (1 included)
        model, optimizer = ((WholeModelState(parts.model), WholeOptimizerState(parts.model, parts.optimizer))
                            if config.trainer.parallel == "fsdp" else (parts.model, parts.optimizer))
        self.checkpointer = Checkpointer(model=model, optimizer=optimizer, schedule=parts.schedule,
                                         train_loader=parts.data.train_dl, progress=progress, rng=RNGState(),
                                         grad_scaler=parts.runtime.scaler)
        self.wandb_id: Optional[str] = None
        self.last_saved: Optional[int] = None  # the iteration of the newest ckpt/last.pt
        self.resumed_from: Optional[Path] = None

    def identity(self) -> dict:
        """What makes a checkpoint this run's: the model's shape, the tokenizer, the data."""
        data = self.parts.data
        return {"model_args": asdict(self.parts.model.config), "tokenizer": data.encoder.state(),
                "data_fingerprint": data.source.fingerprint}

    def state(self) -> dict:
        return {"format_version": FORMAT_VERSION, "config": self.config_dict, **self.identity(),
                "iter": self.progress.iters, "best_val_loss": self.progress.best_val_loss,
                "wandb_id": self.wandb_id, **self.checkpointer.state_dict()}

    def save(self, name: str) -> None:
        """ckpt/NAME; for last.pt also the numbered copies that trainer.keep_last keeps. Under
        torchrun every rank calls it (a sharded model's state is gathered from all), rank 0 writes."""
        dist = self.parts.runtime.dist
        state = self.state() if dist.is_main or self.sharded else None  # DDP: every rank holds the same
        if not dist.is_main:
            self.last_saved = self.progress.iters if name == LAST else self.last_saved
            return
        if name == LAST:
            save_checkpoint(self.dir / LAST, state)
            self.last_saved = self.progress.iters
            try:
                keep_numbered(self.dir, state, self.config.trainer.keep_last)
            except OSError as exc:  # only history: the run's state is in last.pt, and the run goes on
                log.warning("%s holds iteration %d, but its numbered copy was not kept: %s", self.dir / LAST,
                            self.progress.iters, error_line(exc) or exc)
        else:
            save_checkpoint(self.dir / name, state)

    def restore(self, plan: ResumePlan) -> None:
        """Load every part from the plan's checkpoint (opened by the plan, not again), after checking
        that it continues this config's run."""
        path, state, data = plan.path, plan.state, self.parts.data
        check_resumable(path, state, self.config_dict, data.encoder.state(), data.source.fingerprint)
        check_weights(path, state["model"], self.parts.model, against="this run's model")
        try:
            self.checkpointer.load_state_dict(state)
        except CheckpointError as exc:
            raise CheckpointError(f"{path}: {exc}") from None
        self.wandb_id, self.last_saved, self.resumed_from = state["wandb_id"], state["iter"], Path(path)
        log.info("resumed from %s at iteration %d", path, state["iter"])
        changed = {k: v for k, v in plan.changes.allowed.items() if k != "trainer.resume"}
        if changed:
            log.info("changed since the checkpoint: %s", ", ".join(f"{k} {was!r} -> {now!r}"
                                                                   for k, (was, now) in changed.items()))
        log.info("%s", continue_schedule(self.parts.schedule, self.config, state["iter"]))

    def best_model(self, device: torch.device) -> Optional[tuple[GPT, Path]]:
        """The model of this run's best validation loss and its file: ckpt/best.pt, or the best.pt
        beside the checkpoint the run resumed from; None when neither is this run's (same model,
        tokenizer and data, and the best_val_loss the run reached)."""
        candidates = [self.dir / BEST] + ([self.resumed_from.parent / BEST] if self.resumed_from else [])
        for path in candidates:
            try:
                model, state = load_model(path, device) if path.is_file() else (None, None)
            except CheckpointError as exc:
                log.warning("not sampling from %s: %s", path, exc)
                continue
            mine = {key: state[key] for key in self.identity()} if state else None
            if mine == self.identity() and state["best_val_loss"] == self.progress.best_val_loss:
                return model, path
        return None
