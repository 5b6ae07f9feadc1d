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

What a file holds is checked against its manifest's record when it is opened (`TokenFile`): its size,
and the sha256 of `PIECES` pieces of `PIECE_BYTES` spread over it (the first and the last included;
the whole file up to 1 MiB), which scripts/prepare.py records in the manifest's `checks` with the
highest token id it wrote. A file changed after prepare is refused in one line; prepare itself checks
every byte (its full sha256) before it calls a directory up to date. Files without that record
(nanoGPT's, no manifest; or a manifest written before it) are read whole once, for their highest id
(and, with a manifest, their sha256, compared with the manifest's): the result is kept beside the file
in `.<name>.checked.json`, keyed by its size, mtime and sampled hash, so later starts do not read it
again.

While a run reads a file, each batch first `check()`s it (one fstat of the open file): a file
truncated, grown or written to in place is reported in one line, never a SIGBUS from a page past its
end (a truncation in the microseconds between that check and the read can still end in SIGBUS). A
file replaced by a rename (`mv`, or prepare writing the directory again) is another inode: this run
keeps reading the file it checked at its start, and the next start checks the new one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import mmap
import os
import re
import time
import warnings
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from gpt2.errors import DataError
from gpt2.files import atomic_write_text, locked_elsewhere, read_json, shown
from gpt2.data.tokenizer import tokenizer_problem

log = logging.getLogger(__name__)

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
PIECES = 16
PIECE_BYTES = 64 << 10
"""The sampled hash: PIECES pieces of PIECE_BYTES (1 MiB in all), read at every start."""
SCAN_BYTES = 16 << 20
"""A whole-file read (highest id, sha256) goes by blocks of this size."""
AGAIN = "run scripts/prepare.py again"


class TokenFile:
    """One uint16 token file, memory-mapped read-only: `tokens` (its bytes as a 1-D torch.int16 tensor,
    no copy; `ids()` reads int64 ids), `len()`, `max_token()` (the file's highest id), `check()` (one
    fstat: refuses a file changed since it was opened) and `touched()`, which releases the mapped
    pages every RELEASE_BYTES read. Opening it checks it against its manifest's record (the module's
    docstring). Pickles as its path and what it was at the start (a DataLoader worker started by
    spawn maps the file itself, and refuses it if it changed meanwhile)."""

    def __init__(self, path: Path, release_bytes: int = RELEASE_BYTES):
        self.path = Path(path)
        self.release_bytes = release_bytes
        self._open()
        self.record = checked_record(self)
        """{bytes, max_id, sampled_sha256, pieces, piece_bytes}: the manifest's, else what was read."""

    def _open(self) -> None:
        path = self.path
        try:
            self._file = open(path, "rb", buffering=0)  # kept open: `check` fstats it before each batch
            stat = os.fstat(self._file.fileno())
            if stat.st_size == 0 or stat.st_size % 2:
                raise DataError(f"{path} is not a uint16 token file ({stat.st_size} bytes"
                                f"{', an odd number' if stat.st_size else ''}): make it with scripts/prepare.py")
            self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        except FileNotFoundError:
            raise DataError(f"{path} does not exist: data.dir must hold {' and '.join(SPLITS)} "
                            f"(make them with scripts/prepare.py)") from None
        except OSError as exc:
            raise DataError(f"{path} cannot be mapped ({exc.strerror})") from None
        self.stamp = (stat.st_size, stat.st_mtime_ns, stat.st_ino)
        if hasattr(mmap, "MADV_RANDOM"):  # windows are read at random: no read-ahead around each one
            self._map.madvise(mmap.MADV_RANDOM)
        with warnings.catch_warnings():  # read-only on purpose: nothing writes to the tokens
            warnings.simplefilter("ignore", UserWarning)
            self.tokens = torch.from_numpy(np.frombuffer(self._map, dtype=np.int16))
        self._unreleased = 0

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def fd(self) -> int:
        return self._file.fileno()

    def check(self) -> None:
        """Refuse, in one line, reading a file truncated, grown or written to since it was opened (its
        size or mtime changed): a page past its end would be a SIGBUS, a page written over other tokens."""
        stat = os.fstat(self.fd)
        if (stat.st_size, stat.st_mtime_ns, stat.st_ino) != self.stamp:
            raise DataError(f"{self.path} changed while this run was reading it ({stat.st_size:,} bytes now, "
                            f"{self.stamp[0]:,} at the start): token files must stay as they are during a run; "
                            f"put it back ({AGAIN} on the same inputs), then resume")

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
        self.check()
        return self.tokens[start:stop].long() & WIDEN

    def max_token(self) -> int:
        """The highest token id in the whole file (checked when it was opened)."""
        return self.record["max_id"]

    def __getstate__(self) -> dict:
        return {"path": self.path, "release_bytes": self.release_bytes, "stamp": self.stamp, "record": self.record}

    def __setstate__(self, state: dict) -> None:
        self.path, self.release_bytes, self.record = state["path"], state["release_bytes"], state["record"]
        self._open()
        opened, self.stamp = self.stamp, state["stamp"]
        if opened != self.stamp:  # another file at the path now, or this one changed: refused
            self.check()


# ------------------------------------------------------------------------------ what a file holds
def sample_offsets(size: int, pieces: int, piece_bytes: int) -> list[int]:
    """Where the sampled pieces start: `pieces` spread evenly, the first at 0 and the last at the end
    (every piece, so the whole file, where it is no bigger than them all)."""
    if size <= pieces * piece_bytes:
        return list(range(0, size, piece_bytes))
    step = (size - piece_bytes) // max(pieces - 1, 1)
    return [i * step for i in range(pieces - 1)] + [size - piece_bytes]


def sampled_sha256(fd: int, size: int, pieces: int, piece_bytes: int) -> str:
    """The sha256 of the file's size and of its sampled pieces (a few syscalls, 1 MiB read)."""
    digest = hashlib.sha256(f"{size}:{pieces}:{piece_bytes}:".encode())
    for offset in sample_offsets(size, pieces, piece_bytes):
        digest.update(os.pread(fd, piece_bytes, offset))
    return digest.hexdigest()


def scan(fd: int, digest: bool = True) -> tuple[int, Optional[str]]:
    """(the highest token id, the sha256 of the bytes, or None without `digest`): the whole file read
    once, by SCAN_BYTES blocks (a vectorised max per block)."""
    buffer, top, offset = bytearray(SCAN_BYTES), 0, 0
    sha = hashlib.sha256() if digest else None
    while count := os.preadv(fd, [buffer], offset):
        block = memoryview(buffer)[:count]
        top = max(top, int(np.frombuffer(block[:count - count % 2], dtype=DTYPE).max(initial=0)))
        if sha is not None:
            sha.update(block)
        offset += count
    return top, None if sha is None else sha.hexdigest()


def file_record(path: Path) -> tuple[str, dict]:
    """(sha256, checks record) of a finished token file: what prepare writes in the manifest."""
    with open(path, "rb", buffering=0) as f:
        size = os.fstat(f.fileno()).st_size
        top, sha = scan(f.fileno())
        sampled = sampled_sha256(f.fileno(), size, PIECES, PIECE_BYTES)
    return sha, {"bytes": size, "max_id": top, "sampled_sha256": sampled, "pieces": PIECES, "piece_bytes": PIECE_BYTES}


def changed(path: Path, what: str) -> DataError:
    return DataError(f"{path} {what}: it changed after scripts/prepare.py wrote it; {AGAIN}")


def checked_record(file: TokenFile) -> dict:
    """The file's record, checked against its manifest: the size, then the sampled hash of its `checks`;
    a file newer than its manifest (changed after prepare, or copied) or without `checks` (an older
    manifest) is also read whole once against the manifest's sha256 (`side_record`); without a
    manifest, read whole once for its highest id."""
    manifest = read_manifest(file.path.parent)
    entry = manifest["files"].get(file.path.name) if manifest else None
    if entry is None:
        return side_record(file, None, "no manifest: read whole once for its highest token id")
    if len(file) != entry["tokens"]:
        raise changed(file.path, f"holds {len(file):,} tokens but its manifest says {entry['tokens']:,}")
    record = manifest.get("checks", {}).get(file.path.name)
    if record is None:
        return side_record(file, entry["sha256"], f"its manifest predates sampled checks ({AGAIN} to add them)")
    fd, (size, mtime, _) = file.fd, file.stamp
    if sampled_sha256(fd, size, record["pieces"], record["piece_bytes"]) != record["sampled_sha256"]:
        raise changed(file.path, "is not what its manifest records (same size, other bytes)")
    if mtime <= (file.path.parent / MANIFEST).stat().st_mtime_ns:
        return record
    return side_record(file, entry["sha256"], "it is newer than its manifest (copied, or changed after prepare?)")


def side_record(file: TokenFile, sha256: Optional[str], why: str) -> dict:
    """The record kept beside a file (`.<name>.checked.json`) where its size, mtime and sampled hash
    still match; else the file read whole, its sha256 compared with `sha256` (None: not computed),
    and the record written where it can be (`why` it was read is logged)."""
    fd, (size, mtime, _) = file.fd, file.stamp
    record = {"bytes": size, "mtime_ns": mtime, "sampled_sha256": sampled_sha256(fd, size, PIECES, PIECE_BYTES),
              "pieces": PIECES, "piece_bytes": PIECE_BYTES, "sha256": sha256}
    kept_at = file.path.with_name(f".{file.path.name}.checked.json")
    _, kept = read_json(kept_at)
    if isinstance(kept, dict) and type(kept.get("max_id")) is int and kept == {**kept, **record}:
        return kept
    started = time.perf_counter()
    record["max_id"], sha = scan(fd, digest=sha256 is not None)
    if sha != sha256:
        raise changed(file.path, "is not what its manifest records (same size, other bytes: its sha256 differs)")
    log.info("%s: %s (%.1f s, noted in %s)", file.path, why, time.perf_counter() - started, kept_at.name)
    try:
        atomic_write_text(kept_at, json.dumps(record) + "\n")
    except OSError as exc:  # a read-only directory: the next start reads the file again
        log.info("%s cannot be written (%s): the next start reads %s whole again", kept_at, exc.strerror, file.path)
    return record


# ----------------------------------------------------------------------------------------- manifest
COUNT = (lambda value: type(value) is int and value >= 0, "a count (an integer >= 0)")
PIECES_RANGE = (lambda value: type(value) is int and 0 < value <= 1 << 16, "an integer from 1 to 65536")
BYTES_RANGE = (lambda value: type(value) is int and 0 < value <= 1 << 24, "an integer from 1 to 16777216")
SHA256 = (lambda value: isinstance(value, str) and re.fullmatch("[0-9a-f]{64}", value) is not None,
          "a sha256 (64 hex digits)")
FIELDS = [*((("files", name, "tokens"), COUNT) for name in SPLITS),
          *((("files", name, "sha256"), SHA256) for name in SPLITS)]
CHECKS = [("bytes", COUNT), ("max_id", COUNT), ("sampled_sha256", SHA256), ("pieces", PIECES_RANGE),
          ("piece_bytes", BYTES_RANGE)]


def field_problem(manifest: dict, keys: tuple, kind: tuple) -> Optional[str]:
    """What is wrong with the field at `keys` ('files.train.bin.tokens: missing'), or None."""
    value, test, wanted = manifest, *kind
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            return f"{'.'.join(keys)}: missing"
        value = value[key]
    return None if test(value) else f"{'.'.join(keys)}: {shown(value)} is not {wanted}"


def manifest_problem(manifest) -> Optional[str]:
    """What is wrong with a manifest, naming the field, or None: every field a run reads is checked."""
    if not isinstance(manifest, dict):
        return f"holds {shown(manifest)}, not a JSON object"
    if manifest.get("format") != FORMAT:
        return f"format: {shown(manifest.get('format'))} is not {FORMAT!r}"
    fields = FIELDS
    if "checks" in manifest:
        fields = fields + [(("checks", name, key), kind) for name in SPLITS for key, kind in CHECKS]
    problems = (tokenizer_problem(manifest.get("tokenizer")),
                *(field_problem(manifest, keys, kind) for keys, kind in fields))
    problem = next((p for p in problems if p is not None), None)
    if problem is None and "checks" in manifest:
        sizes = [(name, manifest["checks"][name]["bytes"], manifest["files"][name]["tokens"]) for name in SPLITS]
        problem = next((f"checks.{name}.bytes: {size} is not 2 x files.{name}.tokens ({tokens})"
                        for name, size, tokens in sizes if size != 2 * tokens), None)
    return problem


def read_manifest(directory: Path) -> Optional[dict]:
    """The directory's manifest, or None where there is none (files made by nanoGPT's prepare scripts).
    A manifest that cannot be read, or whose fields a run reads are missing or wrong, is one line
    naming it and the field."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path} cannot be read ({type(exc).__name__}: {exc}): {AGAIN}") from None
    problem = manifest_problem(manifest)
    if problem is not None:
        raise DataError(f"{path}: {problem}: {AGAIN}")
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
