"""Text files -> token files (train.bin, val.bin, manifest.json; see gpt2/data/tokenfiles.py), streaming.

`prepare(inputs, out)` tokenizes any amount of text in bounded memory: each file is cut into ~8 MB byte
ranges that worker processes read, decode and encode themselves, and the main process appends their
tokens, in order, to temporary files renamed into place at the end. A range starts and ends at a
"safe cut" (`safe_cut`: before an ASCII whitespace byte that follows a non-whitespace character),
where GPT-2's pre-tokenizer splits anyway, so the tokens are exactly those of encoding each file whole
(a file with no such place within 1 MiB is cut at a character boundary instead, counted in the
manifest).

Documents are files (binary files, with a NUL byte near their start, are skipped), separated in their
split by <|endoftext|> (char tokens: not separated). With several documents each goes to val.bin when
the hash of its bytes falls in the last (1 - train_frac) of the hash range, so identical documents
share a split and a document's split depends on its content alone (but for at least one document each
way: with few documents, adding one may move the one chosen). A single document is split by position,
its first int(N * train_frac) tokens for training, as data.train_frac splits a text file. Re-running on
unchanged inputs and settings does nothing; a failed or stopped run leaves the directory as it was.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import json
import logging
import os
import re
import signal
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Optional

import numpy as np
from tqdm import tqdm

from gpt2.errors import DataError
from gpt2.files import FileLock, atomic_write_text, remove_stale_temporaries, sha256_bytes
from gpt2.signals import STOP, Interrupted
from gpt2.data.tokenfiles import DTYPE, FORMAT, LOCK, MANIFEST, MARKER, MAX_VOCAB, SPLITS, read_manifest
from gpt2.data.tokenizer import CharTokenizer, GPT2Tokenizer, tokenizer_from_state

log = logging.getLogger(__name__)

CHUNK_BYTES = 8 << 20
MAX_SCAN = 1 << 20
_SPACE = re.compile(rb"[ \t\n\r\x0b\x0c]")
BINARY_PROBE = 8192
"""A file with a NUL byte in its first BINARY_PROBE bytes is binary, not text, and is skipped."""


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
def walk(directory: Path) -> list[Path]:
    """Files under a directory, recursively (symlinked directories too, each once), hidden ones
    skipped, sorted."""
    files, seen = [], set()
    for root, dirs, names in os.walk(directory, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        files += [Path(root) / name for name in names if not name.startswith(".")]
    return sorted(files)


def ours(path: Path, tokenizer_files: Path) -> bool:
    """A file prepare wrote (the files of a token directory) or read (the tokenizer's): never input."""
    in_token_dir = path.name in (*SPLITS, MANIFEST) and (path.parent / LOCK).exists()
    return in_token_dir or tokenizer_files in path.parents


def find_files(inputs: Iterable[str], settings: Settings) -> list[Path]:
    """Files named, files under directories and glob matches, each once, in the order given; never
    the files of a token directory or the tokenizer's own files."""
    found: dict[Path, None] = {}
    tokenizer_files = (Path(settings.data_dir).expanduser() / "gpt2-bpe").resolve()
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            matches = walk(path)
        elif path.is_file():
            matches = [path]
        else:
            matches = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
            if not matches:
                raise DataError(f"{item}: no such file or directory, and no file matches it as a pattern")
        for match in matches:
            if match.is_file() and not ours(match.resolve(), tokenizer_files):
                found.setdefault(match.resolve(), None)
    if not found:
        raise DataError(f"no text files found in {' '.join(inputs)}")
    return list(found)


def hash_file(path: str | Path) -> tuple[int, str, bool]:
    """(size, sha256, whether it looks binary: a NUL byte near its start)."""
    digest, size, binary = hashlib.sha256(), 0, False
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            binary = binary or (size == 0 and b"\0" in block[:BINARY_PROBE])
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest(), binary


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
_ESCAPED = re.compile("[\udc80-\udcff]")  # an undecodable byte, as the surrogateescape handler keeps it


@functools.lru_cache(maxsize=1)
def worker_tokenizer(state_json: str, data_dir: str, mirror: Optional[str]):
    """This process's tokenizer for a prepare's `state` (as JSON): built at its first range, then reused."""
    return tokenizer_from_state(json.loads(state_json), data_dir, mirror)


def _init_worker() -> None:
    """A worker ignores Ctrl-C (the terminal sends it to every process: the main process stops the
    pool) and dies of SIGTERM (not by a handler it may have inherited from its parent)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _after_non_space(window: bytes, i: int) -> bool:
    """Whether the character that ends just before byte i is not whitespace (an invalid byte, which
    decodes to U+FFFD, is not)."""
    j = i - 1
    while j > 0 and i - j < 4 and window[j] & 0xC0 == 0x80:  # back to the character's first byte
        j -= 1
    char = window[j:i].decode("utf-8", errors="replace")
    return bool(char) and not char[-1].isspace()


def safe_cut(f, pos: int, size: int) -> tuple[int, bool]:
    """The first safe cut at or after byte `pos` of the open file (0 and size are cuts), and whether
    it is a true safe cut (False: a character boundary, no safe cut within MAX_SCAN).

    A safe cut is just before an ASCII whitespace byte that follows a non-whitespace character: no
    piece of GPT-2's pre-tokenizer spans such a place (a piece is whitespace only, or starts with at
    most one space), and what matches from there on depends only on the text from there on."""
    if pos <= 0 or pos >= size:
        return min(max(pos, 0), size), True
    base = max(0, pos - 4)  # room for the character before a cut at pos
    f.seek(base)
    window = f.read(pos - base + MAX_SCAN)
    for match in _SPACE.finditer(window, pos - base):
        if match.start() > 0 and _after_non_space(window, match.start()):
            return base + match.start(), True
    if base + len(window) >= size:
        return size, True
    offset = next((i for i in range(pos - base, len(window)) if window[i] & 0xC0 != 0x80), len(window))
    return base + offset, False


def read_range(path: str, start: int, end: int) -> tuple[str, int, int]:
    """(text, invalid bytes, unsafe cut) of the nominal byte range [start, end) moved to safe cuts;
    each invalid byte becomes one U+FFFD."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        (begin, _), (stop, safe) = safe_cut(f, start, size), safe_cut(f, end, size)
        f.seek(begin)
        raw = f.read(max(0, stop - begin))
    text = raw.decode("utf-8", errors="surrogateescape")
    replaced = len(_ESCAPED.findall(text))
    if replaced:
        text = _ESCAPED.sub("\ufffd", text)
    return text, replaced, int(not safe and stop < size)


