"""Errors a user can cause and fix: train.py and the scripts print their one-line message and exit 1."""

import sys
from typing import Callable


class HarnessError(Exception):
    """Base class: the message is complete and says what to do; no traceback is shown."""


class ConfigError(HarnessError, ValueError):
    """An invalid config value; the message starts with the key, e.g. 'model.n_head: ...'."""


class DataError(HarnessError):
    """Missing, unreadable, unverifiable or too-short input data (text, tokenizer files)."""


class CheckpointError(HarnessError):
    """A checkpoint that cannot be read or does not match the config."""


class NonFiniteLossError(HarnessError):
    """The training loss became NaN or inf; the message names the iteration and the last checkpoint."""


def run_script(main: Callable[[], None]) -> None:
    """Run a script's main(): a HarnessError becomes one line on stderr and exit status 1."""
    try:
        main()
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
