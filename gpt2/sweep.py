"""Hyperparameter sweeps: an Optuna study driven through ask/tell, and reading a sweep's results.

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
import re
from pathlib import Path
from typing import Any, Callable, Optional

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from gpt2.config import OptunaConfig, flatten
from gpt2.errors import HarnessError
from gpt2.logging import write_summary

log = logging.getLogger(__name__)

OVERRIDES_FILE = "overrides.json"


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


def write_failure(job_dir: Path, exc: Exception) -> None:
    """Log a failed sweep job (with the traceback in train.log when it is not a user error) and mark
    its summary.json failed, so reports list it with its one-line reason."""
    reason = str(exc) if isinstance(exc, HarnessError) else f"{type(exc).__name__}: {exc}"
    if isinstance(exc, HarnessError):
        log.error("%s failed: %s", job_dir.name, reason)
    else:
        log.exception("%s failed: %s", job_dir.name, reason)
    write_summary(job_dir, {"status": "failed", "error": reason})


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


# --------------------------------------------------------------------------- reading a sweep
def _job_overrides(job_dir: Path) -> list[str]:
    hydra_file = job_dir / ".hydra" / "overrides.yaml"
    if (job_dir / OVERRIDES_FILE).is_file():
        return json.loads((job_dir / OVERRIDES_FILE).read_text())
    if hydra_file.is_file():
        return list(OmegaConf.load(hydra_file))
    return []


def _number(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def collect_jobs(sweep_dir: Path) -> list[dict]:
    """Every job (Hydra multirun job or Optuna trial) under sweep_dir that left a summary.json, with
    its overrides split into {key: value}; only keys whose value differs between jobs are `swept`."""
    jobs = []
    for summary_file in sorted(Path(sweep_dir).rglob("summary.json")):
        job_dir = summary_file.parent
        summary = json.loads(summary_file.read_text())
        overrides = dict(o.split("=", 1) for o in _job_overrides(job_dir) if "=" in o)
        jobs.append({"job": str(job_dir.relative_to(sweep_dir)), "summary": summary,
                     "overrides": {k.lstrip("+~"): _number(v) for k, v in overrides.items()}})
    keys = {k for job in jobs for k in job["overrides"]}
    swept = sorted(k for k in keys if len({repr(job["overrides"].get(k)) for job in jobs}) > 1
                   and not k.startswith("hydra."))
    for job in jobs:
        job["swept"] = {k: job["overrides"].get(k) for k in swept}
    return sorted(jobs, key=_sort_key)


def _sort_key(job: dict):
    value = job["summary"].get("best_val_loss")
    failed = job["summary"].get("status") == "failed" or value is None or not math.isfinite(value)
    return (failed, value if not failed else 0.0, job["job"])


def format_table(jobs: list[dict]) -> str:
    rows = [("rank", "job", "best val", "tokens/s", "wall s", "overrides")]
    for rank, job in enumerate(jobs, 1):
        s = job["summary"]
        swept = " ".join(f"{k}={v}" for k, v in job["swept"].items())
        if s.get("status") == "failed":
            rows.append((str(rank), job["job"], "FAILED", "-", "-", f"{swept}  ({s.get('error', '')})"))
            continue
        rows.append((str(rank), job["job"], f"{s['best_val_loss']:.4f}", f"{s['tokens_per_sec']:.0f}",
                     f"{s['wall_s']:.1f}", swept + ("  (stopped)" if s.get("stopped_by") else "")))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:5], widths)) + "  " + r[5] for r in rows)


def plot_sweep(jobs: list[dict], path: Path) -> None:
    """Best val loss against each swept parameter (one panel per parameter)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [j for j in jobs if j["summary"].get("status") != "failed"
          and math.isfinite(j["summary"].get("best_val_loss", math.inf))]
    keys = list(jobs[0]["swept"]) if jobs else []
    fig, axes = plt.subplots(1, max(1, len(keys)), figsize=(4.5 * max(1, len(keys)), 3.8), squeeze=False)
    for ax, key in zip(axes[0], keys or [None]):
        if key is None:
            ax.plot(range(len(ok)), [j["summary"]["best_val_loss"] for j in ok], "o")
            ax.set_xlabel("job")
        else:
            values = [j["swept"][key] for j in ok]
            losses = [j["summary"]["best_val_loss"] for j in ok]
            if all(isinstance(v, (int, float)) for v in values):
                ax.plot(values, losses, "o")
                if values and min(values) > 0 and max(values) / min(values) >= 10:
                    ax.set_xscale("log")
            else:
                labels = sorted({str(v) for v in values})
                ax.plot([labels.index(str(v)) for v in values], losses, "o")
                ax.set_xticks(range(len(labels)), labels)
            ax.set_xlabel(key)
        ax.set_ylabel("best val loss")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def sweep_group(sweep_dir: str) -> str:
    """A W&B group name for a sweep directory: multirun/2026-11-26/01-02-03 -> 2026-11-26_01-02-03."""
    parts = [p for p in Path(sweep_dir).parts if p not in ("multirun", "/", ".", "..")]
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", "_".join(parts[-2:]) or "sweep")


class SweepReport(Callback):
    """Hydra callback (conf/config.yaml: hydra.callbacks): records each job's returned objective in
    <sweep dir>/results.jsonl and, when a multirun ends, prints the sorted table and writes
    sweep_report.png there (what scripts/sweep_report.py does for any sweep directory)."""

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        hydra_cfg = job_return.hydra_cfg.hydra
        if str(hydra_cfg.mode) != "RunMode.MULTIRUN":
            return
        ok = job_return.status.name == "COMPLETED"
        value = job_return._return_value
        row = {"job": Path(hydra_cfg.runtime.output_dir).name, "overrides": list(job_return.overrides),
               "status": job_return.status.name,
               "objective": value if ok and isinstance(value, float) and math.isfinite(value) else None,
               "error": None if ok else str(value)}
        with open(Path(hydra_cfg.sweep.dir) / "results.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        jobs = collect_jobs(sweep_dir)
        if jobs:
            plot_sweep(jobs, sweep_dir / "sweep_report.png")
            failed = sum(j["summary"].get("status") == "failed" for j in jobs)
            print(f"\nsweep {sweep_dir} ({len(jobs)} runs), best first:\n{format_table(jobs)}"
                  + (f"\n{failed} of {len(jobs)} jobs failed (see their train.log)" if failed else ""))