def encode_range(path: str, start: int, end: int, tokenizer: tuple[str, str, Optional[str]]
                 ) -> tuple[np.ndarray, int, int]:
    """The range's token ids with `tokenizer` ((state as JSON, data_dir, mirror): see worker_tokenizer)."""
    text, replaced, unsafe = read_range(path, start, end)
    return worker_tokenizer(*tokenizer).encode_array(text).astype(DTYPE), replaced, unsafe


def chars_of_range(path: str, start: int, end: int) -> tuple[str, int, int]:
    text, replaced, unsafe = read_range(path, start, end)
    return "".join(sorted(set(text))), replaced, unsafe


# ---------------------------------------------------------------------------------- main side
class Done:
    """A result computed already (workers=1)."""

    def __init__(self, value):
        self.value = value

    def result(self):
        return self.value


class InProcess:
    """workers=1: the same tasks, run in this process."""

    def submit(self, fn, *args) -> Done:
        return Done(fn(*args))


@contextmanager
def make_pool(settings: Settings) -> Iterator:
    """settings.workers processes (this one for 1). On leaving, tasks not started are cancelled; a
    worker that died (killed, out of memory) is one clear error."""
    if settings.workers == 1:
        yield InProcess()
        return
    pool = ProcessPoolExecutor(settings.workers, initializer=_init_worker)
    try:
        yield pool
    except BrokenProcessPool:
        raise DataError("a worker process died (killed, or out of memory?): nothing finished was written; "
                        "run the command again, with fewer --workers if memory is short") from None
    finally:
        try:
            pool.shutdown(wait=True, cancel_futures=True)
        except RuntimeError:  # stopped while the pool was starting its manager thread: nothing runs
            pass


def ranges(docs: list[Doc]) -> Iterator[tuple[int, str, int, int]]:
    for index, doc in enumerate(docs):
        for start in range(0, doc.bytes, CHUNK_BYTES):
            yield index, doc.path, start, min(start + CHUNK_BYTES, doc.bytes)


