"""Errors a user can cause and fix: train.py and the scripts print their one-line message and exit 1."""

import argparse
import errno
import sys
from typing import Callable, Optional


class HarnessError(Exception):
    """Base class: the message is complete and says what to do; no traceback is shown."""


class ConfigError(HarnessError, ValueError):
    """An invalid config value; the message starts with the key, e.g. 'model.n_head: ...'."""


class DataError(HarnessError):
    """Missing, unreadable, unverifiable or too-short input data (text, tokenizer files)."""


class CheckpointError(HarnessError):
    """A checkpoint that cannot be read or does not match the config."""


class RunDirError(HarnessError):
    """The run directory belongs to another run (in use, or holding its checkpoints): nothing may be
    written there."""


class NonFiniteLossError(HarnessError):
    """The training loss became NaN or inf; the message names the iteration and the last checkpoint."""


def error_line(exc: BaseException) -> Optional[str]:
    """The one line a user sees for an error they can fix (a HarnessError, or an OSError such as a
    full disk or a path that is a file), or None for a bug (whose traceback must be shown)."""
    if isinstance(exc, HarnessError):
        return str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        paths = " -> ".join(str(p) for p in (exc.filename, exc.filename2) if p is not None)
        hint = " (free some space, or write somewhere else)" if exc.errno == errno.ENOSPC else ""
        return f"{exc.strerror}: {paths}{hint}" if paths else f"{exc.strerror}{hint}"
    return None


def require_positive(args: argparse.Namespace, *options: str) -> None:
    """Refuse a script's integer options below 1: '--batches: must be at least 1, got 0'."""
    for option in options:
        value = getattr(args, option.lstrip("-").replace("-", "_"))
        if value < 1:
            raise ConfigError(f"{option}: must be at least 1, got {value}")


def int_list(text: str, option: str) -> list[int]:
    """A script's comma-separated positive integers: '16,32' -> [16, 32]; anything else one line."""
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise ConfigError(f"{option}: comma-separated integers, got {text!r}") from None
    if min(values) < 1:
        raise ConfigError(f"{option}: each must be >= 1, got {text!r}")
    return values


def run_script(main: Callable[[], None]) -> None:
    """Run a script's main(): a user error (see error_line) becomes one line on stderr and exit
    status 1; Ctrl-C one line and status 130."""
    try:
        main()
    except KeyboardInterrupt:
        print("stopped by Ctrl-C", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:
        line = error_line(exc)
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        sys.exit(1)
