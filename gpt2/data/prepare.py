"""Corpora -> token files (train.bin, val.bin, manifest.json; see gpt2/data/tokenfiles.py), streaming.

`prepare(inputs, out)` tokenizes any amount of text in bounded memory. The inputs are text files (each
a document) and row files, each row a document: Parquet, JSON Lines (.jsonl, .jsonl.gz, .jsonl.zst) and
a Hugging Face dataset (gpt2/data/rows.py). Their work is cut into units (~8 MB of a text file, cut
where GPT-2 splits anyway, gpt2/data/textranges.py; a Parquet row group; ~8 MB of JSON lines or of a
dataset's rows) that worker processes read, decode and encode themselves; the main process appends
their tokens, in order, to temporary files renamed into place at the end.

Documents are separated in their split by <|endoftext|> (char tokens: not separated). The split
(`Settings.split_by`, --split-by):
- documents: each document goes to val.bin when the hash of its bytes (UTF-8) falls in the last
  (1 - train_frac) of the hash range, so identical documents share a split, whichever file or format
  holds them, and a document's split depends on its content alone (but for at least one document
  each way: with few documents, adding one may move the one chosen). Few or uneven documents can
  miss the asked share of tokens by far (a warning says so).
- tokens: the document split's stream (train.bin's documents, then val.bin's, a separator between)
  is cut at int(N * train_frac) tokens: val.bin holds exactly the asked share, the fewest tokens move
  (the last training documents go to val.bin, or the first validation ones to train.bin) and at most
  one document is cut in two. It streams, and like the document split it does not depend on --workers.
- auto (the default): documents, then tokens where val.bin's share of the tokens misses
  1 - train_frac by more than half of it (`misses`; said in one line on stderr).
A single document is split by position, its first int(N * train_frac) tokens for training, as
data.train_frac splits a text file (what tokens gives for one document, whatever split_by). Re-running
on unchanged inputs and settings (split_by included) does nothing, once the token files' every byte
matches the manifest's sha256 (`up_to_date`; a file changed since is prepared again); a failed or
stopped run, a full disk included, leaves the directory as it was. The manifest's `checks` record
each file's size, highest id and sampled hash, which a run checks at its start (tokenfiles.py).
"""

from __future__ import annotations

import errno
import glob
import hashlib
import json
import logging
import os
import time
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Optional, Union

import numpy as np
from gpt2.errors import DataError
from gpt2.files import FileLock, atomic_file, atomic_write_text, remove_stale_temporaries, sha256_bytes
from gpt2.signals import STOP
from gpt2.data import rows, textranges
from gpt2.data.tokenfiles import DTYPE, FORMAT, LOCK, MANIFEST, MARKER, MAX_VOCAB, SPLITS, file_record, read_manifest
from gpt2.data.tokenizer import CharTokenizer, GPT2Tokenizer
from gpt2.data.units import Job, Piece, TextRange, nearer_edge, rank, split_of, work
from gpt2.data.workers import make_pool, ordered, progress, stop_point

log = logging.getLogger(__name__)

CHUNK_BYTES = 8 << 20
SPLIT_BY = ("auto", "documents", "tokens")
ROW_RULE = "rows/1"
"""How rows are read and hashed (in the prepare key where row files are inputs)."""


@dataclass
class Doc:
    """A text file: one document."""
    path: str
    bytes: int
    sha256: str
    split: str = "train"
    replaced: int = 0
    """Bytes that were not UTF-8 (each decoded as U+FFFD)."""
    unsafe_cuts: int = 0


@dataclass
class RowSource:
    """A Parquet or JSON Lines file, or a Hugging Face dataset: a document per row."""
    path: str
    format: str
    column: str
    bytes: int
    """The file's bytes (a dataset: its text's)."""
    sha256: str
    """Of the file's bytes (a dataset: of its rows' text)."""
    rows: int = 0
    documents: dict = field(default_factory=lambda: {name: 0 for name in SPLITS})
    empty_rows: int = 0
    text_bytes: int = 0
    replaced: int = 0
    """Bytes that were not UTF-8 and halves of characters, each replaced by U+FFFD."""
    groups: list = field(default_factory=list, repr=False)
    """Rows per Parquet row group (not in the manifest)."""


Source = Union[Doc, RowSource]