def stop_point() -> None:
    """Where a Ctrl-C or SIGTERM received meanwhile stops prepare (a signal is only recorded while
    prepare runs: raised from anywhere, it could land inside a fork, where Python ignores it)."""
    if STOP.received:
        raise Interrupted(STOP.received, STOP.context)


def ordered(pool, fn, tasks: Iterable[tuple], window: int) -> Iterator[tuple[tuple, object]]:
    """(task, fn(*task[1:])) in task order, with at most `window` tasks in flight (bounded memory)."""
    pending: deque = deque()
    for task in tasks:
        stop_point()
        pending.append((task, pool.submit(fn, *task[1:])))
        if len(pending) >= window:
            task, future = pending.popleft()
            yield task, future.result()
    while pending:
        stop_point()
        task, future = pending.popleft()
        yield task, future.result()


def progress(total: int, unit_name: str) -> tqdm:
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=unit_name,
                disable=None, smoothing=0.1, dynamic_ncols=True)


class OutputLock:
    """Holds out/.prepare.lock: two prepares never write one directory at once. A directory this
    prepare created is removed again when it ends with nothing written in it."""

    def __init__(self, out: Path):
        self.out, self.path = out, out / LOCK
        self._lock = FileLock(self.path)

    def __enter__(self) -> "OutputLock":
        if self.out.exists() and not self.out.is_dir():
            raise DataError(f"--out {self.out} is a file, not a directory")
        self.created = not self.out.exists()
        self.out.mkdir(parents=True, exist_ok=True)
        if not self._lock.acquire(wait=False):
            raise DataError(f"{self.out} is being written by another scripts/prepare.py: wait for it "
                            f"to end, or use another --out")
        return self

    def __exit__(self, *exc) -> None:
        if self.created and [p.name for p in self.out.iterdir()] == [LOCK]:
            self._lock.release(remove=True)
            self.out.rmdir()
        self._lock.release()


def describe_sources(files: list[Path], pool, workers: int) -> tuple[list[Doc], list[dict]]:
    """Docs (size and sha256 of each non-empty file) and the files skipped, with why."""
    docs, skipped = [], []
    tasks = ((None, str(path)) for path in files)
    with progress(sum(path.stat().st_size for path in files), "hashing") as bar:
        for (_, path), (size, sha256, binary) in ordered(pool, hash_file, tasks, 4 * workers):
            bar.update(size)
            if size == 0 or binary:
                skipped.append({"path": path, "reason": "binary (NUL bytes)" if binary else "empty"})
            else:
                docs.append(Doc(path=path, bytes=size, sha256=sha256))
    if not docs:
        raise DataError(f"all {len(files)} input files are empty or binary: there is no text to tokenize")
    return docs, skipped


def prepare_key(docs: list[Doc], settings: Settings) -> str:
    """What the output depends on: the bytes of the inputs, in order, and the settings."""
    described = {"format": FORMAT, "cuts": [CHUNK_BYTES, MAX_SCAN], "tokenizer": settings.tokenizer,
                 "train_frac": settings.train_frac, "sources": [[d.sha256, d.bytes] for d in docs]}
    return sha256_bytes(json.dumps(described, sort_keys=True).encode())


def up_to_date(out: Path, key: str) -> Optional[dict]:
    """The manifest of a finished prepare of the same inputs and settings in `out`, else None."""
    if (out / MARKER).exists():
        return None
    try:
        manifest = read_manifest(out)  # a damaged one is prepared again, not trusted
        if manifest is None or manifest.get("key") != key:
            return None
        if all((out / name).stat().st_size == 2 * manifest["files"][name]["tokens"] for name in SPLITS):
            return manifest
    except (DataError, OSError):
        pass
    return None


def refuse_foreign(out: Path) -> None:
    """Token files this script did not write (no lock file, manifest or marker of it) are never replaced."""
    if any((out / name).exists() for name in (LOCK, MANIFEST, MARKER)):
        return
    theirs = [name for name in SPLITS if (out / name).exists()]
    if theirs:
        raise DataError(f"{out} already holds {' and '.join(theirs)} not written by scripts/prepare.py: "
                        f"choose another --out, or move them away first")


def tokenizer_state(docs: list[Doc], pool, settings: Settings) -> dict:
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


