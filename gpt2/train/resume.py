"""A run's checkpoints and how a run continues: which checkpoint `trainer.resume` means, what a run's
checkpoint holds (`RunCheckpoints`), the check that a checkpoint fits the config it is resumed with,
and the LR schedule a resumed run follows."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional

import torch

from gpt2.train.checkpoint import (BEST, FORMAT_VERSION, LAST, Checkpointer, RNGState, checkpoint_iteration,
                             load_checkpoint, load_model, numbered_checkpoints, save_checkpoint, save_periodic)
from gpt2.config import Config, flatten, to_dict
from gpt2.train.distributed import WholeModelState, WholeOptimizerState, is_sharded
from gpt2.errors import CheckpointError, ConfigError
from gpt2.files import remove_stale_temporaries
from gpt2.model.gpt import GPT
from gpt2.train.optim import LRSchedule
from gpt2.train.parts import Parts
from gpt2.run.logger import SUMMARY_FILE
from gpt2.run.rundir import RunDirTaken

log = logging.getLogger(__name__)

# Config keys that may differ between a checkpoint and the run resuming it: how long to run and how
# often to log/evaluate/save, where to run it (device, threads), and where data and logs live (the data
# itself is checked by its fingerprint); optim.lr_decay_iters is handled by `continue_schedule`.
# Anything else (model shape, tokenizer, data order, optimizer settings) would not continue the same
# run and is refused.
RESUMABLE_CHANGES = (
    "trainer.max_iters", "trainer.eval_interval", "trainer.eval_iters", "trainer.log_interval",
    "trainer.ckpt_interval", "trainer.keep_last", "trainer.resume", "trainer.device", "trainer.dtype",
    "trainer.compile", "trainer.progress", "trainer.sample_tokens", "trainer.num_threads",
    "optim.lr_decay_iters", "data.num_workers", "data.prefetch", "data.data_dir", "data.mirror", "data.path",
    "data.dir", "model.init_from", "trainer.tf32", "trainer.attention", "logger.",
)


def run_checkpoints(run_dir: Path) -> list[Path]:
    """The checkpoints a run left in run_dir/ckpt: last.pt, best.pt, iter_*.pt (those that exist)."""
    ckpt = Path(run_dir) / "ckpt"
    return [p for p in (ckpt / LAST, ckpt / BEST) if p.is_file()] + numbered_checkpoints(ckpt)


def newest(checkpoints: list[Path]) -> Path:
    """The checkpoint of the highest iteration (the first of equals: last.pt before best.pt)."""
    return max(checkpoints, key=checkpoint_iteration)


def resume_path(resume: Optional[str], run_dir: Path) -> Optional[Path]:
    """The checkpoint trainer.resume asks for: None for a fresh start. Never one that would overwrite
    the checkpoints of another run: a fresh start, or a checkpoint from elsewhere, needs a run_dir
    without checkpoints; `auto` continues the newest checkpoint in run_dir (best.pt when the run was
    killed before its first last.pt); a checkpoint of run_dir itself must be its newest."""
    held = run_checkpoints(run_dir)
    names = ", ".join(p.name for p in held)
    if resume is None:
        if held:
            raise RunDirTaken(f"{run_dir} already holds a run (ckpt/: {names}): continue it with "
                                  f"trainer.resume=auto, or start in another hydra.run.dir")
        return None
    if resume == "auto":
        if not held:
            log.info("trainer.resume=auto: no checkpoint in %s yet, starting fresh", Path(run_dir) / "ckpt")
            return None
        return newest(held)
    path = Path(resume).expanduser()
    if not path.is_file():
        raise CheckpointError(f"trainer.resume={resume}: there is no checkpoint file there")
    if held and path.resolve().parent != (Path(run_dir) / "ckpt").resolve():
        raise RunDirTaken(f"trainer.resume={resume}: {run_dir} already holds another run (ckpt/: {names}), "
                              f"which resuming there would overwrite: resume into a new hydra.run.dir")
    at = checkpoint_iteration(path) if held else 0
    newer = [p.name for p in held if checkpoint_iteration(p) > at]
    if newer:
        raise RunDirTaken(f"trainer.resume={resume} is at iteration {at}, but "
                              f"{run_dir} holds later checkpoints ({', '.join(newer)}) that continuing from it "
                              f"would overwrite: resume it into a new hydra.run.dir")
    return path


def finished_run(config: Config, run_dir: Path) -> Optional[dict]:
    """The summary of the run in run_dir when trainer.resume=auto could only finish it again (it ran
    its trainer.max_iters, was not stopped, and the config continues it): the caller keeps its files
    as they are. None otherwise."""
    try:
        summary = json.loads((Path(run_dir) / SUMMARY_FILE).read_text()) if config.trainer.resume == "auto" else None
        held = run_checkpoints(run_dir)
        if (not isinstance(summary, dict) or summary.get("status") == "failed" or summary.get("stopped_by")
                or not isinstance(summary.get("iters"), int) or summary["iters"] < config.trainer.max_iters
                or not held):
            return None
        state = load_checkpoint(newest(held))
    except (OSError, ValueError, CheckpointError):
        return None  # the normal resume says what is wrong
    saved, now = saved_config(state["config"], to_dict(config))
    changed = [k for k in set(saved) | set(now) if saved.get(k) != now.get(k) and not k.startswith(RESUMABLE_CHANGES)]
    return summary if state.get("iter") == summary["iters"] and not changed else None


def saved_config(saved: dict, config: dict) -> tuple[dict, dict]:
    """Both configs as dotted keys; a key the checkpoint predates (added to the schema since) counts
    as the schema's default, where the config has it."""
    saved, now = flatten(saved), flatten(config)
    saved.update({k: v for k, v in flatten(to_dict(Config())).items() if k not in saved and k in now})
    return saved, now