@dataclass
class Settings:
    tokenizer: str = "gpt2"
    train_frac: float = 0.9
    workers: int = 1
    data_dir: str = "data"
    mirror: Optional[str] = None
    text_column: str = "text"
    hf: Optional[rows.HFDataset] = None
    split_by: str = "auto"
    """One of SPLIT_BY (the module's docstring)."""


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


def matches_of(item: str, skipped: list[dict]) -> list[Path]:
    """The files an input names. In a directory holding Parquet or JSON Lines files, those alone
    (a dataset's README or license beside them is no document: listed as skipped)."""
    path = Path(item).expanduser()
    if path.is_dir():
        found = walk(path)
        if any(rows.row_format(p) for p in found):
            skipped += [{"path": str(p), "reason": "not a row file (beside row files)"}
                        for p in found if not rows.row_format(p)]
            found = [p for p in found if rows.row_format(p)]
        return found
    if path.is_file():
        return [path]
    found = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
    if not found:
        raise DataError(f"{item}: no such file or directory, and no file matches it as a pattern")
    return found


def find_files(inputs: Iterable[str], settings: Settings, skipped: Optional[list] = None) -> list[Path]:
    """Files named, files under directories and glob matches, each once, in the order given; never
    the files of a token directory or the tokenizer's own files."""
    found: dict[Path, None] = {}
    skipped = [] if skipped is None else skipped
    tokenizer_files = (Path(settings.data_dir).expanduser() / "gpt2-bpe").resolve()
    for item in inputs:
        for match in matches_of(item, skipped):
            if match.is_file() and not ours(match.resolve(), tokenizer_files):
                found.setdefault(match.resolve(), None)
    if not found and settings.hf is None:
        raise DataError(f"no text files found in {' '.join(inputs)}")
    return list(found)


def assign_splits(docs: list[Doc], train_frac: float, complete: bool = True) -> None:
    """Set each text doc's split by its hash. `complete` (the docs are every document there is):
    one document is split by position, and with several, at least one goes each way."""
    if complete and len(docs) == 1:
        docs[0].split = "train+val"
        return
    ranks = [rank(doc.sha256) for doc in docs]
    for doc, place in zip(docs, ranks):
        doc.split = split_of(place, train_frac).removesuffix(".bin")
    if complete and all(doc.split == "train" for doc in docs):
        docs[ranks.index(max(ranks))].split = "val"
    if complete and all(doc.split == "val" for doc in docs):
        docs[ranks.index(min(ranks))].split = "train"


# ---------------------------------------------------------------------------------- main side
def units(sources: list[Source], settings: Settings) -> Iterator[tuple[int, object, int]]:
    """(source index, unit, input bytes it accounts for) of every source, in order (row files'
    units are read lazily: JSON lines and dataset rows stream through this process)."""
    for index, source in enumerate(sources):
        if isinstance(source, Doc):
            split = "train.bin" if source.split in ("train", "train+val") else "val.bin"
            for start in range(0, source.bytes, CHUNK_BYTES):
                end = min(start + CHUNK_BYTES, source.bytes)
                yield index, TextRange(source.path, start, end, split, textranges.MAX_SCAN), end - start
        elif source.format == "parquet":
            first = 0
            for group, count in enumerate(source.groups):
                yield index, rows.ParquetGroup(source.path, group, source.column, first), \
                    source.bytes * count // max(sum(source.groups), 1)
                first += count
        elif source.format == "hf":
            for chunk in rows.dataset_chunks(settings.hf, source.column, CHUNK_BYTES):
                yield index, chunk, sum(len(t) for t in chunk.texts if isinstance(t, str))
        else:
            for line, data in rows.jsonl_chunks(source.path, source.format, CHUNK_BYTES):
                yield index, rows.JsonLines(source.path, data, line, source.column), len(data)


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


def describe_file(path: str, column: str) -> tuple[int, str, bool, Optional[list[int]]]:
    """(size, sha256, looks binary, rows per row group of a Parquet file)."""
    size, sha256, binary = textranges.hash_file(path)
    groups = rows.parquet_groups(path, column) if size and rows.row_format(path) == "parquet" else None
    return size, sha256, binary, groups


