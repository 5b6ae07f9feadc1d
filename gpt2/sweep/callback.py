"""The Hydra callback of a multirun (conf/config.yaml: hydra.callbacks.sweep_report)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from gpt2.sweep.report import collect_jobs, format_table, plot_sweep


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