def check_resumable(path: Path, state: dict, config: dict, tokenizer: dict, fingerprint: str) -> None:
    """Refuse, naming the file and the first mismatch, a checkpoint that the config cannot continue."""
    if state["data_fingerprint"] != fingerprint:
        raise CheckpointError(f"{path} does not match this config: it was trained on other data "
                              f"(sha256 {state['data_fingerprint'][:12]}..., this data {fingerprint[:12]}...)")
    saved_tok, tok = state["tokenizer"], tokenizer
    if saved_tok != tok:
        what = ("the vocabulary" if saved_tok.get("name") == tok.get("name") else
                f"tokenizer {saved_tok.get('name')!r}, the config has {tok.get('name')!r}")
        raise CheckpointError(f"{path} does not match this config: it was trained with {what} "
                              f"(vocab_size {saved_tok.get('vocab_size')} vs {tok.get('vocab_size')})")
    saved, now = saved_config(state["config"], config)
    # token files carry their own split and tokenizer (checked above): these keys do not apply
    inert = ("data.train_frac", "data.tokenizer") if saved.get("data.source") == now.get("data.source") == "bin" else ()
    for key in sorted(set(saved) | set(now)):
        if saved.get(key) != now.get(key) and not key.startswith(RESUMABLE_CHANGES) and key not in inert:
            raise CheckpointError(f"{path} does not match this config: {key} was {saved.get(key)!r} "
                                  f"when it was saved, the config says {now.get(key)!r} (only run "
                                  f"length, intervals, device, threads, data workers and paths, logging "
                                  f"and the end of the LR decay may change on resume)")


def continue_schedule(schedule: LRSchedule, config: Config, step: int) -> str:
    """After restoring `schedule` from a checkpoint of iteration `step`: keep it, unless the config
    sets optim.lr_decay_iters explicitly to another end after `step` (then the decay continues from
    the LR at `step` to that end). A longer trainer.max_iters alone never changes it, and the LR never
    jumps up. Returns the log line."""
    wanted, kept = config.optim.lr_decay_iters, f"lr schedule kept from the checkpoint: {schedule.describe()}"
    if not schedule.decay or wanted is None or wanted == schedule.decay_iters:
        if schedule.decay and config.lr_decay_iters != schedule.decay_iters:
            kept += f" (trainer.max_iters={config.trainer.max_iters} does not move it; " + (
                "the run had finished its decay, so it goes on at min_lr)" if step >= schedule.decay_iters
                else "set optim.lr_decay_iters to decay over the longer run)")
        return kept
    if wanted <= step:
        raise ConfigError(f"optim.lr_decay_iters={wanted} would end the LR decay before the resume point "
                          f"(iteration {step}): set a later end, or leave it unset to keep the run's "
                          f"schedule (decay ends at {schedule.decay_iters})")
    if step >= schedule.decay_iters:
        return kept + (f" (the run had finished its decay at iteration {schedule.decay_iters}; a new end "
                       f"would restart nothing, the LR stays at min_lr)")
    before = schedule(step)
    schedule.decay_to(step, wanted)
    return (f"lr schedule changed at iteration {step} by optim.lr_decay_iters={wanted}: "
            f"{schedule.describe()} (lr {before:.2e} -> {schedule(step):.2e})")


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
            save_periodic(self.dir, state, self.config.trainer.keep_last)
            self.last_saved = self.progress.iters
        else:
            save_checkpoint(self.dir / name, state)

    def restore(self, path: Path) -> None:
        """Load every part from `path`, after checking that it continues this config's run."""
        state, data = load_checkpoint(path), self.parts.data
        check_resumable(path, state, self.config_dict, data.encoder.state(), data.source.fingerprint)
        try:
            self.checkpointer.load_state_dict(state)
        except CheckpointError as exc:
            raise CheckpointError(f"{path}: {exc}") from None
        self.wandb_id, self.last_saved, self.resumed_from = state["wandb_id"], state["iter"], Path(path)
        log.info("resumed from %s at iteration %d", path, state["iter"])
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
