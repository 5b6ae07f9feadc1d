"""The Hydra callback of a multirun (conf/config.yaml: hydra.callbacks.sweep_report)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Optional

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from gpt2.errors import DataError
from gpt2.files import FileLock, atomic_write_text
from gpt2.run.record import RunSummary, sweep_continue_command
from gpt2.signals import STOP
from gpt2.sweep.report import collect_jobs, format_table, plot_sweep
from gpt2.train.checkpoint import run_checkpoints


def job_failure(job_dir: Path) -> Optional[str]:
    """The error a job's summary.json records (train.py marks failed jobs there), or None (also for a
    job without one: an Optuna study's job writes best_params.json instead)."""
    try:
        summary = RunSummary.read(job_dir)
    except DataError as exc:
        return str(exc)
    return summary.error if summary is not None else None


def read_results(path: Path) -> list[dict]:
    """The rows of a results.jsonl (a damaged line is dropped: the file is rewritten whole each time)."""
    rows = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return [r for r in rows if isinstance(r, dict)]


class SweepReport(Callback):
    """Hydra callback (conf/config.yaml: hydra.callbacks): records each job's returned objective in
    <sweep dir>/results.jsonl and, when a multirun ends, prints the sorted table and writes
    sweep_report.png there (what scripts/sweep_report.py does for any sweep directory)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = config.hydra.sweep.dir
        held = sorted(p for job in Path(sweep_dir).glob("*/") for p in run_checkpoints(job))
        if held and config.trainer.resume is None:  # refused before Hydra rewrites its multirun.yaml
            # Hydra turns a callback's exception into a warning: end the process here, in one line
            raise SystemExit(f"error: hydra.sweep.dir={sweep_dir} already holds a sweep's runs ({held[0]}, ...): "
                             f"continue it with trainer.resume=auto, or use another hydra.sweep.dir")
        command = sweep_continue_command(Path(sweep_dir), list(config.hydra.overrides.task))
        STOP.context = (f"during sweep {sweep_dir} (the jobs that finished are in its results.jsonl): continue "
                        f"it with: {command}")

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        hydra_cfg = job_return.hydra_cfg.hydra
        if str(hydra_cfg.mode) != "RunMode.MULTIRUN":
            return
        job_dir = Path(hydra_cfg.runtime.output_dir)
        value = job_return._return_value
        failure = (job_failure(job_dir) if job_return.status.name == "COMPLETED"
                   else str(value) or type(value).__name__)
        row = {"job": job_dir.name, "overrides": list(job_return.overrides),
               "status": "FAILED" if failure else "COMPLETED",
               "objective": value if not failure and isinstance(value, float) and math.isfinite(value) else None,
               "error": failure}
        results = Path(config.hydra.sweep.dir) / "results.jsonl"  # resolved as the job's directory was
        with FileLock(results.with_name(".results.lock")):  # parallel jobs (joblib) write it too
            rows = [r for r in read_results(results) if r.get("job") != row["job"]]  # a rerun replaces its row
            atomic_write_text(results, "".join(json.dumps(r) + "\n" for r in rows + [row]))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        jobs = collect_jobs(sweep_dir)
        if jobs:
            plot_sweep(jobs, sweep_dir / "sweep_report.png")
            failed = sum(j["summary"].status == "failed" for j in jobs)
            print(f"\nsweep {sweep_dir} ({len(jobs)} runs), best first:\n{format_table(jobs)}"
                  + (f"\n{failed} of {len(jobs)} jobs failed (see their train.log)" if failed else ""))
