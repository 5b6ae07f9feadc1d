"""Reading a sweep: every job's summary.json and overrides, a table sorted by best val loss, a PNG of
val loss against each swept parameter. Works on Hydra multirun
directories (jobs 0/, 1/, ...) and Optuna studies (trial_NNN/ folders) alike; a stored study continued
in other multirun directories is read whole, its trials found through its storage."""

from __future__ import annotations

import json
import logging
import math
import os
import re
from pathlib import Path
from typing import Any, Optional

import yaml
from omegaconf import OmegaConf

from gpt2.errors import DataError
from gpt2.files import atomic_file, read_json
from gpt2.run.record import SUMMARY_FILE, RunSummary

log = logging.getLogger(__name__)

OVERRIDES_FILE = "overrides.json"
STUDY_FILE = "study.json"
"""In an Optuna study's directory: {"study_name", "storage"} (written by gpt2.sweep.study.record_study)."""
TRIAL_DIR_ATTR = "trial_dir"
"""The user attribute in which each trial of a study records its directory (absolute) in the storage."""


def _job_overrides(job_dir: Path) -> list[str]:
    """The job's overrides, as written (interpolations unresolved); [] without a file, and [] with a
    warning naming it when the file is damaged (the job is still reported)."""
    path = job_dir / OVERRIDES_FILE
    if not path.is_file():
        path = job_dir / ".hydra" / "overrides.yaml"
        if not path.is_file():
            return []
    try:
        overrides = (json.loads(path.read_text()) if path.suffix == ".json"
                     else OmegaConf.to_container(OmegaConf.load(path)))
    except (OSError, ValueError, yaml.YAMLError):
        overrides = None
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        log.warning("%s is not a list of overrides (damaged?): the job is reported without them", path)
        return []
    return overrides


def _job_summary(job_dir: Path) -> RunSummary | None:
    """The job's summary.json, or None with a warning naming it when it is damaged."""
    try:
        return RunSummary.read(job_dir)
    except DataError as exc:
        log.warning("%s: the job is left out of the report", exc)
        return None


def _number(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def read_study_file(study_dir: Path) -> Optional[dict]:
    """An Optuna study directory's STUDY_FILE; None without one (a Hydra job's folder, a study run before
    it was written), and None with a warning naming it when it is damaged."""
    path = Path(study_dir) / STUDY_FILE
    there, study = read_json(path)
    if not there:
        return None
    if (not isinstance(study, dict) or not isinstance(study.get("study_name"), str)
            or not isinstance(study.get("storage"), (str, type(None)))):
        log.warning("%s is not a study record (damaged?): its study is read from this directory only", path)
        return None
    return study


def stored_trial_dirs(name: str, storage: str) -> dict[int, Path]:
    """The directory of each trial of a stored study by trial number, as its trials recorded them
    (TRIAL_DIR_ATTR); {} with a warning when the storage is gone or cannot be read."""
    import optuna

    path = storage.removeprefix("sqlite:///").split("?")[0] if storage.startswith("sqlite:///") else None
    try:
        if path is not None and not Path(path).is_file():  # opening it would create an empty one
            raise FileNotFoundError(f"no file {path}")
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        trials = optuna.load_study(study_name=name, storage=storage).trials
    except Exception as exc:  # sqlalchemy, optuna and OS errors alike
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        log.warning("study %r: storage %s cannot be read (%s): only its trials under the given directory "
                    "are reported", name, storage, detail)
        return {}
    return {t.number: Path(t.user_attrs[TRIAL_DIR_ATTR]) for t in trials
            if isinstance(t.user_attrs.get(TRIAL_DIR_ATTR), str)}


def job_dirs(sweep_dir: Path) -> list[Path]:
    """Every job directory (holding a summary.json) of the sweep, each once: those under sweep_dir, then
    the trials of its stored studies that ran elsewhere (a continued study's other multirun
    directories). A trial is one job however many directories hold it (one study, one trial number)."""
    studies: dict[Path, Optional[dict]] = {}
    found: dict[Any, Path] = {}  # (study, storage, trial number) or, for any other job, its path
    for summary_file in sorted(sweep_dir.rglob(SUMMARY_FILE)):
        job_dir = summary_file.parent
        if job_dir.parent not in studies:
            studies[job_dir.parent] = read_study_file(job_dir.parent)
        study, number = studies[job_dir.parent], re.fullmatch(r"trial_(\d+)", job_dir.name)
        stored = study is not None and study.get("storage") and number
        found.setdefault((study["study_name"], study["storage"], int(number[1])) if stored
                         else job_dir.resolve(), job_dir)
    seen = {d.resolve() for d in found.values()}
    stored_studies = {(s["study_name"], s["storage"]) for s in studies.values() if s and s.get("storage")}
    for name, storage in sorted(stored_studies):
        for number, trial_dir in sorted(stored_trial_dirs(name, storage).items()):
            if (trial_dir / SUMMARY_FILE).is_file() and trial_dir.resolve() not in seen:
                found.setdefault((name, storage, number), trial_dir)
    return list(found.values())


def log_keys(study_dir: Path) -> set[str]:
    """The keys an Optuna study draws log-uniformly (`log: true` in the hparams_search.params of the
    config.yaml train.py saved in its directory); none for a Hydra job's folder or an unreadable file."""
    path = Path(study_dir) / "config.yaml"
    try:
        config = yaml.safe_load(path.read_text()) if path.is_file() else None
    except (OSError, yaml.YAMLError):
        return set()
    search = config.get("hparams_search") if isinstance(config, dict) else None
    params = search.get("params") if isinstance(search, dict) else None
    if not isinstance(params, dict):
        return set()
    return {key for key, spec in params.items() if isinstance(spec, dict) and spec.get("log")}


def collect_jobs(sweep_dir: Path) -> list[dict]:
    """Every job (Hydra multirun job or Optuna trial, see job_dirs) of the sweep that left a summary.json,
    with its overrides split into {key: value}; only keys whose value differs between jobs are `swept`,
    and `log` holds those its study draws log-uniformly. A job elsewhere is named by its relative path."""
    jobs, logs = [], {}
    for job_dir in job_dirs(Path(sweep_dir)):
        summary = _job_summary(job_dir)
        if summary is None:
            continue
        overrides = dict(o.split("=", 1) for o in _job_overrides(job_dir) if "=" in o)
        if job_dir.parent not in logs:
            logs[job_dir.parent] = log_keys(job_dir.parent)
        jobs.append({"job": os.path.relpath(job_dir, sweep_dir), "summary": summary, "log": logs[job_dir.parent],
                     "overrides": {k.lstrip("+~"): _number(v) for k, v in overrides.items()}})
    keys = {k for job in jobs for k in job["overrides"]}
    swept = sorted(k for k in keys if len({repr(job["overrides"].get(k)) for job in jobs}) > 1
                   and not k.startswith("hydra."))
    for job in jobs:
        job["swept"] = {k: job["overrides"].get(k) for k in swept}
    return sorted(jobs, key=_sort_key)


def _sort_key(job: dict):
    value = job["summary"].get("best_val_loss")
    failed = (job["summary"].status == "failed" or not isinstance(value, (int, float))
              or not math.isfinite(value))
    return (failed, value if not failed else 0.0, job["job"])


def _fmt(value: Any, spec: str) -> str:
    """A number of a summary, or '-' where it is missing or null (not measured)."""
    return format(value, spec) if isinstance(value, (int, float)) else "-"


def format_table(jobs: list[dict]) -> str:
    rows = [("rank", "job", "best val", "tokens/s", "wall s", "overrides")]
    for rank, job in enumerate(jobs, 1):
        s = job["summary"]
        swept = " ".join(f"{k}={v}" for k, v in job["swept"].items())
        if s.status == "failed":
            rows.append((str(rank), job["job"], "FAILED", "-", "-", f"{swept}  ({s.error})"))
            continue
        rows.append((str(rank), job["job"], _fmt(s.get("best_val_loss"), ".4f"), _fmt(s.get("tokens_per_sec"), ".0f"),
                     _fmt(s.get("wall_s"), ".1f"), swept + ("  (stopped)" if s.status == "stopped" else "")))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:5], widths)) + "  " + r[5] for r in rows)


