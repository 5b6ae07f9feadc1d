"""Corpora with a document per row: Parquet files, JSON Lines (.jsonl, .jsonl.gz, .jsonl.zst) and
Hugging Face datasets, read in bounded pieces for scripts/prepare.py.

A piece is a unit of work a prepare worker reads and tokenizes itself: a Parquet row group
(`ParquetGroup`, read by the worker from the file), a run of whole JSON lines (`JsonLines`, bytes the
main process read, decompressed, from the file) or a run of a dataset's rows (`RowTexts`, strings the
main process streamed). Each yields (row, value, invalid bytes); `clean` turns a value into the
document's text or raises one DataError naming the file and row group, line or row.

pyarrow, zstandard and datasets are an optional extra (`pip install -e '.[corpora]'`): without them a
plain install still prepares text files, and an input that needs one is one line saying what to install.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import re
import socket
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from gpt2.errors import DataError
from gpt2.data.textranges import decode_replacing

FORMATS = {".jsonl.zst": "jsonl.zst", ".jsonl.gz": "jsonl.gz", ".jsonl": "jsonl", ".parquet": "parquet"}
"""File name endings of row files, and their format."""
EXTRA = "pip install -e '.[corpora]'"
NEWLINE = b"\n"
_SURROGATE = re.compile("[\ud800-\udfff]")  # half a character (JSON's "\ud800"): no text, not encodable


def row_format(path: str | os.PathLike) -> Optional[str]:
    name = str(path).lower()
    return next((fmt for suffix, fmt in FORMATS.items() if name.endswith(suffix)), None)


def need(module: str, what: str):
    """The optional `module`, or one DataError saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise DataError(f"{what} needs the {module} package, which the corpora extra installs: {EXTRA}") from None


def describe_value(value: object) -> str:
    return "null" if value is None else f"a {type(value).__name__}"


def clean(value: object, where: str, column: str) -> tuple[str, int]:
    """(text, characters replaced by U+FFFD) of a row's value: a string, with lone surrogates replaced."""
    if not isinstance(value, str):
        raise DataError(f"{where}: the {column!r} value is {describe_value(value)}, not a string (each row must "
                        f"hold a document's text: choose the column with --text-column)")
    halves = len(_SURROGATE.findall(value))
    return (_SURROGATE.sub("\ufffd", value), halves) if halves else (value, 0)


# -------------------------------------------------------------------------------------------- Parquet
def parquet_file(path: str):
    """The open file (each worker keeps its last one open: a row group at a time reads it again and
    again), or one DataError."""
    stat = os.stat(path)
    return _parquet_file(path, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=1)
def _parquet_file(path: str, size: int, mtime_ns: int):
    pq = need("pyarrow.parquet", f"{path}: reading Parquet")
    try:
        return pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ... for a damaged file
        raise DataError(f"{path}: not a readable Parquet file ({exc}): replace it (download it again?)") from None


def parquet_groups(path: str, column: str) -> list[int]:
    """The number of rows of each row group, after checking that `column` holds strings."""
    pa = need("pyarrow", f"{path}: reading Parquet")
    parquet = parquet_file(path)
    schema = parquet.schema_arrow
    if column not in schema.names:
        raise DataError(f"{path}: no column {column!r} (its columns: {', '.join(schema.names)}): "
                        f"name the text column with --text-column")
    kind = schema.field(column).type
    text = (pa.types.is_string, pa.types.is_large_string, getattr(pa.types, "is_string_view", lambda t: False))
    values = kind.value_type if pa.types.is_dictionary(kind) else kind  # pandas' categorical strings
    if not any(test(values) for test in text):
        raise DataError(f"{path}: column {column!r} holds {kind}, not strings: name the text column with "
                        f"--text-column")
    metadata = parquet.metadata
    return [metadata.row_group(g).num_rows for g in range(metadata.num_row_groups)]


