"""What a run records: metrics.jsonl, summary.json, loss.png, and the same rows in Weights & Biases.

W&B is imported lazily and never prompts: logger.mode=auto logs online only when credentials are
configured (WANDB_API_KEY or a netrc entry from `wandb login`) and offline otherwise, with the mode
fixed before init so that an offline run makes no network call. `check_wandb_env` refuses, in one line
and before any data or model is built, the WANDB_* variables and modes that would stop W&B later.

The files are strict JSON: a non-finite float (e.g. best_val_loss=inf before the first evaluation) is
written as null, never as the non-standard Infinity/NaN.
"""

from __future__ import annotations

import json
import logging
import math
import netrc
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlparse

from gpt2.config import LoggerConfig
from gpt2.errors import ConfigError, DataError
from gpt2.files import atomic_file, atomic_write_text

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
DAMAGED_METRICS_FIX = "repair or delete the line, or move the file away to resume with a fresh log"
WANDB_MODE_ALIASES = {"dryrun": "offline", "run": "online"}  # wandb's older names
LOGGER_SETTINGS = {"project": "project", "entity": "entity", "group": "run_group", "name": "run_name",
                   "tags": "run_tags"}  # logger.* key -> the wandb setting wandb.init makes of it


def wandb_credentials_configured() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def resolve_wandb_mode(mode: str) -> str:
    """The mode W&B runs in. An explicit logger.mode wins over WANDB_MODE (it is passed to wandb as a
    setting, which wandb ranks above the environment); logger.mode=auto follows WANDB_MODE when it is
    set (dryrun meaning offline, run online), else is online only with credentials. Online without
    credentials is refused: wandb would prompt for a key."""
    source = "logger.mode"
    if mode == "auto" and os.environ.get("WANDB_MODE"):
        mode, source = WANDB_MODE_ALIASES.get(os.environ["WANDB_MODE"], os.environ["WANDB_MODE"]), "WANDB_MODE"
    if mode == "auto":
        return "online" if wandb_credentials_configured() else "offline"
    if mode in ("online", "shared") and not wandb_credentials_configured():
        raise ConfigError(f"{source}: {mode!r} needs W&B credentials (set WANDB_API_KEY or run "
                          f"`wandb login`); use logger.mode=offline or logger=none")
    return mode


def wandb_mode(cfg: LoggerConfig) -> str | None:
    """The mode of the run's W&B run after `check_wandb_settings`, or None when W&B is off: logger=none,
    logger.mode=disabled, or logger.mode=auto with WANDB_MODE=disabled."""
    if cfg.backend != "wandb" or cfg.mode == "disabled":
        return None
    check_wandb_settings(cfg)
    mode = resolve_wandb_mode(cfg.mode)
    return None if mode == "disabled" else mode


def check_wandb_env(cfg: LoggerConfig) -> None:
    """Refuse, as a one-line ConfigError, what would stop W&B once training has been set up: a WANDB_*
    variable or logger.* value that wandb rejects, or an online mode without credentials. Checks
    nothing unless W&B logs (logger=wandb, logger.mode not disabled)."""
    wandb_mode(cfg)


def check_wandb_settings(cfg: LoggerConfig) -> None:
    """Apply each WANDB_* variable to a wandb Settings the way wandb.setup does, then the logger.* values
    that wandb.init takes; the first value wandb rejects becomes a ConfigError naming it."""
    from wandb.sdk.wandb_settings import Settings

    settings = Settings()
    for name, value in os.environ.items():
        if name.startswith("WANDB_"):
            with _refused(f"{name}={value!r}", " (or unset it)"):
                settings.update_from_env_vars({name: value})
    for key, setting in LOGGER_SETTINGS.items():
        value = getattr(cfg, key)
        if value:
            with _refused(f"logger.{key}={value!r}"):
                setattr(settings, setting, list(value) if key == "tags" else value)


@contextmanager
def _refused(what: str, hint: str = "") -> Iterator[None]:
    """Turn wandb refusing a setting into a ConfigError: '<what> is not valid: <what wandb wants><hint>'."""
    from pydantic import ValidationError
    from wandb.errors import UsageError

    try:
        yield
    except (ValidationError, UsageError) as exc:
        raise ConfigError(f"{what} is not valid: {_settings_reason(exc)}{hint}") from None


def _settings_reason(exc: Exception) -> str:
    """What wandb's Settings want instead, in a few words."""
    from pydantic import ValidationError

    if not isinstance(exc, ValidationError):
        return str(exc)
    error = exc.errors()[0]
    if error["type"] == "literal_error":
        return "use " + error["ctx"]["expected"].replace("'", "")
    if error["type"] == "bool_parsing":
        return "use true or false"
    return error["msg"].removeprefix("Value error, ")


def _wandb_settings_error(cfg: LoggerConfig, exc: Exception) -> ConfigError:
    """The ConfigError for a Settings error raised inside wandb.setup/init: the WANDB_* variable or
    logger.* value at fault when one is, else the setting wandb names."""
    check_wandb_settings(cfg)
    error = exc.errors()[0]
    setting = ".".join(str(part) for part in error["loc"])
    return ConfigError(f"W&B setting {setting}={error.get('input')!r} is not valid: {_settings_reason(exc)}")


class WandbRun:
    """A W&B run in `run_dir/wandb`, in `mode` (see `wandb_mode`). A failed online init falls back to
    offline (nothing is lost: `wandb sync` uploads it later) instead of stopping training."""

    def __init__(self, cfg: LoggerConfig, run_dir: Path, config: dict,
                 run_id: Optional[str] = None, *, mode: str):
        import wandb
        from pydantic import ValidationError

        kwargs = dict(project=cfg.project, entity=cfg.entity, group=cfg.group, name=cfg.name,
                      tags=list(cfg.tags) or None, config=config, dir=str(run_dir),
                      id=run_id, resume="allow" if run_id else None)  # a resumed run keeps its id
        try:
            self.run = self._init(wandb, mode, kwargs)
        except ValidationError as exc:  # a setting that check_wandb_settings did not see
            raise _wandb_settings_error(cfg, exc) from None
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


def finite_or_none(value: Any) -> Any:
    """`value` with every non-finite float, in dicts and lists at any depth, replaced by None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value


def strict_json(value: Any, indent: int | None = None) -> str:
    """Standard JSON (no Infinity/NaN literals, which strict parsers refuse): non-finite floats become null."""
    return json.dumps(finite_or_none(value), indent=indent, allow_nan=False)


def write_metrics(run_dir: Path, rows: list[dict]) -> None:
    """Replace run_dir/metrics.jsonl with these rows, atomically."""
    atomic_write_text(Path(run_dir) / METRICS_FILE, "".join(strict_json(r) + "\n" for r in rows))


def write_summary(run_dir: Path, summary: dict) -> None:
    atomic_write_text(Path(run_dir) / SUMMARY_FILE, strict_json(summary, indent=2) + "\n")


def read_metrics(run_dir: Path) -> list[dict]:
    """The rows of run_dir/metrics.jsonl ([] without one). A last line cut short by a kill mid-write is
    dropped (the resumed run logs it again); any other line that is not a row is a DataError."""
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
            raise DataError(f"{path} line {n} is not JSON (damaged?): {DAMAGED_METRICS_FIX}") from None
        if not isinstance(row, dict) or type(row.get("iter")) is not int:
            raise DataError(f"{path} line {n} is not a metrics row (a JSON object with an integer "
                            f"\"iter\"): {DAMAGED_METRICS_FIX}")
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
