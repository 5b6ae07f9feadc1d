"""Weights & Biases: the checks of its environment and settings, and the W&B run a run logs to.

W&B is imported lazily and never prompts: logger.mode=auto logs online only when credentials are
configured (WANDB_API_KEY or a netrc entry from `wandb login`) and offline otherwise, with the mode
fixed before init so that an offline run makes no network call. `check_wandb_env` refuses, in one line
and before any data or model is built, the WANDB_* variables and modes that would stop W&B later. An
online run whose server cannot be reached (`wandb_unreachable`: at most REACH_TIMEOUT_S seconds, DNS
included) logs offline at once, in one warning line that says where and how to sync it, rather than
waiting for W&B's init timeout.
"""

from __future__ import annotations

import logging
import netrc
import os
import socket
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Optional
from urllib.parse import urlparse

from gpt2.config import LoggerConfig
from gpt2.errors import ConfigError

log = logging.getLogger(__name__)

WANDB_MODE_ALIASES = {"dryrun": "offline", "run": "online"}  # wandb's older names
SAMPLE_COLUMNS = ("iter", "prompt", "text")  # the W&B table of samples
DEFAULT_BASE_URL = "https://api.wandb.ai"
REACH_TIMEOUT_S = 3.0  # the reachability check before an online init
INIT_TIMEOUT_S = 30  # wandb.init's own, once the server answered
LOGGER_SETTINGS = {"project": "project", "entity": "entity", "group": "run_group", "name": "run_name",
                   "tags": "run_tags"}  # logger.* key -> the wandb setting wandb.init makes of it


def wandb_credentials_configured() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", DEFAULT_BASE_URL)).hostname
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
    """The mode of the run's W&B run after `check_wandb_settings`, or None when W&B is off: a
    logger.backend without wandb, logger.mode=disabled, or logger.mode=auto with WANDB_MODE=disabled."""
    if "wandb" not in cfg.backends or cfg.mode == "disabled":
        return None
    check_wandb_settings(cfg)
    mode = resolve_wandb_mode(cfg.mode)
    return None if mode == "disabled" else mode


def check_wandb_env(cfg: LoggerConfig) -> None:
    """Refuse, as a one-line ConfigError, what would stop W&B once training has been set up: a WANDB_*
    variable or logger.* value that wandb rejects, or an online mode without credentials. Checks
    nothing unless W&B logs (logger.backend with wandb, logger.mode not disabled)."""
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


def wandb_endpoint() -> tuple[str, int, str]:
    """(host, port, what to call it) of the first hop to W&B's server (WANDB_BASE_URL, else
    api.wandb.ai): the proxy the environment names for it, if any, else the server."""
    import urllib.request

    url = urlparse(os.environ.get("WANDB_BASE_URL", DEFAULT_BASE_URL))
    proxy = urllib.request.getproxies().get(url.scheme)
    hop, what = url, ""
    if proxy and not urllib.request.proxy_bypass(url.hostname or ""):
        hop, what = urlparse(proxy if "://" in proxy else f"http://{proxy}"), "proxy "
    port = hop.port or (80 if hop.scheme == "http" else 443)
    return hop.hostname or "", port, f"{what}{hop.hostname}:{port}"


def wandb_unreachable(timeout: float = REACH_TIMEOUT_S) -> Optional[str]:
    """Why W&B's server cannot be reached (see wandb_endpoint), or None when a TCP connection to it
    opens within `timeout` seconds, name lookup included (in a thread: getaddrinfo has no timeout)."""
    host, port, what = wandb_endpoint()
    outcome: list[Optional[str]] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except OSError as exc:
            outcome.append("its name does not resolve" if isinstance(exc, socket.gaierror)
                           else exc.strerror or str(exc) or type(exc).__name__)

    thread = threading.Thread(target=connect, daemon=True, name="wandb-reachable")
    thread.start()
    thread.join(timeout)
    if outcome and outcome[0] is None:
        return None
    return f"{what} cannot be reached ({outcome[0] if outcome else f'no answer within {timeout:g} s'})"


class WandbRun:
    """A W&B run in `run_dir/wandb`, in `mode` (see `wandb_mode`). An online run whose server cannot be
    reached, or whose init fails, logs offline instead (nothing is lost: `wandb sync` uploads it later)
    rather than stopping training. `samples`: the rows of samples.jsonl a resumed run kept, the start
    of its `samples` table."""

    def __init__(self, cfg: LoggerConfig, run_dir: Path, config: dict,
                 run_id: Optional[str] = None, *, mode: str, samples: Sequence[dict] = ()):
        kwargs = dict(project=cfg.project, entity=cfg.entity, group=cfg.group, name=cfg.name,
                      tags=list(cfg.tags) or None, config=config, dir=str(run_dir),
                      id=run_id, resume="allow" if run_id else None)  # a resumed run keeps its id
        offline_because = self._start(cfg, mode, kwargs)
        self.mode = self.run.settings.mode
        self.samples = [[row[c] for c in SAMPLE_COLUMNS] for row in samples]
        if offline_because is not None:
            log.warning("W&B online: %s; logging offline instead. %s", offline_because, self.where())
        else:
            log.info("%s", self.where())

    def _start(self, cfg: LoggerConfig, mode: str, kwargs: dict) -> Optional[str]:
        """Start self.run; returns why an online run went offline instead (None when it did not)."""
        import wandb
        from pydantic import ValidationError

        unreachable = wandb_unreachable() if mode == "online" else None
        if mode == "online" and unreachable is None:
            log.info("W&B online: connecting (offline instead if it does not answer within %d s)", INIT_TIMEOUT_S)
        try:
            self.run = self._init(wandb, "offline" if unreachable else mode, kwargs)
        except ValidationError as exc:  # a setting that check_wandb_settings did not see
            raise _wandb_settings_error(cfg, exc) from None
        except Exception as exc:  # wandb raises many types on network trouble
            if mode != "online" or unreachable:
                raise
            self.run = self._init(wandb, "offline", kwargs)
            return f"init failed ({exc})"
        return unreachable

    def where(self) -> str:
        """Where the run is: its URL online, its directory and the command that uploads it offline."""
        if self.mode == "offline":
            return f"W&B offline: {self.run.settings.sync_dir}; sync with: wandb sync {self.run.settings.sync_dir}"
        return f"W&B {self.mode}: {self.run.url}"

    @staticmethod
    def _init(wandb, mode: str, kwargs: dict):
        settings = wandb.Settings(mode=mode, silent=True, console="off", init_timeout=INIT_TIMEOUT_S)
        wandb.setup(settings=settings)  # before init: the mode decides whether anything calls out
        return wandb.init(settings=settings, reinit="finish_previous", **kwargs)

    def log(self, row: dict) -> None:
        self.run.log({k: v for k, v in row.items() if k != "iter"}, step=row["iter"])

    def log_sample(self, row: dict) -> None:
        """The `samples` table at step row["iter"], holding every sample so far (W&B shows the table
        of a key's last step)."""
        import wandb

        self.samples.append([row[c] for c in SAMPLE_COLUMNS])
        table = wandb.Table(columns=list(SAMPLE_COLUMNS), data=[list(s) for s in self.samples])
        self.run.log({"samples": table}, step=row["iter"])

    def finish(self, summary: dict) -> None:
        self.run.summary.update(summary)
        self.run.finish()

    def abort(self) -> None:
        self.run.finish(exit_code=1)
