"""The units of prepare's work, and what a worker process does with one (gpt2/data/prepare.py).

A unit is ~8 MB of a text file (`TextRange`: part of its one document) or a run of rows, each a
document (gpt2/data/rows.py: a Parquet row group, JSON lines, a dataset's rows). `work` reads it,
decodes it and encodes it: a `Piece` holds, per split, its tokens (a separator between its documents)
and how many documents start in it. A row goes to val.bin when the sha256 of its UTF-8 bytes ranks
at train_frac or above (`rank`, as a text file's whole bytes), unless the job moves it.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from gpt2.data import rows, textranges
from gpt2.data.tokenfiles import DTYPE, SPLITS
from gpt2.data.tokenizer import tokenizer_from_state


def rank(sha256_hex: str) -> float:
    """A document's place in [0, 1): the first 64 bits of the sha256 of its bytes."""
    return int(sha256_hex[:16], 16) / 2**64


def split_of(position: float, train_frac: float) -> str:
    return "val.bin" if position >= train_frac else "train.bin"



@functools.lru_cache(maxsize=1)
def worker_tokenizer(state_json: str, data_dir: str, mirror: Optional[str]):
    """This process's tokenizer for a prepare's `state` (as JSON): built at its first unit, then reused."""
    return tokenizer_from_state(json.loads(state_json), data_dir, mirror)


@dataclass(frozen=True)
class TextRange:
    """Bytes [start, end) of a text file (moved to safe cuts), part of its one document."""
    path: str
    start: int
    end: int
    split: str
    max_scan: int


@dataclass(frozen=True)
class Job:
    """What a worker does with a unit: "tokens" (with the tokenizer (state as JSON, data_dir, mirror))
    or "chars" (the characters it holds); rows go to splits by train_frac, or by `overrides`
    ({(source, row): split})."""
    what: str
    train_frac: float
    tokenizer: tuple = ()
    overrides: tuple = ()
    separator: Optional[int] = None
    """The token between documents (<|endoftext|>; char tokens: none)."""


@dataclass
class Piece:
    """A unit's result: per split, its tokens (a separator between its documents) and how many
    documents start in it; for rows, counts and the documents nearest the split's edge."""
    ids: dict = field(default_factory=dict)
    starts: dict = field(default_factory=lambda: {name: 0 for name in SPLITS})
    chars: str = ""
    rows: int = 0
    empty: int = 0
    text_bytes: int = 0
    replaced: int = 0
    unsafe: int = 0
    edges: dict = field(default_factory=dict)
    """{"train.bin": (highest rank, row), "val.bin": (lowest rank, row)} of this unit's rows."""
    offsets: dict = field(default_factory=dict)
    """Per split, where each document starting in this unit starts in its ids (int64): a split
    by tokens counts the documents on each side of its cut from them."""


def work(unit, source: int, job: Job) -> Piece:
    """Read one unit and encode it (or collect its characters)."""
    if isinstance(unit, TextRange):
        text, replaced, unsafe = textranges.read_range(unit.path, unit.start, unit.end, unit.max_scan)
        piece = Piece(replaced=replaced, unsafe=unsafe)
        piece.starts[unit.split] = int(unit.start == 0)
        if job.what == "chars":
            piece.chars = "".join(sorted(set(text)))
        else:
            piece.ids[unit.split] = worker_tokenizer(*job.tokenizer).encode_array(text).astype(DTYPE)
            piece.offsets[unit.split] = np.zeros(int(unit.start == 0), dtype=np.int64)
        return piece
    return work_rows(unit, source, job)


def work_rows(unit, source: int, job: Job) -> Piece:
    piece, overrides, parts = Piece(), dict(job.overrides), {name: [] for name in SPLITS}
    chars: set[str] = set()
    for row, value, invalid in unit.rows():
        text, halves = rows.clean(value, unit.where(row), unit.column)
        piece.rows += 1
        piece.replaced += invalid + halves
        if not text:
            piece.empty += 1
            continue
        raw = text.encode("utf-8")
        piece.text_bytes += len(raw)
        place = rank(hashlib.sha256(raw).hexdigest())
        name = overrides.get((source, row)) or split_of(place, job.train_frac)
        if nearer_edge(name, place, piece.edges.get(name)):
            piece.edges[name] = (place, row)
        piece.starts[name] += 1
        if job.what == "chars":
            chars.update(text)
        else:
            parts[name].append(worker_tokenizer(*job.tokenizer).encode_array(text).astype(DTYPE))
    piece.chars = "".join(sorted(chars))
    piece.ids = {name: joined(arrays, job) for name, arrays in parts.items() if arrays}
    piece.offsets = {name: starts_in(arrays, job) for name, arrays in parts.items() if arrays}
    return piece


def nearer_edge(split: str, place: float, edge: Optional[tuple]) -> bool:
    """Whether a document at `place` is nearer the split's edge than `edge` (rank first): the highest
    rank in train, the lowest in val (the one to move when the other split is empty)."""
    return edge is None or (place > edge[0] if split == "train.bin" else place < edge[0])


def starts_in(arrays: list[np.ndarray], job: Job) -> np.ndarray:
    """Where each document starts in `joined(arrays, job)`."""
    lengths = np.array([len(a) for a in arrays], dtype=np.int64) + (job.separator is not None)
    return np.concatenate(([0], np.cumsum(lengths)[:-1])).astype(np.int64)


def joined(arrays: list[np.ndarray], job: Job) -> np.ndarray:
    """Documents' tokens, the job's separator between them."""
    if job.separator is not None:
        sep = np.array([job.separator], dtype=DTYPE)
        arrays = [part for array in arrays for part in (sep, array)][1:]
    return np.concatenate(arrays)