def describe_dataset(settings: Settings) -> RowSource:
    """A Hugging Face dataset's rows counted and hashed (a pass over them, as files are hashed)."""
    source = RowSource(settings.hf.label, "hf", settings.text_column, 0, "")
    digest = hashlib.sha256()
    with progress(None, "hashing rows") as bar:
        for row, value in rows.dataset_rows(settings.hf, settings.text_column):
            stop_point()
            text, _ = rows.clean(value, f"{settings.hf.label}, row {row}", settings.text_column)
            raw = text.encode("utf-8")
            digest.update(len(raw).to_bytes(8, "little") + raw)
            source.bytes += len(raw)
            bar.update(len(raw))
    source.sha256 = digest.hexdigest()
    return source


def describe_sources(files: list[Path], pool, settings: Settings, skipped: list[dict]) -> list[Source]:
    """A Doc per non-empty text file, a RowSource per row file (and the dataset); the files skipped
    are added to `skipped`, with why."""
    sources: list[Source] = []
    tasks = ((None, str(path), settings.text_column) for path in files)
    with progress(sum(path.stat().st_size for path in files), "hashing") as bar:
        for (_, path, _), (size, sha256, binary, groups) in ordered(pool, describe_file, tasks, 4 * settings.workers):
            bar.update(size)
            fmt = rows.row_format(path)
            if size == 0 or (binary and not fmt):
                skipped.append({"path": path, "reason": "binary (NUL bytes)" if binary else "empty"})
            elif fmt:
                sources.append(RowSource(path, fmt, settings.text_column, size, sha256, groups=groups or []))
            else:
                sources.append(Doc(path=path, bytes=size, sha256=sha256))
    if settings.hf is not None:
        sources.append(describe_dataset(settings))
    if not sources:
        raise DataError(f"all {len(files)} input files are empty or binary: there is no text to tokenize")
    return sources


def prepare_key(sources: list[Source], settings: Settings) -> str:
    """What the output depends on: the bytes of the inputs, in order, and the settings."""
    described = {"format": FORMAT, "cuts": [CHUNK_BYTES, textranges.MAX_SCAN], "tokenizer": settings.tokenizer,
                 "train_frac": settings.train_frac, "split_by": settings.split_by,
                 "sources": [[s.sha256, s.bytes] + ([] if isinstance(s, Doc) else [s.format, s.column])
                             for s in sources]}
    if any(isinstance(s, RowSource) for s in sources):
        described["rows"] = ROW_RULE
    return sha256_bytes(json.dumps(described, sort_keys=True).encode())


def up_to_date(out: Path, key: str) -> Optional[dict]:
    """The manifest of a finished prepare of the same inputs and settings in `out` whose files are still
    what it records (every byte: their sha256), else None. A manifest written before `checks` gets them."""
    if (out / MARKER).exists():
        return None
    try:
        manifest = read_manifest(out)  # a damaged one is prepared again, not trusted
        if manifest is None or manifest.get("key") != key:
            return None
        if not all((out / name).stat().st_size == 2 * manifest["files"][name]["tokens"] for name in SPLITS):
            return None
        records = {name: file_record(out / name) for name in SPLITS}
    except (DataError, OSError):
        return None
    edited = [name for name in SPLITS if records[name][0] != manifest["files"][name]["sha256"]]
    if edited:
        log.warning("%s: %s changed after scripts/prepare.py wrote it (its sha256 is not the manifest's): "
                    "preparing it again", out, " and ".join(edited))
        return None
    if "checks" not in manifest:  # an older manifest: the same files, now with their checks recorded
        try:
            atomic_write_text(out / MANIFEST, json.dumps({**manifest, "checks": {n: records[n][1] for n in SPLITS}},
                                                         indent=1) + "\n")
        except OSError as exc:  # the files are up to date all the same
            log.warning("%s: its manifest cannot record the files' checks (%s): a run reads them whole once",
                        out, exc.strerror)
    return manifest


