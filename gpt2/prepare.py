"""Text files -> token files (train.bin, val.bin, manifest.json; see gpt2/tokenfiles.py), streaming.

`prepare(inputs, out)` tokenizes any amount of text in bounded memory: each file is cut into ~8 MB byte
ranges that worker processes read, decode and encode themselves, and the main process appends their
tokens, in order, to temporary files renamed into place at the end. A range starts and ends at a
"safe cut": a single space or newline between two printable ASCII characters, where GPT-2's
pre-tokenizer splits anyway, so the tokens are exactly those of encoding each file whole (a file with
no such place within 1 MiB is cut at a character boundary instead, counted in the manifest).

Documents are files, separated in their split by <|endoftext|>. With several documents each goes to
val.bin when the hash of its bytes falls in the last (1 - train_frac) of the hash range (at least one
document each way), so identical documents share a split and the split depends on nothing but the
content; a single document is split by position, its first int(N * train_frac) tokens for training,
as data.train_frac splits a text file. Re-running on unchanged inputs and settings does nothing.
"""

from __future__ import annotations

import codecs
import fcntl
import glob
import hashlib
import json
import logging
import os
import re
import time
from collections import deque
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Optional

import numpy as np
from tqdm import tqdm

from gpt2.errors import DataError
from gpt2.files import atomic_write_text
from gpt2.tokenfiles import DTYPE, FORMAT, MANIFEST, MARKER, MAX_VOCAB, SPLITS
from gpt2.tokenizer import CharTokenizer, GPT2Tokenizer

log = logging.getLogger(__name__)

CHUNK_BYTES = 8 << 20
MAX_SCAN = 1 << 20
_SAFE_CUT = re.compile(rb"[\x21-\x7e][ \n](?=[\x21-\x7e])")


@dataclass
class Doc:
    path: str
    bytes: int
    sha256: str
    split: str = "train"
    replaced: int = 0
    """Bytes that were not UTF-8 (each decoded as U+FFFD)."""
    unsafe_cuts: int = 0


@dataclass
class Settings:
    tokenizer: str = "gpt2"
    train_frac: float = 0.9
    workers: int = 1
    data_dir: str = "data"
    mirror: Optional[str] = None


# ------------------------------------------------------------------------------------------ inputs
def find_files(inputs: Iterable[str], out: Path) -> list[Path]:
    """Files named, files under directories (recursively, sorted, hidden ones skipped) and glob
    matches, each once, in the order given; nothing inside the output directory."""
    found: dict[Path, None] = {}
    out = out.resolve()
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            matches = sorted(p for p in path.rglob("*") if p.is_file()
                             and not any(part.startswith(".") for part in p.relative_to(path).parts))
        elif path.is_file():
            matches = [path]
        else:
            matches = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
            if not matches:
                raise DataError(f"{item}: no such file or directory, and no file matches it as a pattern")
        for match in matches:
            if out not in match.resolve().parents:
                found.setdefault(match.resolve(), None)
    if not found:
        raise DataError(f"no text files found in {' '.join(inputs)}")
    return list(found)


def hash_file(path: Path) -> tuple[int, str]:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()


def assign_splits(docs: list[Doc], train_frac: float) -> str:
    """Set each doc's split; returns the rule used ('position' or 'documents')."""
    if len(docs) == 1:
        docs[0].split = "train+val"
        return "position"
    ranks = [int(doc.sha256[:16], 16) / 2**64 for doc in docs]
    for doc, rank in zip(docs, ranks):
        doc.split = "val" if rank >= train_frac else "train"
    if all(doc.split == "train" for doc in docs):
        docs[ranks.index(max(ranks))].split = "val"
    if all(doc.split == "val" for doc in docs):
        docs[ranks.index(min(ranks))].split = "train"
    return "documents"


# --------------------------------------------------------------------------------- worker side
_encoder = None
_replaced = 0


def _count_replaced(exc: UnicodeDecodeError) -> tuple[str, int]:
    global _replaced
    _replaced += exc.end - exc.start
    return "\ufffd" * (exc.end - exc.start), exc.end