def encode_docs(docs: list[Doc], pool, outputs: dict, state: dict, settings: Settings) -> Written:
    """Append every doc's tokens to its split's open file, in order, a separator between documents."""
    written, last = Written(), {}
    separator = state.get("eot_token")
    sep = None if separator is None else np.array([separator], dtype=DTYPE)
    encode = functools.partial(encode_range, tokenizer=(json.dumps(state), settings.data_dir, settings.mirror))
    with progress(sum(doc.bytes for doc in docs), "tokenizing") as bar:
        for (index, _, start, end), (ids, replaced, unsafe) in ordered(pool, encode, ranges(docs),
                                                                      2 * settings.workers + 2):
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
    """Every document's tokens in out/.train.bin.tmp and out/.val.bin.tmp (removed on any failure):
    whatever the directory held before stays as it was until `commit`."""
    tmp = temporaries(out)
    try:
        with make_pool(settings) as pool:
            with open(tmp["train.bin"], "wb") as train, open(tmp["val.bin"], "wb") as val:
                written = encode_docs(docs, pool, {"train.bin": train, "val.bin": val}, state, settings)
        if rule == "position":
            split_by_position(tmp["train.bin"], tmp["val.bin"], written, settings.train_frac)
        empty = [name for name in SPLITS if written.tokens[name] == 0]
        if empty:
            raise DataError(f"{' and '.join(empty)} would hold no tokens ({sum(written.tokens.values())} in all): "
                            f"give more text, or another --train-frac")
        for path in tmp.values():
            with open(path, "rb+") as f:
                os.fsync(f.fileno())
    except BaseException:
        for path in tmp.values():
            path.unlink(missing_ok=True)
        raise
    return written


def warn_if_uneven(written: Written, train_frac: float, rule: str) -> None:
    share, wanted = written.tokens["val.bin"] / sum(written.tokens.values()), 1 - train_frac
    if rule == "documents" and not wanted / 2 <= share <= wanted * 2:
        log.warning("val.bin holds %.2f%% of the tokens where --train-frac %s asks for about %.2f%%: each "
                    "document goes to one split whole, and these documents are few or of uneven sizes (to "
                    "split by tokens, prepare them as one file)", 100 * share, train_frac, 100 * wanted)


def temporaries(out: Path) -> dict[str, Path]:
    return {name: out / f".{name}.tmp" for name in SPLITS}


def commit(out: Path, manifest: dict) -> None:
    """Put the finished files in place: the marker says 'unfinished' for the few renames in between."""
    (out / MARKER).touch()
    (out / MANIFEST).unlink(missing_ok=True)
    for name, path in temporaries(out).items():
        os.replace(path, out / name)
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    (out / MARKER).unlink()


def prepare(inputs: list[str], out: Path, settings: Settings) -> dict:
    """Tokenize `inputs` into out/{train.bin,val.bin,manifest.json}; returns the manifest (with
    "up_to_date": True where the directory already held these inputs' tokens)."""
    started = time.perf_counter()
    out = Path(out).expanduser()
    files = find_files(inputs, settings)
    refuse_foreign(out)
    with STOP.deferred(), OutputLock(out):
        remove_stale_temporaries(out)
        with make_pool(settings) as pool:
            docs, skipped = describe_sources(files, pool, settings.workers)
            key = prepare_key(docs, settings)
            manifest = up_to_date(out, key)
            if manifest is not None:
                return {**manifest, "up_to_date": True}
            rule = assign_splits(docs, settings.train_frac)
            state = tokenizer_state(docs, pool, settings)
        written = write_token_files(out, docs, rule, state, settings)
        warn_if_uneven(written, settings.train_frac, rule)
        manifest = make_manifest(out, key, docs, skipped, rule, state, settings, written)
        manifest["seconds"] = round(time.perf_counter() - started, 3)
        stop_point()
        commit(out, manifest)
    return manifest


def make_manifest(out: Path, key: str, docs: list[Doc], skipped: list[dict], rule: str, state: dict,
                  settings: Settings, written: Written) -> dict:
    files = {name: {"tokens": written.tokens[name], "documents": written.documents[name],
                    "sha256": hash_file(path)[1]} for name, path in temporaries(out).items()}
    return {
        "format": FORMAT, "key": key, "tokenizer": state, "dtype": np.dtype(DTYPE).name,
        "separator": state.get("eot_token"), "train_frac": settings.train_frac, "split": rule,
        "files": files, "replaced_bytes": sum(d.replaced for d in docs),
        "unsafe_cuts": sum(d.unsafe_cuts for d in docs), "skipped": skipped,
        "sources": [asdict(doc) for doc in docs], "workers": settings.workers,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
