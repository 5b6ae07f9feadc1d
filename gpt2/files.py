"""File helpers: content hashes, atomic writes that a crash or a kill never leaves half done, strict
JSON, and the one file lock (`FileLock`) that run directories, sweeps and token files all use."""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import tempfile
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator, Optional


_UMASK = os.umask(0)
os.umask(_UMASK)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    return sha256_bytes(Path(path).read_bytes())


class _RecordedWrites:
    """The file `atomic_file` yields: its write() and flush() remember the first OSError they raised,
    since a writer such as torch.save reports one (a full disk) as a RuntimeError of its own. Anything
    else is the file's."""

    def __init__(self, file: BinaryIO):
        self.file = file
        self.error: Optional[OSError] = None

    def write(self, data) -> int:
        return self._recorded(self.file.write, data)

    def flush(self) -> None:
        self._recorded(self.file.flush)

    def sync(self) -> None:
        """Flush and fsync now (atomic_file does it before its rename anyway): for a writer that needs
        the bytes on disk before it renames several files together."""
        self._recorded(lambda: (self.file.flush(), os.fsync(self.file.fileno())))

    def _recorded(self, operation: Callable, *args) -> Any:
        try:
            return operation(*args)
        except OSError as exc:
            self.error = self.error or exc
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self.file, name)


def _naming(exc: OSError, path: Path) -> OSError:
    """`exc` as the same error about `path` (what a user must free or fix), e.g. a full disk."""
    return OSError(exc.errno, exc.strerror, str(path)) if exc.errno is not None else exc


@contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """A binary file to write `path` through: a temporary file in the same directory, flushed, fsynced
    and renamed over `path` on success, so readers (and a crash mid-write) never see half a file.
    Whatever fails, the temporary file is removed and `path` is left as it was; a write, flush, fsync
    or rename that fails (a full disk at any byte) raises its OSError naming `path`, whatever error the
    code writing into the file made of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    f = _RecordedWrites(os.fdopen(fd, "wb"))
    try:
        try:
            os.fchmod(fd, 0o666 & ~_UMASK)  # as open() would create it (mkstemp makes it 0600)
            yield f
        except Exception as exc:
            if f.error is None:
                raise
            raise _naming(f.error, path) from exc
        if f.error is not None:  # a write failed, and the code writing ignored it: never a partial file
            raise _naming(f.error, path)
        _commit(f.file, tmp, path)
    except BaseException:
        with suppress(OSError):
            f.file.close()  # flushing what a full disk refused fails again
        Path(tmp).unlink(missing_ok=True)
        raise


def _commit(file: BinaryIO, tmp: str, path: Path) -> None:
    """Flush, fsync and close the temporary file and rename it over `path`."""
    try:
        file.flush()
        os.fsync(file.fileno())
        file.close()
        os.replace(tmp, path)
    except OSError as exc:
        raise _naming(exc, path) from exc


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_file(path) as f:
        f.write(data)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def remove_stale_temporaries(directory: Path) -> None:
    """Delete the temporary files of atomic writes that a killed process left in `directory`."""
    for stale in Path(directory).glob(".*.tmp"):
        stale.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------ strict JSON
def finite_or_none(value: Any) -> Any:
    """`value` with every non-finite float, in dicts and lists at any depth, replaced by None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value


def read_json(path: Path) -> tuple[bool, Any]:
    """(whether the file is there, its JSON value): (False, None) without a file, (True, None) for
    one that cannot be read or is not JSON; what a damaged value means is the caller's to say."""
    path = Path(path)
    if not path.is_file():
        return False, None
    try:
        return True, json.loads(path.read_text())
    except (OSError, ValueError):
        return True, None


def shown(value: Any, limit: int = 40) -> str:
    """A value from a JSON file as a message shows it (true, null, "16"), cut to `limit` characters."""
    text = json.dumps(value, default=repr)
    return text if len(text) <= limit else text[:limit] + "..."


def strict_json(value: Any, indent: int | None = None) -> str:
    """Standard JSON (no Infinity/NaN literals, which strict parsers refuse): non-finite floats become null."""
    return json.dumps(finite_or_none(value), indent=indent, allow_nan=False)


# ------------------------------------------------------------------------------------- file locks
class FileLock:
    """An exclusive `flock` on `path` (the file is created if needed).
    The kernel drops the lock of a process that dies (SIGKILL, a crash), so nothing is left stuck.
    `with FileLock(path):` waits for it; `acquire(wait=False)` returns False at once when another
    process holds it. `release(remove=True)` deletes the file while still holding the lock: a process
    that was waiting on the old file notices (another inode) and opens the new one."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.fd: Optional[int] = None
        """The open lock file while the lock is held (its holder may write into it)."""

    def acquire(self, wait: bool = True) -> bool:
        mode = fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB)
        while self.fd is None:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, mode)
            except BlockingIOError:
                os.close(fd)
                return False
            if _same_file(fd, self.path):  # not a lock file its last holder removed meanwhile
                self.fd = fd
            else:
                os.close(fd)
        return True

    def release(self, remove: bool = False) -> None:
        if self.fd is not None:
            if remove:
                self.path.unlink(missing_ok=True)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> "FileLock":
        self.acquire(wait=True)
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def locked_elsewhere(path: Path) -> bool:
    """Whether a process holds an exclusive lock on `path` now (False where there is no such file or
    it cannot be opened; nothing is created)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
    return False


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False