codecs.register_error("gpt2-harness-count", _count_replaced)


def _init_worker(state: dict, data_dir: str, mirror: Optional[str]) -> None:
    global _encoder
    _encoder = CharTokenizer(state["chars"]) if state["name"] == "char" else GPT2Tokenizer(data_dir, mirror)


def safe_cut(f, pos: int, size: int) -> tuple[int, bool]:
    """The first safe cut at or after byte `pos` of the open file (0 and size are cuts), and whether
    it is a true safe cut (False: a character boundary, no safe cut within MAX_SCAN)."""
    if pos <= 0 or pos >= size:
        return min(max(pos, 0), size), True
    f.seek(pos - 1)
    window = f.read(MAX_SCAN + 2)
    match = _SAFE_CUT.search(window)
    if match:
        return pos + match.start(), True
    if pos - 1 + len(window) >= size:
        return size, True
    offset = next((i for i in range(1, len(window)) if window[i] & 0xC0 != 0x80), len(window))
    return pos - 1 + offset, False


def read_range(path: str, start: int, end: int) -> tuple[str, int, int]:
    """(text, invalid bytes, unsafe cut) of the nominal byte range [start, end) moved to safe cuts."""
    global _replaced
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        (begin, _), (stop, safe) = safe_cut(f, start, size), safe_cut(f, end, size)
        f.seek(begin)
        raw = f.read(max(0, stop - begin))
    _replaced = 0
    text = raw.decode("utf-8", errors="gpt2-harness-count")
    return text, _replaced, int(not safe and stop < size)


def encode_range(path: str, start: int, end: int) -> tuple[np.ndarray, int, int]:
    text, replaced, unsafe = read_range(path, start, end)
    if isinstance(_encoder, CharTokenizer):
        ids = _encoder.encode_array(text)
    else:
        ids = _encoder.encoding.encode_to_numpy(text, allowed_special=set(), disallowed_special=())
    return ids.astype(DTYPE), replaced, unsafe


def chars_of_range(path: str, start: int, end: int) -> tuple[str, int, int]:
    text, replaced, unsafe = read_range(path, start, end)
    return "".join(sorted(set(text))), replaced, unsafe


def _hash_worker(path: str) -> tuple[int, str]:
    return hash_file(Path(path))


# ---------------------------------------------------------------------------------- main side
class InProcess(Executor):
    """workers=1: the same tasks, run in this process."""

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()
        future.set_result(fn(*args, **kwargs))
        return future


def make_pool(settings: Settings, state: Optional[dict]) -> Executor:
    if state is not None:
        _init_worker(state, settings.data_dir, settings.mirror)
    if settings.workers == 1:
        return InProcess()
    return ProcessPoolExecutor(settings.workers, initializer=_init_worker if state else None,
                               initargs=(state, settings.data_dir, settings.mirror) if state else ())


def ranges(docs: list[Doc]) -> Iterator[tuple[int, str, int, int]]:
    for index, doc in enumerate(docs):
        for start in range(0, doc.bytes, CHUNK_BYTES):
            yield index, doc.path, start, min(start + CHUNK_BYTES, doc.bytes)


def ordered(pool: Executor, fn, tasks: Iterable[tuple], window: int) -> Iterator[tuple[tuple, object]]:
    """(task, fn(*task[1:])) in task order, with at most `window` tasks in flight (bounded memory)."""
    pending: deque = deque()
    for task in tasks:
        pending.append((task, pool.submit(fn, *task[1:])))
        if len(pending) >= window:
            task, future = pending.popleft()
            yield task, future.result()
    while pending:
        task, future = pending.popleft()
        yield task, future.result()


def progress(total: int, unit_name: str) -> tqdm:
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=unit_name,
                disable=None, smoothing=0.1, dynamic_ncols=True)


