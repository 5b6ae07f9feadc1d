"""What every script under scripts/ shares: `run_script` (a user error is one line, Ctrl-C one line)
and the checks of their own options."""

import argparse
import sys
from typing import Callable

from gpt2.errors import ConfigError, error_line


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