@dataclass(frozen=True)
class ParquetGroup:
    path: str
    group: int
    column: str
    first_row: int

    def where(self, row: int) -> str:
        return f"{self.path}: row group {self.group} (row {row})"

    def rows(self) -> Iterator[tuple[int, object, int]]:
        parquet, row = parquet_file(self.path), self.first_row
        try:
            batches = parquet.iter_batches(batch_size=1024, row_groups=[self.group], columns=[self.column])
            for batch in batches:
                for value in batch.column(0).to_pylist():
                    yield row, value, 0
                    row += 1
        except (DataError, GeneratorExit):
            raise
        except Exception as exc:  # damaged data pages: ArrowInvalid, OSError, UnicodeDecodeError, ...
            raise DataError(f"{self.where(row)}: cannot be read ({exc}): replace the file (download it "
                            f"again?)") from None


# --------------------------------------------------------------------------------------- JSON Lines
def open_jsonl(path: str, fmt: str):
    """The file's decompressed bytes, as a binary stream."""
    if fmt == "jsonl.gz":
        import gzip
        return gzip.open(path, "rb")
    if fmt == "jsonl.zst":
        zstandard = need("zstandard", f"{path}: reading .zst")
        return zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True)
    return open(path, "rb")


def jsonl_chunks(path: str, fmt: str, chunk_bytes: int) -> Iterator[tuple[int, bytes]]:
    """(number of its first line, whole lines) of about chunk_bytes each, read in order."""
    line, carry = 1, b""
    with open_jsonl(path, fmt) as stream:
        while True:
            try:
                block = stream.read(chunk_bytes)
            except Exception as exc:  # gzip.BadGzipFile, EOFError, zstandard.ZstdError, OSError
                last = line + carry.count(NEWLINE) - 1
                raise DataError(f"{path}: cannot be decompressed after line {last} "
                                f"({exc or type(exc).__name__}): replace the file (download it again?)") from None
            data = carry + block
            cut = len(data) if not block else data.rfind(b"\n") + 1
            if cut > 0:
                yield line, data[:cut]
                line += data.count(b"\n", 0, cut)
            carry = data[cut:]
            if not block:
                return


@dataclass(frozen=True)
class JsonLines:
    path: str
    data: bytes
    first_line: int
    column: str

    def where(self, line: int) -> str:
        return f"{self.path}:{line}"

    def rows(self) -> Iterator[tuple[int, object, int]]:
        for number, raw in enumerate(self.data.split(b"\n"), self.first_line):
            if not raw.strip():
                continue
            line, replaced = decode_replacing(raw)
            try:
                record = json.loads(line)
            except ValueError as exc:
                raise DataError(f"{self.where(number)}: not JSON ({exc})") from None
            if not isinstance(record, dict) or self.column not in record:
                keys = ", ".join(record) if isinstance(record, dict) else f"{describe_value(record)}, not an object"
                raise DataError(f"{self.where(number)}: no {self.column!r} key ({keys}): name the text key with "
                                f"--text-column")
            yield number, record[self.column], replaced


# ------------------------------------------------------------------------------- Hugging Face datasets
@dataclass(frozen=True)
class RowTexts:
    label: str
    texts: tuple
    first_row: int
    column: str

    def where(self, row: int) -> str:
        return f"{self.label}, row {row}"

    def rows(self) -> Iterator[tuple[int, object, int]]:
        for row, value in enumerate(self.texts, self.first_row):
            yield row, value, 0


@dataclass(frozen=True)
class HFDataset:
    name: str
    config: Optional[str] = None
    split: str = "train"

    @property
    def label(self) -> str:
        return f"hf:{self.name}" + (f" ({self.config})" if self.config else "") + f" split {self.split}"


