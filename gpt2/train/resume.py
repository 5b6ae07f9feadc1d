"""What a start means, decided once: `plan_start(config, run_dir)` returns a `ResumePlan`.

trainer.resume is read here only, before any slow work:
- null starts fresh; refused where run_dir holds a run's checkpoints (they would be overwritten);
- auto continues the newest checkpoint in run_dir (best.pt when the run was killed before its first
  last.pt), starts fresh where there is none, and keeps a finished run as it is (its summary.json
  says it ran its trainer.max_iters unstopped, and the config continues it);
- a path continues that checkpoint; refused where continuing it would overwrite another run's
  checkpoints, or later ones of its own run.
The plan holds the checkpoint it continues, opened once (memory-mapped: the weights are read as they
are used), and how the config differs from the checkpoint's. `config_changes` is the one rule of which
config keys may change on resume; `check_resumable` applies it, with the data and the tokenizer, once
the data is built; `continue_schedule` is the LR schedule a resumed run follows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from gpt2.config import Config, flatten, to_dict
from gpt2.errors import CheckpointError, ConfigError, DataError
from gpt2.run.record import RunSummary
from gpt2.run.rundir import RunDirTaken
from gpt2.train.checkpoint import load_checkpoint, numbered_iteration, run_checkpoints
from gpt2.train.optim import LRSchedule

log = logging.getLogger(__name__)

# Config keys that may differ between a checkpoint and the run resuming it: how long to run and how
# often to log/evaluate (HellaSwag too)/save, where to run it (device, threads), and where data and logs
# live (the data itself is checked by its fingerprint); optim.lr_decay_iters is handled by
# `continue_schedule`.
# Anything else (model shape, tokenizer, data order, optimizer settings) would not continue the same
# run and is refused.
RESUMABLE_CHANGES = (
    "trainer.max_iters", "trainer.eval_interval", "trainer.eval_iters", "trainer.log_interval",
    "trainer.ckpt_interval", "trainer.keep_last", "trainer.resume", "trainer.device", "trainer.dtype",
    "trainer.compile", "trainer.progress", "trainer.sample_", "trainer.num_threads", "trainer.hellaswag_",
    "optim.lr_decay_iters", "data.num_workers", "data.prefetch", "data.data_dir", "data.mirror", "data.path",
    "data.dir", "data.min_val_frac", "model.init_from", "trainer.tf32", "trainer.attention", "logger.",
)
# token files carry their own split and tokenizer (checked by fingerprint and tokenizer state)
INERT_WITH_TOKEN_FILES = ("data.train_frac", "data.tokenizer")
MAY_CHANGE = ("only run length, intervals, device, threads, data workers and paths, logging and the end of the "
              "LR decay may change on resume")


@dataclass
class ConfigChanges:
    """How a config differs from a checkpoint's, key by key: {dotted key: (saved value, value now)}."""

    allowed: dict = field(default_factory=dict)
    refused: dict = field(default_factory=dict)


def config_changes(saved: dict, config: dict) -> ConfigChanges:
    """The one rule of what may change on resume (RESUMABLE_CHANGES; with token files on both sides
    also INERT_WITH_TOKEN_FILES). A key the checkpoint predates (added to the schema since) counts as
    the schema's default, where the config has it."""
    saved, now = flatten(saved), flatten(config)
    saved.update({k: v for k, v in flatten(to_dict(Config())).items() if k not in saved and k in now})
    inert = INERT_WITH_TOKEN_FILES if saved.get("data.source") == now.get("data.source") == "bin" else ()
    changes = ConfigChanges()
    for key in sorted(set(saved) | set(now)):
        if saved.get(key) != now.get(key):
            allowed = key.startswith(RESUMABLE_CHANGES) or key in inert
            (changes.allowed if allowed else changes.refused)[key] = (saved.get(key), now.get(key))
    return changes


def check_resumable(path: Path, state: dict, config: dict, tokenizer: dict, fingerprint: str) -> None:
    """Refuse, naming the file and the first mismatch, a checkpoint that the config cannot continue:
    other data, another tokenizer or vocabulary, or a config key that may not change."""
    if state["data_fingerprint"] != fingerprint:
        raise CheckpointError(f"{path} does not match this config: it was trained on other data "
                              f"(sha256 {state['data_fingerprint'][:12]}..., this data {fingerprint[:12]}...)")
    saved_tok, tok = state["tokenizer"], tokenizer
    if saved_tok != tok:
        what = ("the vocabulary" if saved_tok.get("name") == tok.get("name") else
                f"tokenizer {saved_tok.get('name')!r}, the config has {tok.get('name')!r}")
        raise CheckpointError(f"{path} does not match this config: it was trained with {what} "
                              f"(vocab_size {saved_tok.get('vocab_size')} vs {tok.get('vocab_size')})")
    for key, (was, now) in config_changes(state["config"], config).refused.items():
        raise CheckpointError(f"{path} does not match this config: {key} was {was!r} when it was saved, the "
                              f"config says {now!r} ({MAY_CHANGE})")