def x_axis_kind(values: list, drawn_log: bool = False) -> str:
    """How a swept key's x axis is drawn: 'categorical' unless every value is a number; 'log' for
    positive values its study drew log-uniformly or a decade or more apart; 'integer' when all are ints;
    else 'linear'."""
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return "categorical"
    if values and min(values) > 0 and (drawn_log or max(values) / min(values) >= 10):
        return "log"
    return "integer" if values and all(isinstance(v, int) for v in values) else "linear"


def _style_x_axis(ax, kind: str, values: list) -> None:
    """Ticks that do not run together: a few, labelled as '%g' (0.0003, 0.001, 1e-05); whole numbers
    only on an integer axis; on a log axis 1-2-5, 1-3 or 1 per decade as the range widens, and no
    labelled minor ticks."""
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

    decades = math.log10(max(values) / min(values)) if kind == "log" else 0.0
    if kind == "log":
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
    if decades >= 0.5:
        subs = (1, 2, 5) if decades < 1.5 else (1, 3) if decades < 3 else (1,)
        ax.xaxis.set_major_locator(LogLocator(subs=subs, numticks=7))
    else:  # a linear axis, or a log one narrower than half a decade: evenly spaced round numbers
        ax.xaxis.set_major_locator(MaxNLocator(nbins=4 if kind == "log" else 5, integer=kind == "integer"))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))


def _plot_panel(ax, key: str, ok: list[dict]) -> None:
    """Best val loss against one swept key (its x axis as x_axis_kind says)."""
    values = [j["swept"][key] for j in ok]
    losses = [j["summary"]["best_val_loss"] for j in ok]
    kind = x_axis_kind(values, any(key in j["log"] for j in ok))
    if kind == "categorical":
        labels = sorted({str(v) for v in values})
        ax.plot([labels.index(str(v)) for v in values], losses, "o")
        ax.set_xticks(range(len(labels)), labels)
    else:
        ax.plot(values, losses, "o")
        _style_x_axis(ax, kind, values)
    ax.set_xlabel(key)


def plot_sweep(jobs: list[dict], path: Path):
    """Best val loss against each swept parameter (one panel per parameter), saved as a PNG; returns the
    figure (closed, for inspection)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [j for j in jobs if not _sort_key(j)[0]]
    keys = list(jobs[0]["swept"]) if jobs else []
    fig, axes = plt.subplots(1, max(1, len(keys)), figsize=(4.5 * max(1, len(keys)), 3.8), squeeze=False)
    for ax, key in zip(axes[0], keys or [None]):
        if key is None:
            ax.plot(range(len(ok)), [j["summary"]["best_val_loss"] for j in ok], "o")
            ax.set_xlabel("job")
        else:
            _plot_panel(ax, key, ok)
        ax.set_ylabel("best val loss")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_file(path) as out:  # never half a PNG
        fig.savefig(out, format="png", dpi=100)
    plt.close(fig)
    return fig


def sweep_group(sweep_dir: str) -> str:
    """A W&B group name for a sweep directory: multirun/2026-11-26/01-02-03 -> 2026-11-26_01-02-03."""
    parts = [p for p in Path(sweep_dir).parts if p not in ("multirun", "/", ".", "..")]
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", "_".join(parts[-2:]) or "sweep")
