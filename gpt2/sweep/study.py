"""An Optuna study driven through ask/tell inside one Hydra job.

`python train.py -m hparams_search=shakespeare_optuna` composes a config whose `hparams_search` group
holds the study (OptunaConfig). train.py then calls `run_study`: each trial applies the sampled values
to the composed config, validates it, trains in its own directory (`trial_NNN/`, with its own
summary.json and W&B run, all in one W&B group) and tells Optuna its best val loss. A current Optuna
is used directly, so SQLite storage works without pinning old SQLAlchemy (see docs/sweeps.md).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Callable, Optional

from omegaconf import DictConfig, OmegaConf

from gpt2.config import OptunaConfig, flatten
from gpt2.errors import ConfigError, HarnessError, RunDirError
from gpt2.files import atomic_write_text
from gpt2.run.record import record_failure
from gpt2.run.rundir import RunDirTaken
from gpt2.signals import STOP
from gpt2.sweep.report import OVERRIDES_FILE, STUDY_FILE, TRIAL_DIR_ATTR, read_study_file

log = logging.getLogger(__name__)
RERUN_OF = "rerun_of"
"""The user attribute of a trial that reruns an interrupted one's parameters: that trial's number."""


def suggest(trial, key: str, spec: dict) -> Any:
    if spec["type"] == "float":
        return trial.suggest_float(key, spec["low"], spec["high"], step=spec.get("step"), log=spec.get("log", False))
    if spec["type"] == "int":
        return trial.suggest_int(key, spec["low"], spec["high"], step=spec.get("step", 1),
                                 log=spec.get("log", False))
    return trial.suggest_categorical(key, list(spec["choices"]))


def override_line(params: dict) -> str:
    return " ".join(f"{key}={value}" for key, value in params.items())


def open_study(search: OptunaConfig):
    """The study (created, or loaded from hparams_search.storage); a storage that cannot be opened is
    one ConfigError."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.create_study(study_name=search.study_name, storage=search.storage,
                                   load_if_exists=True, direction=search.direction)
    except Exception as exc:  # sqlalchemy, optuna and OS errors alike, by URL and by damage
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"hparams_search.storage={search.storage!r} cannot be opened ({detail}); use a "
                          f"URL such as sqlite:///optuna.db") from None


def run_study(cfg: DictConfig, search: OptunaConfig, run_dir: Path, train_fn: Callable[[Any, Path], dict],
              from_hydra: Callable[[DictConfig], Any], fixed: list[str]) -> dict:
    """Run the trials still missing from the study; returns the best trial as a dict, with
    `stopped_by` set when a stop signal interrupted it. `fixed` are the overrides that reproduce the
    study's trial config (they start the best-trial override line). A signal at any moment leaves
    every trial it started told (an interrupted one as FAIL, so a continued study runs it again)."""
    study = open_study(search)
    record_study(run_dir, study.study_name, search.storage)
    # seeded, but offset by the trials so far: a continued study does not redraw its first trials
    study.sampler = optuna_sampler(search.seed + len(study.trials))
    done = sum(counts_as_done(t) for t in study.trials)
    rerun = requeue_interrupted(study, search) if done < search.n_trials else []
    log.info("study %r: %d of %d trials done, running %d%s", study.study_name, done, search.n_trials,
             max(0, search.n_trials - done), f" (first again: interrupted trial {', '.join(rerun)})" if rerun else "")
    stopped_by = None
    with STOP.deferred():  # a signal between trials ends the study after telling it what finished
        while done < search.n_trials and not stopped_by:
            _, stopped_by = run_told_trial(study, search, cfg, run_dir, train_fn, from_hydra)
            done += stopped_by is None
            stopped_by = stopped_by or STOP.received  # also a signal after a trial's last iteration
    return {**report_best(study, run_dir, fixed, stopped_by), "stopped_by": stopped_by}


def record_study(run_dir: Path, name: str, storage: Optional[str]) -> None:
    """STUDY_FILE in the study's directory: its name and storage (a relative SQLite path made absolute),
    by which the sweep report finds the trials a continued study ran in other directories. A directory
    that records another study is RunDirTaken: one directory, one study."""
    path = storage.removeprefix("sqlite:///") if storage and storage.startswith("sqlite:///") else ""
    if path and not path.startswith(("/", ":memory:")):  # relative to this process's working directory
        storage = "sqlite:///" + str(Path(path).resolve())
    record, held = {"study_name": name, "storage": storage}, read_study_file(run_dir)
    if held is not None and held != record:
        raise RunDirTaken(f"{run_dir} already holds study {held['study_name']!r} (storage "
                          f"{held['storage']}): run this study in another hydra.sweep.dir")
    atomic_write_text(run_dir / STUDY_FILE, json.dumps(record) + "\n")


def optuna_sampler(seed: int):
    import optuna

    return optuna.samplers.TPESampler(seed=seed)


def run_told_trial(study, search: OptunaConfig, cfg: DictConfig, run_dir: Path, train_fn, from_hydra
                   ) -> tuple[Optional[float], Optional[str]]:
    """Ask for a trial, train it and tell the study how it went, whatever stops it (see run_trial)."""
    import optuna

    trial = study.ask()
    trial_dir = run_dir / f"trial_{trial.number:03d}"
    value, stopped_by, finished = None, None, False
    try:
        if trial_dir.is_dir() and any(trial_dir.iterdir()):  # another study's trial of the same number
            raise RunDirTaken(f"{trial_dir} already holds a trial of another study: run this study in another "
                              f"hydra.sweep.dir")
        trial.set_user_attr(TRIAL_DIR_ATTR, str(trial_dir.resolve()))  # the report finds it from any directory
        params = {key: suggest(trial, key, dict(spec)) for key, spec in search.params.items()}
        value, stopped_by = run_trial(cfg, params, trial_dir=trial_dir, group=study.study_name,
                                      train_fn=train_fn, from_hydra=from_hydra)
        finished = True
    finally:
        interrupted = stopped_by if finished else (STOP.received or "an interruption")
        if interrupted:  # not a failure of these parameters: a continued study runs the trial again
            trial.set_user_attr("interrupted", interrupted)
        study.tell(trial, value) if value is not None else study.tell(trial, state=optuna.trial.TrialState.FAIL)
    return value, stopped_by