@dataclass
class ResumePlan:
    """What a start means (see the module's docstring); the trainer follows it, opening nothing."""

    kind: str = "fresh"
    """'fresh', 'resume' (continue `path`) or 'finished' (run_dir's run is done: keep it as it is)."""
    path: Optional[Path] = None
    """The checkpoint to continue (resume, finished)."""
    state: Optional[dict] = None
    """What `path` holds, opened once."""
    summary: Optional[RunSummary] = None
    """A finished run's summary.json."""
    changes: ConfigChanges = field(default_factory=ConfigChanges)
    """How the config differs from the checkpoint's."""

    @property
    def resuming(self) -> bool:
        """A checkpoint to continue (a finished run given to a Trainer directly is finished again)."""
        return self.kind != "fresh"


class OpenedOnce:
    """Checkpoints opened at most once each, by resolved path: to read their iterations and to
    continue one of them."""

    def __init__(self) -> None:
        self.states: dict[Path, dict] = {}

    def state(self, path: Path) -> dict:
        key = Path(path).resolve()
        if key not in self.states:
            self.states[key] = load_checkpoint(path)
        return self.states[key]

    def iteration(self, path: Path) -> int:
        """From an iter_NNNNNNN.pt name, else from the file."""
        number = numbered_iteration(path)
        if number is not None:
            return number
        try:
            return int(self.state(path)["iter"])
        except CheckpointError as exc:
            raise CheckpointError(f"{exc}: move it away (or resume from another checkpoint of the run)") from None


def plan_start(config: Config, run_dir: Path) -> ResumePlan:
    """What trainer.resume means in run_dir (see the module's docstring); a refusal raises RunDirTaken
    or CheckpointError."""
    run_dir, resume = Path(run_dir), config.trainer.resume
    held, opened = run_checkpoints(run_dir), OpenedOnce()
    if resume is None:
        if held:
            raise RunDirTaken(f"{run_dir} already holds a run (ckpt/: {names(held)}): continue it with "
                              f"trainer.resume=auto, or start in another hydra.run.dir")
        return ResumePlan()
    if resume == "auto" and not held:
        log.info("trainer.resume=auto: no checkpoint in %s yet, starting fresh", run_dir / "ckpt")
        return ResumePlan()
    # the newest (the first of equals: last.pt before best.pt), or the one named
    path = max(held, key=opened.iteration) if resume == "auto" else named_checkpoint(resume, run_dir, held, opened)
    state = opened.state(path)
    changes = config_changes(state["config"], to_dict(config))
    summary = finished_summary(config, run_dir, state, changes) if resume == "auto" else None
    return ResumePlan("finished" if summary else "resume", path, state, summary, changes)


def named_checkpoint(resume: str, run_dir: Path, held: list[Path], opened: OpenedOnce) -> Path:
    """trainer.resume=PATH, unless continuing it would overwrite checkpoints: another run's (run_dir
    holds a run and PATH is not in it) or its own run's later ones."""
    path = Path(resume).expanduser()
    if not path.is_file():
        raise CheckpointError(f"trainer.resume={resume}: there is no checkpoint file there")
    if held and path.resolve().parent != (run_dir / "ckpt").resolve():
        raise RunDirTaken(f"trainer.resume={resume}: {run_dir} already holds another run (ckpt/: {names(held)}), "
                          f"which resuming there would overwrite: resume into a new hydra.run.dir")
    at = opened.iteration(path) if held else 0
    newer = [p.name for p in held if opened.iteration(p) > at]
    if newer:
        raise RunDirTaken(f"trainer.resume={resume} is at iteration {at}, but {run_dir} holds later checkpoints "
                          f"({', '.join(newer)}) that continuing from it would overwrite: resume it into a new "
                          f"hydra.run.dir")
    return path


def finished_summary(config: Config, run_dir: Path, state: dict, changes: ConfigChanges) -> Optional[RunSummary]:
    """run_dir's summary when trainer.resume=auto could only finish its run again: it ran its
    trainer.max_iters, was not stopped, its newest checkpoint is its last iteration and the config
    continues it (a damaged summary: None, and the run is resumed)."""
    try:
        summary = RunSummary.read(run_dir)
    except DataError:
        return None
    if (summary is None or summary.status != "finished" or not isinstance(summary.get("iters"), int)
            or summary["iters"] < config.trainer.max_iters or changes.refused):
        return None
    return summary if state.get("iter") == summary["iters"] else None


def names(checkpoints: list[Path]) -> str:
    return ", ".join(p.name for p in checkpoints)


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