@contextmanager
def writing(out: Path, what: str) -> Iterator[None]:
    """A full disk (or quota) while writing `what` of `out` is one line saying so; what `out` held
    before is left as it was (the callers write temporaries, renamed only once complete)."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise DataError(f"cannot write {what} in {out}: {exc.strerror} (free some space, or choose another "
                        f"--out); {out} holds what it held before") from None


def refuse_foreign(out: Path) -> None:
    """Token files this script did not write (no lock file, manifest or marker of it) are never replaced."""
    if any((out / name).exists() for name in (LOCK, MANIFEST, MARKER)):
        return
    theirs = [name for name in SPLITS if (out / name).exists()]
    if theirs:
        raise DataError(f"{out} already holds {' and '.join(theirs)} not written by scripts/prepare.py: "
                        f"choose another --out, or move them away first")


def tokenizer_state(sources: list[Source], pool, settings: Settings) -> dict:
    """The tokenizer's state; the char vocabulary is every character of the inputs (a first pass)."""
    if settings.tokenizer == "gpt2":
        encoder = GPT2Tokenizer(settings.data_dir, settings.mirror)  # fetched and verified once, here
        return {**encoder.state(), "eot_token": encoder.eot_token}
    chars: set[str] = set()
    job = Job("chars", settings.train_frac)
    for _, piece in ordered(pool, work, tasks(sources, settings, job), 2 * settings.workers + 2):
        chars.update(piece.chars)
    if len(chars) > MAX_VOCAB:
        raise DataError(f"the inputs hold {len(chars)} distinct characters, more token ids than uint16 files "
                        f"can store ({MAX_VOCAB}): use --tokenizer gpt2")
    return CharTokenizer("".join(sorted(chars))).state()


def tasks(sources: list[Source], settings: Settings, job: Job) -> Iterator[tuple]:
    for index, unit, weight in units(sources, settings):
        yield (index, weight), unit, index, job


@dataclass
class Written:
    tokens: dict = field(default_factory=lambda: {name: 0 for name in SPLITS})
    documents: dict = field(default_factory=lambda: {name: 0 for name in SPLITS})
    edges: dict = field(default_factory=dict)
    """{"train.bin": (highest rank, source, row), "val.bin": (lowest rank, source, row)}."""
    firsts: dict = field(default_factory=dict)
    """{source index: {split: documents in the split before the source's first}}."""


def count(source: Source, piece: Piece) -> None:
    """Add a piece's counts to its source's."""
    source.replaced += piece.replaced
    if isinstance(source, Doc):
        source.unsafe_cuts += piece.unsafe
        return
    source.rows += piece.rows
    source.empty_rows += piece.empty
    source.text_bytes += piece.text_bytes
    for name in SPLITS:
        source.documents[name] += piece.starts[name]


def note_edges(written: Written, index: int, source: Source, piece: Piece) -> None:
    """Keep the train document of highest rank and the val document of lowest rank seen so far."""
    edges = dict(piece.edges)
    if isinstance(source, Doc) and any(piece.starts.values()):
        edges = {name: (rank(source.sha256), 0) for name in SPLITS if piece.starts[name]}
    for name, (place, row) in edges.items():
        if nearer_edge(name, place, written.edges.get(name)):
            written.edges[name] = (place, index, row)


def append(piece: Piece, outputs: dict, starts: dict, written: Written, separator: Optional[bytes]) -> None:
    """Write a piece's tokens to its splits' files, a separator before a document that follows another,
    and where its documents start in them to `starts` (int64 offsets)."""
    for name in SPLITS:
        if piece.starts[name] and written.documents[name] and separator is not None:
            outputs[name].write(separator)
            written.tokens[name] += 1
        written.documents[name] += piece.starts[name]
        offsets = piece.offsets.get(name)
        if offsets is not None and len(offsets):
            starts[name].write((offsets + written.tokens[name]).astype(np.int64).tobytes())
        ids = piece.ids.get(name)
        if ids is not None:
            outputs[name].write(ids.tobytes())
            written.tokens[name] += len(ids)


def encode_all(sources: list[Source], pool, outputs: dict, starts: dict, job: Job, settings: Settings) -> Written:
    """Append every source's tokens to the split files, in order (and where documents start, to `starts`)."""
    written = Written()
    for source in sources:
        reset(source)
    separator = None if job.separator is None else np.array([job.separator], dtype=DTYPE).tobytes()
    with progress(total_bytes(sources), "tokenizing") as bar:
        for ((index, weight), *_), piece in ordered(pool, work, tasks(sources, settings, job),
                                                    2 * settings.workers + 2):
            written.firsts.setdefault(index, dict(written.documents))
            append(piece, outputs, starts, written, separator)
            count(sources[index], piece)
            note_edges(written, index, sources[index], piece)
            bar.update(weight)
    return written


def reset(source: Source) -> None:
    """A source's counts back to zero, before a pass over it."""
    source.replaced = 0
    if isinstance(source, Doc):
        source.unsafe_cuts = 0
    else:
        source.rows = source.empty_rows = source.text_bytes = 0
        source.documents = {name: 0 for name in SPLITS}