def hub_reachable(timeout: float = 5.0) -> bool:
    endpoint = urllib.parse.urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    try:
        socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def saved_files(source: HFDataset) -> Optional[list[Path]]:
    """The Arrow files of a dataset saved with save_to_disk (of the split, for a DatasetDict); None
    where source.name is no such directory."""
    path = Path(source.name).expanduser()
    if (path / "dataset_dict.json").is_file():
        splits = json.loads((path / "dataset_dict.json").read_text()).get("splits", [])
        if source.split not in splits:
            raise DataError(f"{path} has no split {source.split!r} (its splits: {', '.join(splits)}): use --split")
        path = path / source.split
    if not (path / "state.json").is_file():
        return None
    try:
        return [path / entry["filename"] for entry in json.loads((path / "state.json").read_text())["_data_files"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path / 'state.json'} is not a saved dataset's state ({exc}): save it again") from None


def open_dataset(source: HFDataset):
    """A directory of data files or a Hub name, streamed by `datasets` (from the local HF cache alone
    when the Hub cannot be reached)."""
    path = Path(source.name).expanduser()
    offline = not path.is_dir() and not os.environ.get("HF_HUB_OFFLINE") and not hub_reachable()
    if offline:  # before datasets reads its settings, at import: the local HF cache alone
        os.environ["HF_HUB_OFFLINE"] = os.environ["HF_DATASETS_OFFLINE"] = "1"
    datasets = need("datasets", f"--hf-dataset {source.name}")
    try:
        return datasets.load_dataset(str(path) if path.is_dir() else source.name, source.config,
                                     split=source.split, streaming=True)
    except Exception as exc:  # datasets raises many kinds: not found, no network, bad config or split
        raise DataError(hf_failure(source, exc, offline)) from None


def saved_batches(files: list[Path], label: str) -> Iterator[dict]:
    """A saved dataset's rows in record batches ({column: values}), read from its Arrow files (not
    memory-mapped, as `datasets` would: resident memory stays one batch, whatever the dataset's size)."""
    pa = need("pyarrow", f"--hf-dataset {label}")
    for file in files:
        try:
            with pa.OSFile(str(file)) as f:
                for batch in pa.ipc.open_stream(f):
                    yield batch.to_pydict()
        except Exception as exc:  # a damaged or missing file: ArrowInvalid, OSError, ...
            raise DataError(f"{file}: cannot be read ({exc}): save the dataset again") from None


def hf_failure(source: HFDataset, exc: Exception, offline: bool) -> str:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if offline or os.environ.get("HF_HUB_OFFLINE"):
        return (f"--hf-dataset {source.name}: the Hugging Face Hub cannot be reached (no network?) and the local "
                f"HF cache ($HF_HOME, {os.environ.get('HF_HOME', '~/.cache/huggingface')}) does not hold it "
                f"({first}). Offline, give a local copy: a directory saved with save_to_disk, or the dataset's "
                f"Parquet/JSON Lines files as inputs; or set HF_ENDPOINT to a reachable mirror")
    return f"--hf-dataset {source.name}: cannot be loaded ({first})"


def dataset_rows(source: HFDataset, column: str) -> Iterator[tuple[int, object]]:
    """(row index, value of `column`) of every row, streamed."""
    files, row = saved_files(source), 0
    batches = saved_batches(files, source.label) if files is not None else open_dataset(source).iter(batch_size=1000)
    try:
        for batch in batches:
            if column not in batch:
                raise DataError(f"{source.label}: no column {column!r} (its columns: {', '.join(batch)}): "
                                f"name the text column with --text-column")
            for value in batch[column]:
                yield row, value
                row += 1
    except (DataError, GeneratorExit):
        raise
    except Exception as exc:  # a damaged shard, a lost connection
        raise DataError(f"{source.label}: reading stopped at row {row} ({exc})") from None


def dataset_chunks(source: HFDataset, column: str, chunk_bytes: int) -> Iterator[RowTexts]:
    """The dataset's rows in runs of about chunk_bytes of text."""
    texts: list = []
    size = first = 0
    for row, value in dataset_rows(source, column):
        if not texts:
            first = row
        texts.append(value)
        size += len(value) if isinstance(value, str) else 0
        if size >= chunk_bytes:
            yield RowTexts(source.label, tuple(texts), first, column)
            texts, size = [], 0
    if texts:
        yield RowTexts(source.label, tuple(texts), first, column)
