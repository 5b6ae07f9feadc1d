"""A run directory belongs to one process at a time.

`RunDirLock` holds an exclusive `flock` on `<run dir>/.lock` for as long as the run goes on: a second
process given the same directory is refused with one line naming the holder, and the kernel drops the
lock of a process that dies (SIGKILL, a crash), so nothing is left stuck. `unique_tag` makes default
run directories unique per process (`outputs/DATE/TIME-TAG`).
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

from gpt2.errors import CheckpointError, ConfigError, HarnessError, RunDirError

LOCK_FILE = ".lock"
TAG_ENV = "GPT2_RUN_TAG"
STAMP_ENV = "GPT2_RUN_STAMP"


def unique_tag() -> str:
    """A short random tag (resolver `${unique_tag:}` in conf/), the same for the whole process and the
    processes it starts (a joblib launcher's workers resolve the sweep directory again)."""
    return os.environ.setdefault(TAG_ENV, secrets.token_hex(2))


def run_stamp() -> str:
    """DATE/TIME-TAG, the default run directory under outputs/ (resolver `${run_stamp:}`). Under
    torchrun every rank resolves it on its own, so it is then `torchrun/<run id>`, the id all ranks
    share (`--standalone` draws one per launch; multi-node launches pass `--rdzv_id`)."""
    run_id = os.environ.get("TORCHELASTIC_RUN_ID", "none")
    if run_id != "none":
        return f"torchrun/{run_id}"
    if int(os.environ.get("WORLD_SIZE", 1)) > 1:  # each rank would pick its own directory
        raise ConfigError("under torchrun without --standalone or --rdzv_id the ranks cannot agree on a "
                          "default run directory: set hydra.run.dir")
    return os.environ.setdefault(STAMP_ENV, f"{time.strftime('%Y-%m-%d/%H-%M-%S')}-{unique_tag()}")


class RunDirBusy(RunDirError):
    """Another live process owns the run directory."""


class RunDirTaken(RunDirError, CheckpointError):
    """The run directory holds checkpoints that starting or resuming there would overwrite."""


def dir_error(run_dir: Path, exc: OSError) -> HarnessError:
    """One line for a run directory that cannot be created or written."""
    what = "is a file, not a directory" if isinstance(exc, (FileExistsError, NotADirectoryError)) else exc.strerror
    return HarnessError(f"run directory {run_dir} cannot be used ({what}: {exc.filename}); "
                        f"set hydra.run.dir to a writable directory")


class RunDirLock:
    """`with RunDirLock(run_dir):` owns run_dir (created if needed) or raises RunDirBusy."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self._fd: Optional[int] = None

    def __enter__(self) -> "RunDirLock":
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            while self._fd is None:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    raise RunDirBusy(f"run directory {self.run_dir} is in use by {self.holder()}: wait for "
                                     f"that run to end, or use another hydra.run.dir") from None
                if _same_file(fd, self.path):  # not a lock file its last owner removed meanwhile
                    self._fd = fd
                else:
                    os.close(fd)
            os.ftruncate(self._fd, 0)
            os.write(self._fd, json.dumps(_holder_info()).encode())
        except OSError as exc:
            self.__exit__()
            raise dir_error(self.run_dir, exc) from None
        return self

    def holder(self) -> str:
        """Who holds the lock, from what it wrote into the lock file."""
        try:
            info = json.loads(self.path.read_text())
            return (f"pid {info['pid']} on {info['host']} (since {info['started']}: "
                    f"{info['command'][:120]})")
        except (OSError, ValueError, KeyError, TypeError):
            return "another process"

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            self.path.unlink(missing_ok=True)  # while still holding it: a waiter re-checks the inode
            os.close(self._fd)
            self._fd = None


@contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Wait for, then hold, an exclusive flock on `path` (created if needed): for a read-modify-write
    of a file that parallel processes share."""
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def _holder_info() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv)}