def total_bytes(sources: list[Source]) -> Optional[int]:
    """What the progress bar counts to (None where a compressed file or a dataset makes it unknown)."""
    if any(isinstance(s, RowSource) and s.format in ("jsonl.gz", "jsonl.zst") for s in sources):
        return None
    return sum(s.bytes for s in sources)


def misplaced(written: Written) -> Optional[tuple[int, int, str]]:
    """With several documents and one split empty, the document to move there: (source, row, split)."""
    if sum(written.documents.values()) < 2 or all(written.documents.values()):
        return None
    empty = "val.bin" if not written.documents["val.bin"] else "train.bin"
    full = "train.bin" if empty == "val.bin" else "val.bin"
    _, index, row = written.edges[full]
    return index, row, empty


def copy_bytes(src, start: int, dst, count: Optional[int] = None) -> None:
    """Copy `count` bytes (None: all the rest) of `src` from `start` to `dst`, a block at a time."""
    src.seek(start)
    left = count
    while left is None or left > 0:
        block = src.read(CHUNK_BYTES if left is None else min(CHUNK_BYTES, left))
        if not block:
            return
        dst.write(block)
        left = None if left is None else left - len(block)


def recut(tmp: dict[str, Path], keep: int, train_tokens: int, joint: bytes) -> None:
    """The stream train.bin + joint + val.bin, cut at token `keep`: train.bin its head, val.bin the
    rest (streaming; val.bin is written anew)."""
    rest = tmp["val.bin"].with_name(".val.bin.cut.tmp")
    with open(tmp["train.bin"], "r+b") as train, open(tmp["val.bin"], "rb") as val, open(rest, "wb") as out:
        if keep <= train_tokens:
            copy_bytes(train, 2 * keep, out)
            out.write(joint)
            copy_bytes(val, 0, out)
            train.truncate(2 * keep)
        else:
            moved = 2 * (keep - train_tokens) - len(joint)
            train.seek(0, os.SEEK_END)
            train.write(joint)
            copy_bytes(val, 0, train, moved)
            copy_bytes(val, moved, out)
    os.replace(rest, tmp["val.bin"])


def read_starts(path: Path) -> np.ndarray:
    """The document starts `append` wrote (memory-mapped: 8 bytes a document stay on disk)."""
    return np.memmap(path, dtype=np.int64, mode="r") if path.stat().st_size else np.zeros(0, np.int64)


def overlap(a: tuple[int, int], b: tuple[int, int]) -> int:
    return max(0, min(a[1], b[1]) - max(a[0], b[0]))


def documents_at_cut(out: Path, written: Written, keep: int, separated: bool) -> tuple[int, int, int]:
    """Documents numbered along the stream (train.bin's, then val.bin's): (how many train.bin held,
    how many start before token `keep`, how many end at or before it)."""
    train, val = (read_starts(path) for path in starts_files(out).values())
    gap = int(separated)  # tokens between two documents
    shift = written.tokens["train.bin"] + gap * all(written.tokens.values())  # val.bin's start in the stream
    documents = len(train) + len(val)
    before = int(np.searchsorted(train, keep)) + int(np.searchsorted(val, keep - shift))
    if before == documents:  # the last document starting before the cut ends the stream
        end = shift + written.tokens["val.bin"]
    else:
        end = int(train[before] if before < len(train) else val[before - len(train)] + shift) - gap
    return len(train), before, before - int(before > 0 and end > keep)


def recount(out: Path, sources: list[Source], written: Written, keep: int, separated: bool) -> None:
    """Documents per split after the cut at `keep` (those with a token on its side), in all and per
    source (a source's documents are consecutive in each split)."""
    in_train, before, whole = documents_at_cut(out, written, keep, separated)
    documents = sum(written.documents.values())
    for index, source in enumerate(sources):
        first = written.firsts.get(index, {name: 0 for name in SPLITS})
        count = source.documents if isinstance(source, RowSource) else \
            {"train.bin": int(source.split != "val"), "val.bin": int(source.split == "val")}
        spans = ((first["train.bin"], first["train.bin"] + count["train.bin"]),
                 (in_train + first["val.bin"], in_train + first["val.bin"] + count["val.bin"]))
        sides = {"train.bin": sum(overlap(span, (0, before)) for span in spans),
                 "val.bin": sum(overlap(span, (whole, documents)) for span in spans)}
        if isinstance(source, RowSource):
            source.documents = sides
        else:
            source.split = "+".join(name.removesuffix(".bin") for name in SPLITS if sides[name])
    written.documents = {"train.bin": before, "val.bin": documents - whole}


