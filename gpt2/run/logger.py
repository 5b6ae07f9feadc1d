"""What a run logs as it goes: metrics.jsonl (one row per logged step), loss.png, and the same rows in
Weights & Biases (gpt2/run/wandb_run.py); at the end the summary (gpt2/run/record.py).

The rows are strict JSON: a non-finite float is written as null, never as the non-standard
Infinity/NaN.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Optional

from gpt2.config import LoggerConfig
from gpt2.errors import DataError
from gpt2.files import atomic_file, atomic_write_text, strict_json
from gpt2.run.record import RunSummary
from gpt2.run.wandb_run import WandbRun, wandb_mode

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
DAMAGED_METRICS_FIX = "repair or delete the line, or move the file away to resume with a fresh log"


class RunLogger:
    """Writes one JSON row per logged step to metrics.jsonl (flushed each time) and mirrors it to W&B;
    `finish` writes summary.json and closes W&B. Use as a context manager so W&B is always closed.

    Resuming from a checkpoint of iteration `resume_from` drops the rows logged after it (they are
    logged again, identically, by the resumed run) and continues the W&B run `wandb_id`."""

    def __init__(self, cfg: LoggerConfig, run_dir: Path, config: dict,
                 resume_from: Optional[int] = None, wandb_id: Optional[str] = None):
        mode = wandb_mode(cfg)  # a W&B setup that cannot work is refused before the run's files change
        self.run_dir = Path(run_dir)
        self.rows: list[dict] = []
        if resume_from is not None:
            self.rows = [r for r in read_metrics(self.run_dir) if r["iter"] <= resume_from]
            write_metrics(self.run_dir, self.rows)
        # a fresh start replaces rows that a run killed before its first checkpoint left behind
        self._metrics = open(self.run_dir / METRICS_FILE, "a" if resume_from is not None else "w",
                             encoding="utf-8")
        self.wandb: Optional[WandbRun] = None
        if mode is not None:
            try:
                self.wandb = WandbRun(cfg, self.run_dir, config, wandb_id, mode=mode)
            except BaseException:
                self._metrics.close()
                raise

    @property
    def wandb_id(self) -> Optional[str]:
        return self.wandb.run.id if self.wandb is not None else None

    def log(self, row: dict) -> None:
        self.rows.append(row)
        self._metrics.write(strict_json(row) + "\n")
        self._metrics.flush()
        if self.wandb is not None:
            self.wandb.log(row)

    def finish(self, summary: dict) -> None:
        RunSummary(summary).write(self.run_dir)
        if self.rows:
            plot_losses(self.rows, self.run_dir / "loss.png")
        if self.wandb is not None:
            self.wandb.finish(summary)
            self.wandb = None

    def __enter__(self) -> "RunLogger":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._metrics.close()
        if self.wandb is not None:  # finish() was not reached: an error is propagating
            self.wandb.abort()


class NoLogger:
    """RunLogger's stand-in on the other ranks of a torchrun run: only rank 0 writes and logs."""

    wandb_id = None

    def log(self, row: dict) -> None:
        pass

    def finish(self, summary: dict) -> None:
        pass

    def __enter__(self) -> "NoLogger":
        return self

    def __exit__(self, *exc) -> None:
        pass


def write_metrics(run_dir: Path, rows: list[dict]) -> None:
    """Replace run_dir/metrics.jsonl with these rows, atomically."""
    atomic_write_text(Path(run_dir) / METRICS_FILE, "".join(strict_json(r) + "\n" for r in rows))


def read_metrics(run_dir: Path, fix: str = DAMAGED_METRICS_FIX) -> list[dict]:
    """The rows of run_dir/metrics.jsonl ([] without one). A last line cut short by a kill mid-write is
    dropped (the resumed run logs it again); any other line that is not a row is a DataError whose
    message ends with `fix`, what the reader should do about it."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    lines = [(n, line) for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
             if line.strip()]
    rows = []
    for n, line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if n == lines[-1][0]:
                break
            raise DataError(f"{path} line {n} is not JSON (damaged?): {fix}") from None
        if not isinstance(row, dict) or type(row.get("iter")) is not int:
            raise DataError(f"{path} line {n} is not a metrics row (a JSON object with an integer "
                            f"\"iter\"): {fix}")
        rows.append(row)
    return rows


def plot_losses(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for key, style in (("train_loss", "-"), ("val_loss", "o-")):
        points = [(r["iter"], r[key]) for r in rows if r.get(key) is not None and math.isfinite(r[key])]
        if points:
            ax.plot(*zip(*points), style, label=key.replace("_", " "), markersize=4)
    ax.set_xlabel("iteration")
    ax.set_ylabel("cross-entropy loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_file(path) as out:  # never half a PNG
        fig.savefig(out, format="png", dpi=100)
    plt.close(fig)