class OutputLock:
    """Holds out/.prepare.lock: two prepares never write one directory at once."""

    def __init__(self, out: Path):
        self.path = out / ".prepare.lock"

    def __enter__(self) -> "OutputLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.close()
            raise DataError(f"{self.path.parent} is being written by another scripts/prepare.py: wait for it "
                            f"to end, or use another --out") from None
        return self

    def __exit__(self, *exc) -> None:
        self._file.close()


def describe_sources(files: list[Path], pool: Executor, workers: int) -> tuple[list[Doc], list[dict]]:
    """Docs (size and sha256 of each non-empty file) and the files skipped, with why."""
    docs, skipped = [], []
    tasks = ((None, str(path)) for path in files)
    for (_, path), (size, sha256) in ordered(pool, _hash_worker, tasks, 4 * workers):
        if size == 0:
            skipped.append({"path": path, "reason": "empty"})
        else:
            docs.append(Doc(path=path, bytes=size, sha256=sha256))
    if not docs:
        raise DataError(f"all {len(files)} input files are empty: there is no text to tokenize")
    return docs, skipped


def prepare_key(docs: list[Doc], settings: Settings) -> str:
    """What the output depends on: the bytes of the inputs, in order, and the settings."""
    described = {"format": FORMAT, "cuts": [CHUNK_BYTES, MAX_SCAN], "tokenizer": settings.tokenizer,
                 "train_frac": settings.train_frac, "sources": [[d.sha256, d.bytes] for d in docs]}
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()


def up_to_date(out: Path, key: str) -> Optional[dict]:
    """The manifest of a finished prepare of the same inputs and settings in `out`, else None."""
    path = out / MANIFEST
    if (out / MARKER).exists() or not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
        if manifest.get("key") != key:
            return None
        if all((out / name).stat().st_size == 2 * manifest["files"][name]["tokens"] for name in SPLITS):
            return manifest
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def refuse_foreign(out: Path) -> None:
    """Token files this script did not write (no manifest, no unfinished marker) are never replaced."""
    if (out / MANIFEST).exists() or (out / MARKER).exists():
        return
    theirs = [name for name in SPLITS if (out / name).exists()]
    if theirs:
        raise DataError(f"{out} already holds {' and '.join(theirs)} without a {MANIFEST} (not written by "
                        f"scripts/prepare.py): choose another --out, or move them away first")


def tokenizer_state(docs: list[Doc], pool: Executor, settings: Settings) -> dict:
    """The tokenizer's state; the char vocabulary is every character of the inputs (a first pass)."""
    if settings.tokenizer == "gpt2":
        encoder = GPT2Tokenizer(settings.data_dir, settings.mirror)  # fetched and verified once, here
        return {**encoder.state(), "eot_token": encoder.eot_token}
    chars: set[str] = set()
    for _, (seen, _, _) in ordered(pool, chars_of_range, ranges(docs), 2 * settings.workers + 2):
        chars.update(seen)
    if len(chars) > MAX_VOCAB:
        raise DataError(f"the inputs hold {len(chars)} distinct characters, more token ids than uint16 files "
                        f"can store ({MAX_VOCAB}): use --tokenizer gpt2")
    return CharTokenizer("".join(sorted(chars))).state()


@dataclass
class Written:
    tokens: dict = field(default_factory=lambda: {name: 0 for name in SPLITS})
    documents: dict = field(default_factory=lambda: {name: 0 for name in SPLITS})


def encode_docs(docs: list[Doc], pool: Executor, outputs: dict, separator: Optional[int], workers: int) -> Written:
    """Append every doc's tokens to its split's open file, in order, a separator between documents."""
    written, last = Written(), {}
    sep = None if separator is None else np.array([separator], dtype=DTYPE)
    with progress(sum(doc.bytes for doc in docs), "tokenizing") as bar:
        for (index, _, start, end), (ids, replaced, unsafe) in ordered(pool, encode_range, ranges(docs),
                                                                      2 * workers + 2):
            doc = docs[index]
            name = "val.bin" if doc.split == "val" else "train.bin"
            if last.get(name, index) != index and sep is not None:
                outputs[name].write(sep.tobytes())
                written.tokens[name] += 1
            if last.get(name) != index:
                written.documents[name] += 1
            last[name] = index
            outputs[name].write(ids.tobytes())
            written.tokens[name] += len(ids)
            doc.replaced += replaced
            doc.unsafe_cuts += unsafe
            bar.update(end - start)
    return written


