"""What a run logs as it goes: metrics.jsonl (one row per logged step), samples.jsonl (one row per
text sample), loss.png, and the same rows in the loggers logger.backend names: Weights & Biases
(gpt2/run/wandb_run.py), TensorBoard (gpt2/run/tensorboard_log.py) and metrics.csv
(gpt2/run/csv_log.py); at the end the summary (gpt2/run/record.py).

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
from gpt2.run.csv_log import CSV_FILE, CsvLog
from gpt2.run.record import RunSummary
from gpt2.run.tensorboard_log import TENSORBOARD_DIR, TensorBoardLog, check_tensorboard
from gpt2.run.wandb_run import WandbRun, check_wandb_env, wandb_mode

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
SAMPLES_FILE = "samples.jsonl"
DAMAGED_METRICS_FIX = "repair or delete the line, or move the file away to resume with a fresh log"
TITLE_CHARS = 100  # loss.png's title is one line


def check_logger_env(cfg: LoggerConfig) -> None:
    """Refuse, as one line and before any slow work, a logger that cannot work here: W&B's settings
    and credentials (`check_wandb_env`) and, for logger.backend with tensorboard, its package."""
    check_wandb_env(cfg)
    if "tensorboard" in cfg.backends:
        check_tensorboard()


class RunLogger:
    """Writes one JSON row per logged step to metrics.jsonl and one per sample to samples.jsonl (each
    flushed as it comes) and mirrors them to the loggers of logger.backend; `finish` writes
    summary.json and loss.png and closes them. Use as a context manager so they are always closed.

    Resuming from a checkpoint of iteration `resume_from` drops the rows (metrics and samples) logged
    after it (they are logged again, identically, by the resumed run), continues the W&B run
    `wandb_id`, and hides TensorBoard's points after it."""

    def __init__(self, cfg: LoggerConfig, run_dir: Path, config: dict,
                 resume_from: Optional[int] = None, wandb_id: Optional[str] = None):
        mode = wandb_mode(cfg)  # a logger that cannot work is refused before the run's files change
        if "tensorboard" in cfg.backends:
            check_tensorboard()
        self.run_dir, self.config = Path(run_dir), config
        metrics, samples = restart_rows(self.run_dir, resume_from)
        self.metrics = RowFile(self.run_dir / METRICS_FILE, metrics)
        self.samples = RowFile(self.run_dir / SAMPLES_FILE, samples)
        self.wandb: Optional[WandbRun] = None
        self.sinks: list = []  # the loggers of logger.backend: log, log_sample, finish, abort
        try:
            if mode is not None:
                self.wandb = WandbRun(cfg, self.run_dir, config, wandb_id, mode=mode, samples=samples)
                self.sinks.append(self.wandb)
            if "tensorboard" in cfg.backends:
                self.sinks.append(TensorBoardLog(self.run_dir, resume_from, metrics, samples))
            if "csv" in cfg.backends:
                self.sinks.append(CsvLog(self.run_dir, metrics))
        except BaseException:
            self.__exit__(None, None, None)
            raise
        log.info("%s", self.where(cfg))

    @property
    def rows(self) -> list[dict]:
        """The metrics rows of the run so far (a resumed run's start with those it kept)."""
        return self.metrics.rows

    @property
    def wandb_id(self) -> Optional[str]:
        return self.wandb.run.id if self.wandb is not None else None

    def where(self, cfg: LoggerConfig) -> str:
        """The start-up line saying where the metrics go (W&B says where its run is itself)."""
        line = f"metrics: {self.metrics.path}"
        if "csv" in cfg.backends:
            line += f" (+ csv: {self.run_dir / CSV_FILE})"
        if "tensorboard" in cfg.backends:
            line += f" (+ tensorboard: {self.run_dir / TENSORBOARD_DIR}; tensorboard --logdir {self.run_dir})"
        return line

    def log(self, row: dict) -> None:
        """One metrics row: {"iter": int, <name>: number or None, ...}."""
        self.metrics.append(row)
        for sink in self.sinks:
            sink.log(row)

    def log_sample(self, row: dict) -> None:
        """One text sample: {"iter": int, "prompt": str, "text": str}, to samples.jsonl, W&B's
        `samples` table (every sample so far) and TensorBoard's `samples` text."""
        self.samples.append(row)
        for sink in self.sinks:
            sink.log_sample(row)

    def finish(self, summary: dict) -> None:
        RunSummary(summary).write(self.run_dir)
        if self.rows:
            plot_losses(self.rows, self.run_dir / "loss.png", run_title(self.run_dir, self.config))
        sinks, self.sinks, self.wandb = self.sinks, [], None
        for sink in sinks:
            sink.finish(summary)

    def __enter__(self) -> "RunLogger":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.metrics.close()
        self.samples.close()
        sinks, self.sinks = self.sinks, []
        for sink in sinks:  # finish() was not reached: an error is propagating
            sink.abort()


class NoLogger:
    """RunLogger's stand-in on the other ranks of a torchrun run: only rank 0 writes and logs."""

    wandb_id = None

    def log(self, row: dict) -> None:
        pass

    def log_sample(self, row: dict) -> None:
        pass

    def finish(self, summary: dict) -> None:
        pass

    def __enter__(self) -> "NoLogger":
        return self

    def __exit__(self, *exc) -> None:
        pass


