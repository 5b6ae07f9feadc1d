"""An Optuna study driven through ask/tell inside one Hydra job.

`python train.py -m hparams_search=shakespeare_optuna` composes a config whose `hparams_search` group
holds the study (OptunaConfig). train.py then calls `run_study`: each trial applies the sampled values
to the composed config, validates it, trains in its own directory (`trial_NNN/`, with its own
summary.json and W&B run, all in one W&B group) and tells Optuna its best val loss. A current Optuna
is used directly, so SQLite storage works without pinning old SQLAlchemy (see the README).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Callable, Optional

from omegaconf import DictConfig, OmegaConf

from gpt2.config import OptunaConfig, flatten
from gpt2.errors import HarnessError
from gpt2.sweep.report import OVERRIDES_FILE, write_failure

log = logging.getLogger(__name__)


def suggest(trial, key: str, spec: dict) -> Any:
    if spec["type"] == "float":
        return trial.suggest_float(key, spec["low"], spec["high"], log=spec.get("log", False))
    if spec["type"] == "int":
        return trial.suggest_int(key, spec["low"], spec["high"], step=spec.get("step", 1),
                                 log=spec.get("log", False))
    return trial.suggest_categorical(key, list(spec["choices"]))


def override_line(params: dict) -> str:
    return " ".join(f"{key}={value}" for key, value in params.items())


def run_study(cfg: DictConfig, search: OptunaConfig, run_dir: Path, train_fn: Callable[[Any, Path], dict],
              from_hydra: Callable[[DictConfig], Any], fixed: list[str]) -> dict:
    """Run the trials still missing from the study; returns the best trial as a dict, with
    `stopped_by` set when a stop signal interrupted it. `fixed` are the overrides that reproduce the
    study's trial config (they start the best-trial override line)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=search.study_name, storage=search.storage,
                                load_if_exists=True, direction=search.direction)
    # seeded, but offset by the trials so far: a continued study does not redraw its first trials
    study.sampler = optuna.samplers.TPESampler(seed=search.seed + len(study.trials))
    done = sum(counts_as_done(t) for t in study.trials)
    log.info("study %r: %d of %d trials done, running %d", study.study_name, done, search.n_trials,
             max(0, search.n_trials - done))
    stopped_by = None
    for _ in range(max(0, search.n_trials - done)):
        trial = study.ask()
        params = {key: suggest(trial, key, dict(spec)) for key, spec in search.params.items()}
        trial_dir = run_dir / f"trial_{trial.number:03d}"
        value, stopped_by = run_trial(cfg, params, trial_dir, study.study_name, train_fn, from_hydra)
        if stopped_by:  # not a failure of these parameters: a continued study runs the trial again
            trial.set_user_attr("interrupted", stopped_by)
        if value is None:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(trial, value)
        if stopped_by:
            break
    return {**report_best(study, run_dir, fixed), "stopped_by": stopped_by}


def counts_as_done(trial) -> bool:
    return trial.state.is_finished() and "interrupted" not in trial.user_attrs


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
    (trial_dir / OVERRIDES_FILE).write_text(json.dumps([f"{k}={v}" for k, v in params.items()]))
    try:
        config = from_hydra(trial_cfg)
        (trial_dir / "config.yaml").write_text(OmegaConf.to_yaml(trial_cfg, resolve=True))
        summary = train_fn(config, trial_dir)
    except Exception as exc:  # an invalid combination, a NaN, an out-of-memory: this trial fails
        write_failure(trial_dir, exc)
        return None, None
    value = summary["best_val_loss"]
    log.info("%s: best val loss %.4f with %s", trial_dir.name, value, override_line(params))
    if summary["stopped_by"] or not math.isfinite(value):
        return None, summary["stopped_by"]
    return value, None


def report_best(study, run_dir: Path, fixed: list[str]) -> dict:
    import optuna

    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise HarnessError(f"study {study.study_name!r}: no trial completed (see the trial_* folders in {run_dir})")
    best = study.best_trial
    line = " ".join([*fixed, override_line(best.params)])
    result = {"study": study.study_name, "best_trial": best.number, "best_val_loss": best.value,
              "params": best.params, "overrides": line, "trials": len(study.trials),
              "completed": len(complete)}
    (run_dir / "best_params.json").write_text(json.dumps(result, indent=2) + "\n")
    (run_dir / "best_overrides.txt").write_text(line + "\n")
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
