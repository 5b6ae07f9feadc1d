"""Errors a user can cause and fix: train.py and the scripts print their one-line message and exit 1."""

import errno
from typing import Optional


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


class PeerFailed(HarnessError):
    """Under torchrun, another process of the run failed (a collective lost its peer): that process
    shows its own error, this one only stops."""


def is_out_of_memory(exc: BaseException) -> bool:
    """A failed allocation: torch's OutOfMemoryError (CUDA, MPS), a CPU allocator's RuntimeError, or
    Python's MemoryError."""
    return isinstance(exc, MemoryError) or (
        isinstance(exc, RuntimeError) and ("out of memory" in str(exc) or "can't allocate memory" in str(exc)))


def error_line(exc: BaseException) -> Optional[str]:
    """The one line a user sees for an error they can fix (a HarnessError, an OSError such as a full
    disk or a path that is a file, running out of memory), or None for a bug (whose traceback must be
    shown). The trainer says more about memory (its estimate); a script says this."""
    if isinstance(exc, HarnessError):
        return str(exc)
    if is_out_of_memory(exc):
        said = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        return (f"out of memory ({said[:200]}): lower the sizes of the work (model, batch, samples, tokens) "
                f"or use a device with more memory")
    if isinstance(exc, OSError) and exc.strerror:
        paths = " -> ".join(str(p) for p in (exc.filename, exc.filename2) if p is not None)
        hint = " (free some space, or write somewhere else)" if exc.errno == errno.ENOSPC else ""
        return f"{exc.strerror}: {paths}{hint}" if paths else f"{exc.strerror}{hint}"
    return None