def counts_as_done(trial) -> bool:
    """A finished trial counts towards n_trials unless a stop interrupted it (its rerun counts instead)."""
    return trial.state.is_finished() and "interrupted" not in trial.user_attrs


def requeue_interrupted(study, search: OptunaConfig) -> list[str]:
    """Enqueue once, ahead of any new draw, the parameters of each trial a stop interrupted: told FAIL
    and marked `interrupted` (Ctrl-C, SIGTERM), or left RUNNING (a kill; one process runs a study at a
    time). Its rerun records RERUN_OF, so a later continuation enqueues it no more. A parameter the
    search no longer holds, or whose value is outside its range now, is drawn anew. Returns the numbers
    of the trials enqueued."""
    import optuna

    rerun = {t.user_attrs.get(RERUN_OF) for t in study.trials}
    enqueued = []
    for trial in study.trials:
        cut = "interrupted" in trial.user_attrs or trial.state == optuna.trial.TrialState.RUNNING
        params = {k: v for k, v in trial.params.items() if k in search.params and fits(search.params[k], v)}
        if cut and params and trial.number not in rerun:
            study.enqueue_trial(params, user_attrs={RERUN_OF: trial.number}, skip_if_exists=False)
            enqueued.append(str(trial.number))
    return enqueued


def fits(spec: dict, value: Any) -> bool:
    """Whether the search spec can draw `value` (an interrupted trial's, rerun after a change of search)."""
    if spec["type"] == "categorical":
        return value in list(spec["choices"])
    return spec["low"] <= value <= spec["high"]


def run_trial(cfg: DictConfig, params: dict, trial_dir: Path, group: str, train_fn, from_hydra
              ) -> tuple[Optional[float], Optional[str]]:
    """Train one trial; (best val loss, or None if it failed or was stopped; the stop signal)."""
    trial_cfg = cfg.copy()
    for key, value in params.items():
        OmegaConf.update(trial_cfg, key, value, merge=False)
    trial_cfg.hparams_search = None
    trial_cfg.logger.group = trial_cfg.logger.group or group
    trial_cfg.logger.name = trial_cfg.logger.name or f"{group}-{trial_dir.name}"
    trial_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(trial_dir / OVERRIDES_FILE, json.dumps([f"{k}={v}" for k, v in params.items()]))
    try:
        config = from_hydra(trial_cfg)
        atomic_write_text(trial_dir / "config.yaml", OmegaConf.to_yaml(trial_cfg, resolve=True))
        summary = train_fn(config, trial_dir)
    except RunDirError:
        raise  # not this trial's failure: nothing may be written into that directory
    except Exception as exc:  # an invalid combination, a NaN, an out-of-memory: this trial fails
        record_failure(trial_dir, exc)
        return None, None
    value = summary["best_val_loss"]
    log.info("%s: best val loss %.4f with %s", trial_dir.name, value, override_line(params))
    if summary["stopped_by"] or not math.isfinite(value):
        return None, summary["stopped_by"]
    return value, None


def report_best(study, run_dir: Path, fixed: list[str], stopped_by: Optional[str] = None) -> dict:
    """Print and save the best trial. No completed trial is an error, unless a stop came first."""
    import optuna

    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        if stopped_by:
            return {"study": study.study_name, "best_val_loss": math.inf, "completed": 0}
        raise HarnessError(f"study {study.study_name!r}: no trial completed (see the trial_* folders in {run_dir})")
    best = study.best_trial
    line = " ".join([*fixed, override_line(best.params)])
    result = {"study": study.study_name, "best_trial": best.number, "best_val_loss": best.value,
              "params": best.params, "overrides": line, "trials": len(study.trials),
              "completed": len(complete)}
    atomic_write_text(run_dir / "best_params.json", json.dumps(result, indent=2) + "\n")
    atomic_write_text(run_dir / "best_overrides.txt", line + "\n")
    print(f"best trial {best.number} of {len(study.trials)}: best val loss {best.value:.4f}\n"
          f"  python train.py {line}\n  (saved in {run_dir / 'best_overrides.txt'})")
    return result


def _override_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_override_value(v) for v in value) + "]"
    return str(value)


def study_fixed_overrides(cfg: DictConfig, task_overrides: list[str]) -> list[str]:
    """Overrides that give the study's trial config without hparams_search: the user's own overrides
    plus every value the hparams_search config set (e.g. its data and run length). Call inside the
    Hydra app (it composes the config without the search for comparison)."""
    from hydra import compose

    own = [o for o in task_overrides if not o.lstrip("+~").startswith("hparams_search")]
    plain = flatten(OmegaConf.to_container(compose(config_name="config", overrides=own), resolve=False))
    study = flatten(OmegaConf.to_container(cfg, resolve=False))
    changed = [f"{key}={_override_value(value)}" for key, value in study.items()
               if not key.startswith("hparams_search") and plain.get(key, value) != value]
    return own + changed
