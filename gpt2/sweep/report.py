"""Reading a sweep: every job's summary.json and overrides, a table sorted by best val loss, a PNG of
val loss against each swept parameter. Works on Hydra multirun
directories (jobs 0/, 1/, ...) and Optuna studies (trial_NNN/ folders) alike."""

from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

from gpt2.errors import DataError
from gpt2.files import atomic_file
from gpt2.run.record import SUMMARY_FILE, RunSummary

log = logging.getLogger(__name__)

OVERRIDES_FILE = "overrides.json"


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


def collect_jobs(sweep_dir: Path) -> list[dict]:
    """Every job (Hydra multirun job or Optuna trial) under sweep_dir that left a summary.json, with
    its overrides split into {key: value}; only keys whose value differs between jobs are `swept`."""
    jobs = []
    for summary_file in sorted(Path(sweep_dir).rglob(SUMMARY_FILE)):
        job_dir = summary_file.parent
        summary = _job_summary(job_dir)
        if summary is None:
            continue
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


def plot_sweep(jobs: list[dict], path: Path) -> None:
    """Best val loss against each swept parameter (one panel per parameter)."""
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
    with atomic_file(path) as out:  # never half a PNG
        fig.savefig(out, format="png", dpi=100)
    plt.close(fig)


def sweep_group(sweep_dir: str) -> str:
    """A W&B group name for a sweep directory: multirun/2026-11-26/01-02-03 -> 2026-11-26_01-02-03."""
    parts = [p for p in Path(sweep_dir).parts if p not in ("multirun", "/", ".", "..")]
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", "_".join(parts[-2:]) or "sweep")