def split_by_position(train_tmp: Path, val_tmp: Path, written: Written, train_frac: float) -> None:
    """One document: move the tokens after the first int(N * train_frac) to val (streaming)."""
    total = written.tokens["train.bin"]
    keep = int(total * train_frac)
    with open(train_tmp, "r+b") as src, open(val_tmp, "wb") as dst:
        src.seek(2 * keep)
        while block := src.read(CHUNK_BYTES):
            dst.write(block)
        src.truncate(2 * keep)
    written.tokens = {"train.bin": keep, "val.bin": total - keep}
    written.documents["val.bin"] = 1


def write_token_files(out: Path, docs: list[Doc], rule: str, state: dict, settings: Settings) -> Written:
    """train.bin and val.bin, written under temporary names and renamed into place when complete."""
    tmp = {name: out / f".{name}.tmp" for name in SPLITS}
    try:
        with make_pool(settings, state) as pool:
            with open(tmp["train.bin"], "wb") as train, open(tmp["val.bin"], "wb") as val:
                written = encode_docs(docs, pool, {"train.bin": train, "val.bin": val},
                                      state.get("eot_token"), settings.workers)
        if rule == "position":
            split_by_position(tmp["train.bin"], tmp["val.bin"], written, settings.train_frac)
        empty = [name for name in SPLITS if written.tokens[name] == 0]
        if empty:
            raise DataError(f"{' and '.join(empty)} would hold no tokens ({sum(written.tokens.values())} in all): "
                            f"give more text, or another --train-frac")
        for name, path in tmp.items():
            with open(path, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(path, out / name)
    finally:
        for path in tmp.values():
            path.unlink(missing_ok=True)
    return written


def prepare(inputs: list[str], out: Path, settings: Settings) -> dict:
    """Tokenize `inputs` into out/{train.bin,val.bin,manifest.json}; returns the manifest (with
    "up_to_date": True where the directory already held these inputs' tokens)."""
    started = time.perf_counter()
    out = Path(out).expanduser()
    files = find_files(inputs, out)
    with OutputLock(out):
        with make_pool(settings, None) as pool:
            docs, skipped = describe_sources(files, pool, settings.workers)
            key = prepare_key(docs, settings)
            manifest = up_to_date(out, key)
            if manifest is not None:
                return {**manifest, "up_to_date": True}
            refuse_foreign(out)
            rule = assign_splits(docs, settings.train_frac)
            state = tokenizer_state(docs, pool, settings)
        (out / MARKER).touch()
        (out / MANIFEST).unlink(missing_ok=True)
        written = write_token_files(out, docs, rule, state, settings)
        manifest = make_manifest(out, key, docs, skipped, rule, state, settings, written)
        manifest["seconds"] = round(time.perf_counter() - started, 3)
        atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=1) + "\n")
        (out / MARKER).unlink()
    return manifest


def make_manifest(out: Path, key: str, docs: list[Doc], skipped: list[dict], rule: str, state: dict,
                  settings: Settings, written: Written) -> dict:
    files = {name: {"tokens": written.tokens[name], "documents": written.documents[name],
                    "sha256": hash_file(out / name)[1]} for name in SPLITS}
    return {
        "format": FORMAT, "key": key, "tokenizer": state, "dtype": np.dtype(DTYPE).name,
        "separator": state.get("eot_token"), "train_frac": settings.train_frac, "split": rule,
        "files": files, "replaced_bytes": sum(d.replaced for d in docs),
        "unsafe_cuts": sum(d.unsafe_cuts for d in docs), "skipped": skipped,
        "sources": [asdict(doc) for doc in docs], "workers": settings.workers,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