def split_by_tokens(out: Path, sources: list[Source], written: Written, train_frac: float,
                    separator: Optional[int]) -> None:
    """Cut the documents' stream (train.bin's, then val.bin's, a separator between) at int(N *
    train_frac) tokens; one document: split by position (see the module's docstring)."""
    joint = b"" if separator is None or not all(written.tokens.values()) else \
        np.array([separator], dtype=DTYPE).tobytes()
    total = sum(written.tokens.values()) + len(joint) // 2
    keep = int(total * train_frac)
    recut(temporaries(out), keep, written.tokens["train.bin"], joint)
    recount(out, sources, written, keep, separator is not None)
    written.tokens = {"train.bin": keep, "val.bin": total - keep}


def encode_pass(out: Path, sources: list[Source], job: Job, settings: Settings) -> Written:
    tmp, starts = temporaries(out), starts_files(out)
    with make_pool(settings.workers) as pool, ExitStack() as files:
        outputs = {name: files.enter_context(open(tmp[name], "wb")) for name in SPLITS}
        offsets = {name: files.enter_context(open(starts[name], "wb")) for name in SPLITS}
        return encode_all(sources, pool, outputs, offsets, job, settings)


def encode_balanced(out: Path, sources: list[Source], state: dict, settings: Settings) -> Written:
    """Encode every source; where rows left a split without documents, move the document nearest
    its edge there and encode again (only small corpora: a split of many documents is never empty)."""
    overrides: dict = {}
    tokenizer = (json.dumps(state), settings.data_dir, settings.mirror)
    while True:
        job = Job("tokens", settings.train_frac, tokenizer, tuple(overrides.items()), state.get("eot_token"))
        written = encode_pass(out, sources, job, settings)
        move = misplaced(written)
        if move is None:
            return written
        index, row, split = move
        if isinstance(sources[index], Doc):
            sources[index].split = split.removesuffix(".bin")
        else:
            overrides[(index, row)] = split


def write_token_files(out: Path, sources: list[Source], state: dict, settings: Settings) -> tuple[Written, str]:
    """Every document's tokens in out/.train.bin.tmp and out/.val.bin.tmp (removed on any failure):
    whatever the directory held before stays as it was until `commit`. Returns the split rule used
    ('position': one document; 'documents'; 'tokens')."""
    tmp = temporaries(out)
    try:
        with writing(out, "the token files"):
            written = encode_balanced(out, sources, state, settings)
            if not sum(written.documents.values()):
                raise DataError("the inputs hold no text (every row is empty): there is nothing to tokenize")
            rule = split_rule(written, settings)
            if rule != "documents":
                split_by_tokens(out, sources, written, settings.train_frac, state.get("eot_token"))
            empty = [name for name in SPLITS if written.tokens[name] == 0]
            if empty:
                raise DataError(f"{' and '.join(empty)} would hold no tokens ({sum(written.tokens.values())} in "
                                f"all): give more text, or another --train-frac")
            for path in tmp.values():
                with open(path, "rb+") as f:
                    os.fsync(f.fileno())
    except BaseException:
        for path in tmp.values():
            path.unlink(missing_ok=True)
        raise
    finally:
        for path in scratch(out):
            path.unlink(missing_ok=True)
    return written, rule


def misses(share: float, wanted: float) -> bool:
    """Whether val.bin's share of the tokens misses the asked one by more than half of it."""
    return abs(share - wanted) > wanted / 2


def split_rule(written: Written, settings: Settings) -> str:
    """'position' (one document), else settings.split_by, auto resolved by `misses` (one line on stderr
    where it splits by tokens)."""
    if sum(written.documents.values()) == 1:
        return "position"
    if settings.split_by != "auto":
        return settings.split_by
    total, wanted = sum(written.tokens.values()), 1 - settings.train_frac
    if not misses(written.tokens["val.bin"] / total, wanted):
        return "documents"
    log.warning("split by tokens: by documents val.bin would hold %s of %s tokens (%.2f%%) where --train-frac "
                "%s asks for %.2f%% (the documents are few or uneven; --split-by documents keeps that split)",
                f"{written.tokens['val.bin']:,}", f"{total:,}", 100 * written.tokens["val.bin"] / total,
                settings.train_frac, 100 * wanted)
    return "tokens"


