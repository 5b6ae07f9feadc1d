"""What a run records: metrics.jsonl, summary.json, loss.png, and the same rows in Weights & Biases.

W&B is imported lazily and never prompts: logger.mode=auto logs online only when credentials are
configured (WANDB_API_KEY or a netrc entry from `wandb login`) and offline otherwise, with the mode
fixed before init so that an offline run makes no network call.
"""

from __future__ import annotations

import json
import logging
import math
import netrc
import os
from pathlib import Path
from typing import Optional
from urllib.parse import urlparse

from gpt2.config import LoggerConfig
from gpt2.files import atomic_write_text
from gpt2.errors import ConfigError

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"


def wandb_credentials_configured() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def resolve_wandb_mode(mode: str) -> str:
    if mode == "auto":
        return "online" if wandb_credentials_configured() else "offline"
    if mode == "online" and not wandb_credentials_configured():
        raise ConfigError("logger.mode: 'online' needs W&B credentials (set WANDB_API_KEY or run "
                          "`wandb login`); use logger.mode=offline or logger=none")
    return mode


class WandbRun:
    """A W&B run in `run_dir/wandb`. A failed online init falls back to offline (nothing is lost:
    `wandb sync` uploads it later) instead of stopping training."""

    def __init__(self, cfg: LoggerConfig, run_dir: Path, config: dict, run_id: Optional[str] = None):
        import wandb

        mode = resolve_wandb_mode(cfg.mode)
        kwargs = dict(project=cfg.project, entity=cfg.entity, group=cfg.group, name=cfg.name,
                      tags=list(cfg.tags) or None, config=config, dir=str(run_dir),
                      id=run_id, resume="allow" if run_id else None)  # a resumed run keeps its id
        try:
            self.run = self._init(wandb, mode, kwargs)
        except Exception as exc:  # wandb raises many types on network trouble
            if mode != "online":
                raise
            log.warning("W&B online init failed (%s); logging offline instead", exc)
            self.run = self._init(wandb, "offline", kwargs)
        self.mode = self.run.settings.mode

    @staticmethod
    def _init(wandb, mode: str, kwargs: dict):
        settings = wandb.Settings(mode=mode, silent=True, console="off", init_timeout=30)
        wandb.setup(settings=settings)  # before init: the mode decides whether anything calls out
        return wandb.init(settings=settings, reinit="finish_previous", **kwargs)

    def log(self, row: dict) -> None:
        self.run.log({k: v for k, v in row.items() if k != "iter"}, step=row["iter"])

    def finish(self, summary: dict) -> None:
        self.run.summary.update(summary)
        self.run.finish()

    def abort(self) -> None:
        self.run.finish(exit_code=1)


class RunLogger:
    """Writes one JSON row per logged step to metrics.jsonl (flushed each time) and mirrors it to W&B;
    `finish` writes summary.json and closes W&B. Use as a context manager so W&B is always closed.

    Resuming from a checkpoint of iteration `resume_from` drops the rows logged after it (they are
    logged again, identically, by the resumed run) and continues the W&B run `wandb_id`."""

    def __init__(self, cfg: LoggerConfig, run_dir: Path, config: dict,
                 resume_from: Optional[int] = None, wandb_id: Optional[str] = None):
        self.run_dir = Path(run_dir)
        self.rows: list[dict] = []
        if resume_from is not None:
            self.rows = [r for r in read_metrics(self.run_dir) if r["iter"] <= resume_from]
            atomic_write_text(self.run_dir / METRICS_FILE, "".join(json.dumps(r) + "\n" for r in self.rows))
        # a fresh start replaces rows that a run killed before its first checkpoint left behind
        self._metrics = open(self.run_dir / METRICS_FILE, "a" if resume_from is not None else "w",
                             encoding="utf-8")
        self.wandb: Optional[WandbRun] = None
        if cfg.backend == "wandb" and cfg.mode != "disabled":
            self.wandb = WandbRun(cfg, self.run_dir, config, wandb_id)

    @property
    def wandb_id(self) -> Optional[str]:
        return self.wandb.run.id if self.wandb is not None else None

    def log(self, row: dict) -> None:
        self.rows.append(row)
        self._metrics.write(json.dumps(row) + "\n")
        self._metrics.flush()
        if self.wandb is not None:
            self.wandb.log(row)

    def finish(self, summary: dict) -> None:
        write_summary(self.run_dir, summary)
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


def write_summary(run_dir: Path, summary: dict) -> None:
    atomic_write_text(Path(run_dir) / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    rows = []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    for n, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if n < len(lines) - 1:
                raise
            # a last line cut short by a kill mid-write: it is logged again on resume
    return rows


def plot_losses(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for key, style in (("train_loss", "-"), ("val_loss", "o-")):
        points = [(r["iter"], r[key]) for r in rows if key in r and math.isfinite(r[key])]
        if points:
            ax.plot(*zip(*points), style, label=key.replace("_", " "), markersize=4)
    ax.set_xlabel("iteration")
    ax.set_ylabel("cross-entropy loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
