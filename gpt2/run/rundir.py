"""A run directory belongs to one process at a time.

`RunDirLock` holds exclusive locks for as long as the run goes on: an flock on the run directory
itself, which deleting a file cannot take away (and a directory holding files cannot be deleted), and
one (`gpt2.files.FileLock`) on `<run dir>/.lock`, which records the holder (and alone guards the
directory where the filesystem refuses to lock a directory, e.g. NFS). A second process given the same
directory is refused with one line naming the holder (from `.lock`, or where that file was deleted
from Linux's /proc/locks), and the kernel drops the locks of a process that dies (SIGKILL, a crash),
so nothing is left stuck. `unique_tag` makes default run directories unique per process
(`outputs/DATE/TIME-TAG`).
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import socket
import sys
import time
from pathlib import Path
from typing import Optional

from gpt2.errors import CheckpointError, ConfigError, HarnessError, RunDirError
from gpt2.files import FileLock
from gpt2.world import World

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
    run_id = World.run_id()
    if run_id is not None:
        return f"torchrun/{run_id}"
    if World.from_env().enabled:  # each rank would pick its own directory
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
        self._lock = FileLock(self.path)
        self._dir_fd: Optional[int] = None

    def __enter__(self) -> "RunDirLock":
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if not self._lock_directory() or not self._lock.acquire(wait=False):
                raise RunDirBusy(f"run directory {self.run_dir} is in use by {self.holder()}: wait for "
                                 f"that run to end, or use another hydra.run.dir")
            os.ftruncate(self._lock.fd, 0)
            os.write(self._lock.fd, json.dumps(_holder_info()).encode())
        except BaseException as exc:
            self.__exit__()
            if isinstance(exc, OSError):
                raise dir_error(self.run_dir, exc) from None
            raise
        return self

    def _lock_directory(self) -> bool:
        """flock the run directory itself; False when another process holds it. Where the filesystem
        refuses to lock a directory (NFS), True: the .lock file alone guards it."""
        fd = os.open(self.run_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except OSError:
            os.close(fd)
            return True
        self._dir_fd = fd
        return True

    def holder(self) -> str:
        """Who holds the lock, from what it wrote into the lock file (or, where that file was deleted,
        the process Linux lists as holding the directory's lock)."""
        try:
            info = json.loads(self.path.read_text())
            return (f"pid {info['pid']} on {info['host']} (since {info['started']}: "
                    f"{info['command'][:120]})")
        except (OSError, ValueError, KeyError, TypeError):
            pid = flock_holder(self.run_dir)
        if pid is None:
            return "another process"
        deleted = "" if self.path.exists() else f"; its {LOCK_FILE} file was deleted"
        return f"pid {pid} on {socket.gethostname()} ({process_command(pid)[:120]}{deleted})"

    def __exit__(self, *exc) -> None:
        self._lock.release(remove=True)  # the file goes with the run
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = None


def flock_holder(path: Path) -> Optional[int]:
    """The pid of the process holding an flock on `path`, from Linux's /proc/locks (lines such as
    `1: FLOCK  ADVISORY  WRITE 4242 fe:00:2228579 0 EOF`, the file as major:minor:inode); None where
    there is none or no /proc/locks."""
    try:
        st = os.stat(path)
        wanted = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
        for fields in (line.split() for line in Path("/proc/locks").read_text().splitlines()):
            if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == wanted:  # not a waiter's "->"
                return int(fields[4])
    except (OSError, ValueError):
        pass
    return None


def process_command(pid: int) -> str:
    """A process's command line, from /proc ("unknown command" where it cannot be read)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "unknown command"


def _holder_info() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv)}
