"""Token files: a directory of `train.bin` and `val.bin` (flat little-endian uint16 token ids, nanoGPT's
layout) and `manifest.json` (what made them), as `scripts/prepare.py` writes them.

`TokenFile` maps one file read-only and shows it as a torch.int16 tensor (the same bytes: torch's
int16 kernels exist in every release, its uint16 ones only in recent ones), so the Dataset gathers
windows from it as from tokens in memory and widens them to int64 with `& 0xFFFF` (`WIDEN`).

Pages a batch touched stay mapped into the process (counted in its RSS) until released: every
`RELEASE_BYTES` of windows read, the mapping drops them (madvise(MADV_DONTNEED): they stay in the
kernel's page cache, shared and free to evict), so resident memory stays bounded by what recent
batches touched, never the file's size. nanoGPT re-creates its
np.memmap for every batch for the same reason (its issue #287); dropping the pages costs one syscall per
`RELEASE_BYTES`, not a mapping per batch.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import warnings
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from gpt2.errors import DataError
from gpt2.files import locked_elsewhere

FORMAT = "gpt2-harness-tokens/1"
MANIFEST = "manifest.json"
MARKER = ".prepare-unfinished"
"""In a token directory while prepare renames its finished files into place: they are not finished."""
LOCK = ".prepare.lock"
"""Held by a running prepare; its presence marks a directory prepare wrote."""
SPLITS = ("train.bin", "val.bin")
DTYPE = np.uint16
WIDEN = 0xFFFF
"""int16 -> int64 then & WIDEN gives back the uint16 id."""
MAX_VOCAB = int(np.iinfo(DTYPE).max) + 1
RELEASE_BYTES = 64 << 20
FAULT_AROUND = 128 << 10
"""What reading one window may map in: the kernel maps the cached pages around each fault too (its
fault-around, 64 KiB by default; 128 KiB per window was measured here)."""
CHECK_TOKENS = 1 << 22
"""Token ids checked against the vocabulary when a file is opened (the file's first 8 MB)."""


class TokenFile:
    """One uint16 token file, memory-mapped read-only: `tokens` (its bytes as a 1-D torch.int16 tensor,
    no copy; `ids()` reads int64 ids), `len()`, and `touched()`, which releases the mapped pages
    every RELEASE_BYTES read.
    Pickles as its path (a DataLoader worker started by spawn maps the file itself)."""

    def __init__(self, path: Path, release_bytes: int = RELEASE_BYTES):
        self.path = Path(path)
        self.release_bytes = release_bytes
        self._open()

    def _open(self) -> None:
        path = self.path
        try:
            size = path.stat().st_size
            if size == 0 or size % 2:
                raise DataError(f"{path} is not a uint16 token file ({size} bytes{', an odd number' if size else ''}): "
                                f"make it with scripts/prepare.py")
            with open(path, "rb") as f:
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except FileNotFoundError:
            raise DataError(f"{path} does not exist: data.dir must hold {' and '.join(SPLITS)} "
                            f"(make them with scripts/prepare.py)") from None
        except OSError as exc:
            raise DataError(f"{path} cannot be mapped ({exc.strerror})") from None
        if hasattr(mmap, "MADV_RANDOM"):  # windows are read at random: no read-ahead around each one
            self._map.madvise(mmap.MADV_RANDOM)
        with warnings.catch_warnings():  # read-only on purpose: nothing writes to the tokens
            warnings.simplefilter("ignore", UserWarning)
            self.tokens = torch.from_numpy(np.frombuffer(self._map, dtype=np.int16))
        self._unreleased = 0

    def __len__(self) -> int:
        return len(self.tokens)

    def touched(self, windows: int, nbytes: int) -> None:
        """Count what `windows` reads of `nbytes` each mapped in; past release_bytes, drop the pages."""
        self._unreleased += windows * (nbytes + FAULT_AROUND)
        if self._unreleased >= self.release_bytes:
            self.release()

    def release(self) -> None:
        if hasattr(mmap, "MADV_DONTNEED"):
            self._map.madvise(mmap.MADV_DONTNEED)
        self._unreleased = 0

    def ids(self, start: int = 0, stop: Optional[int] = None) -> torch.Tensor:
        """Tokens [start, stop) as int64 ids (a copy)."""
        return self.tokens[start:stop].long() & WIDEN

    def max_token(self, count: int = CHECK_TOKENS) -> int:
        max_id = int(self.ids(0, count).max())
        self.release()
        return max_id

    def __getstate__(self) -> dict:
        return {"path": self.path, "release_bytes": self.release_bytes}

    def __setstate__(self, state: dict) -> None:
        self.path, self.release_bytes = state["path"], state["release_bytes"]
        self._open()


def read_manifest(directory: Path) -> Optional[dict]:
    """The directory's manifest, or None where there is none (files made by nanoGPT's prepare scripts)."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
        valid = (manifest["format"] == FORMAT and isinstance(manifest["tokenizer"]["name"], str)
                 and all(isinstance(manifest["files"][name]["tokens"], int) for name in SPLITS))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path} cannot be read ({type(exc).__name__}: {exc}): run scripts/prepare.py again") from None
    if not valid:
        raise DataError(f"{path} is not a manifest of {FORMAT} (format {manifest['format']!r}): "
                        f"run scripts/prepare.py again")
    return manifest


def prepare_running(directory: Path) -> bool:
    """Whether a scripts/prepare.py holds the directory's lock now."""
    return locked_elsewhere(Path(directory) / LOCK)


def quick_fingerprint(paths: list[Path], sample: int = 1 << 20) -> str:
    """A fingerprint of large files without reading them whole: names, sizes, first and last MiB."""
    digest = hashlib.sha256()
    for path in paths:
        size = path.stat().st_size
        digest.update(f"{path.name}:{size}:".encode())
        with open(path, "rb") as f:
            digest.update(f.read(sample))
            f.seek(max(0, size - sample))
            digest.update(f.read(sample))
    return digest.hexdigest()