def warn_if_uneven(written: Written, train_frac: float, rule: str) -> None:
    share, wanted = written.tokens["val.bin"] / sum(written.tokens.values()), 1 - train_frac
    if rule == "documents" and misses(share, wanted):
        log.warning("val.bin holds %.2f%% of the tokens where --train-frac %s asks for about %.2f%%: each "
                    "document goes to one split whole, and these documents are few or of uneven sizes (to "
                    "split by tokens: --split-by tokens or auto)", 100 * share, train_frac, 100 * wanted)


def temporaries(out: Path) -> dict[str, Path]:
    return {name: out / f".{name}.tmp" for name in SPLITS}


def starts_files(out: Path) -> dict[str, Path]:
    """Where `append` writes the offsets of the documents' starts in each split (int64)."""
    return {name: out / f".{name}.starts.tmp" for name in SPLITS}


def scratch(out: Path) -> list[Path]:
    """The temporaries that are never renamed into place: removed at the end of every prepare."""
    return [*starts_files(out).values(), out / ".val.bin.cut.tmp"]


def commit(out: Path, manifest: dict) -> None:
    """Put the finished files in place. The manifest is written (and synced) first, beside the others,
    so a full disk stops it before anything moved (the temporaries removed); the marker says
    'unfinished' for the few renames."""
    try:
        with writing(out, "the manifest"), atomic_file(out / MANIFEST) as staged:
            staged.write((json.dumps(manifest, indent=1) + "\n").encode())
            staged.flush()
            os.fsync(staged.fileno())
            (out / MARKER).touch()
            (out / MANIFEST).unlink(missing_ok=True)
            for name, path in temporaries(out).items():
                os.replace(path, out / name)
    except BaseException:
        for path in temporaries(out).values():
            path.unlink(missing_ok=True)
        raise
    (out / MARKER).unlink()


def prepare(inputs: list[str], out: Path, settings: Settings) -> dict:
    """Tokenize `inputs` (and settings.hf) into out/{train.bin,val.bin,manifest.json}; returns the
    manifest (with "up_to_date": True where the directory already held these inputs' tokens)."""
    if settings.split_by not in SPLIT_BY:
        raise DataError(f"split_by: must be one of {', '.join(SPLIT_BY)}, got {settings.split_by!r}")
    started = time.perf_counter()
    out = Path(out).expanduser()
    skipped: list[dict] = []
    files = find_files(inputs, settings, skipped)
    refuse_foreign(out)
    with STOP.deferred(), OutputLock(out):
        remove_stale_temporaries(out)
        with make_pool(settings.workers) as pool:
            sources = describe_sources(files, pool, settings, skipped)
            key = prepare_key(sources, settings)
            manifest = up_to_date(out, key)
            if manifest is not None:
                return {**manifest, "up_to_date": True}
            docs = [s for s in sources if isinstance(s, Doc)]
            assign_splits(docs, settings.train_frac, complete=len(docs) == len(sources))
            state = tokenizer_state(sources, pool, settings)
        written, rule = write_token_files(out, sources, state, settings)
        warn_if_uneven(written, settings.train_frac, rule)
        manifest = make_manifest(out, key, sources, skipped, rule, state, settings, written)
        manifest["seconds"] = round(time.perf_counter() - started, 3)
        stop_point()
        commit(out, manifest)
    return manifest


def source_entry(source: Source) -> dict:
    entry = asdict(source)
    entry.pop("groups", None)
    return entry


def make_manifest(out: Path, key: str, sources: list[Source], skipped: list[dict], rule: str, state: dict,
                  settings: Settings, written: Written) -> dict:
    records = {name: file_record(path) for name, path in temporaries(out).items()}
    files = {name: {"tokens": written.tokens[name], "documents": written.documents[name],
                    "sha256": records[name][0]} for name in SPLITS}
    return {
        "format": FORMAT, "key": key, "tokenizer": state, "dtype": np.dtype(DTYPE).name,
        "separator": state.get("eot_token"), "train_frac": settings.train_frac, "split": rule,
        "split_by": settings.split_by,
        "files": files, "checks": {name: records[name][1] for name in SPLITS},
        "replaced_bytes": sum(s.replaced for s in sources),
        "unsafe_cuts": sum(getattr(s, "unsafe_cuts", 0) for s in sources), "skipped": skipped,
        "sources": [source_entry(s) for s in sources], "workers": settings.workers,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