class RowFile:
    """An append-only JSON-lines file of rows, each with an integer "iter" (metrics.jsonl,
    samples.jsonl): every row is written and flushed as it comes; the file is made by its first row."""

    def __init__(self, path: Path, rows: list[dict]):
        self.path, self.rows, self._file = path, rows, None

    def append(self, row: dict) -> None:
        if self._file is None:
            self._file = open(self.path, "a", encoding="utf-8")
        self.rows.append(row)
        self._file.write(strict_json(row) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def restart_rows(run_dir: Path, resume_from: Optional[int]) -> tuple[list[dict], list[dict]]:
    """The metrics and samples rows a run starts with, written back to metrics.jsonl and
    samples.jsonl: on resume those up to `resume_from`, on a fresh start none (replacing rows that a
    run killed before its first checkpoint left behind). Both files are read before either is
    rewritten, so a damaged line (a DataError) changes nothing."""
    paths = (run_dir / METRICS_FILE, run_dir / SAMPLES_FILE)
    kept = [[] if resume_from is None else [r for r in read_rows(path) if r["iter"] <= resume_from]
            for path in paths]
    for path, rows in zip(paths, kept):
        if rows or path.exists():
            write_rows(path, rows)
    return kept[0], kept[1]


def copy_history(source_dir: Path, run_dir: Path, upto: int) -> None:
    """Start run_dir's metrics.jsonl and samples.jsonl with source_dir's rows up to iteration `upto`
    (a run resumed from another directory's checkpoint), never with rows run_dir held before."""
    for name in (METRICS_FILE, SAMPLES_FILE):
        rows = [r for r in read_rows(Path(source_dir) / name) if r["iter"] <= upto]
        if rows or (Path(run_dir) / name).exists():
            write_rows(Path(run_dir) / name, rows)


def write_rows(path: Path, rows: list[dict]) -> None:
    """Replace the JSON-lines file `path` with these rows, atomically."""
    atomic_write_text(Path(path), "".join(strict_json(r) + "\n" for r in rows))


def write_metrics(run_dir: Path, rows: list[dict]) -> None:
    """Replace run_dir/metrics.jsonl with these rows, atomically."""
    write_rows(Path(run_dir) / METRICS_FILE, rows)


def read_metrics(run_dir: Path, fix: str = DAMAGED_METRICS_FIX) -> list[dict]:
    """The rows of run_dir/metrics.jsonl ([] without one); see `read_rows`."""
    return read_rows(Path(run_dir) / METRICS_FILE, fix)


def read_samples(run_dir: Path, fix: str = DAMAGED_METRICS_FIX) -> list[dict]:
    """The rows of run_dir/samples.jsonl ([] without one); see `read_rows`."""
    return read_rows(Path(run_dir) / SAMPLES_FILE, fix)


def read_rows(path: Path, fix: str = DAMAGED_METRICS_FIX) -> list[dict]:
    """The rows of a JSON-lines file such as metrics.jsonl ([] without one). A last line cut short by a
    kill mid-write is dropped (the resumed run logs it again); any other line that is not a row is a
    DataError whose message ends with `fix`, what the reader should do about it."""
    path = Path(path)
    if not path.is_file():
        return []
    kind = path.stem  # metrics, samples
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
            raise DataError(f"{path} line {n} is not a {kind} row (a JSON object with an integer "
                            f"\"iter\"): {fix}")
        rows.append(row)
    return rows


def run_title(run_dir: Path, config: dict) -> str:
    """loss.png's title: the run directory's name and its key settings, one line of at most
    TITLE_CHARS characters, e.g. 'baby: 4L 4H 128d, adamw lr 0.001, batch 12 x 64'."""
    model, optim, data = (config.get(k) or {} for k in ("model", "optim", "data"))
    trainer = config.get("trainer") or {}
    parts = []
    if {"n_layer", "n_head", "n_embd"} <= model.keys():
        parts.append(f"{model['n_layer']}L {model['n_head']}H {model['n_embd']}d")
    if isinstance(optim.get("lr"), (int, float)):
        parts.append(f"{optim.get('name') or ''} lr {optim['lr']:g}".strip())
    if {"batch_size", "block_size"} <= data.keys():
        accum = trainer.get("grad_accum") or 1
        parts.append(f"batch {data['batch_size']} x {data['block_size']}" + (f" x {accum} accum" if accum > 1 else ""))
    title = Path(run_dir).resolve().name + (": " + ", ".join(parts) if parts else "")
    return title if len(title) <= TITLE_CHARS else title[:TITLE_CHARS - 1] + "…"


def finite_points(rows: list[dict], key: str) -> list[tuple[int, float]]:
    """(iter, value) of the rows with a finite `key`."""
    return [(r["iter"], r[key]) for r in rows if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]


def loss_figure(rows: list[dict], title: str = ""):
    """loss.png's figure: train and val loss above, the learning rate below (a shared x axis)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 5.5))
    loss_ax, lr_ax = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    for key, style in (("train_loss", "-"), ("val_loss", "o-")):
        points = finite_points(rows, key)
        if points:
            loss_ax.plot(*zip(*points), style, label=key.replace("_", " "), markersize=4)
    loss_ax.set_title(title, fontsize=9)
    loss_ax.set_ylabel("cross-entropy loss")
    loss_ax.grid(alpha=0.3)
    if loss_ax.lines:
        loss_ax.legend()
    points = finite_points(rows, "lr")
    if points:
        lr_ax.plot(*zip(*points), "-", color="tab:green", label="lr")
    lr_ax.set_ylabel("learning rate")
    lr_ax.set_xlabel("iteration")
    lr_ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_losses(rows: list[dict], path: Path, title: str = "") -> None:
    """Write `loss_figure` as a PNG, atomically (never half a PNG)."""
    fig = loss_figure(rows, title)
    with atomic_file(path) as out:
        fig.savefig(out, format="png", dpi=100)
