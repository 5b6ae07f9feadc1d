"""Where a run's tokens come from: a `TokenSource` gives the tokenizer and the train and validation
token sequences; the Dataset (gpt2/data/loaders.py) only ever sees those sequences.

`TextSource` (data.source=text) is a UTF-8 text file tokenized in memory: the file (Tiny Shakespeare by
default, fetched with a checksum) is read and hashed once, its tokens are cached under data_dir/cache
keyed by that hash and the tokenizer, and the sequence is split contiguously, the first `train_frac` of
it for training (`load_tokens` and `train_valid_split`, the pipeline's first two steps).

`BinSource` (data=bin) memory-maps the token files scripts/prepare.py writes (train.bin and val.bin,
uint16; gpt2/data/tokenfiles.py): corpora of billions of tokens, in bounded memory.
"""

from __future__ import annotations

import errno
import json
import logging
from pathlib import Path
from typing import Protocol

import torch

from gpt2.config import DataConfig
from gpt2.data.download import TINY_SHAKESPEARE, fetch
from gpt2.errors import DataError
from gpt2.files import atomic_file, sha256_bytes
from gpt2.data.tokenfiles import MARKER, SPLITS, TokenFile, prepare_running, quick_fingerprint, read_manifest
from gpt2.data.tokenizer import Tokenizer, build_tokenizer, tokenizer_from_state

log = logging.getLogger(__name__)

CACHE_VERSION = 1


class TokenSource(Protocol):
    """The tokens of a run, already split."""

    tokenizer: Tokenizer
    fingerprint: str
    """Identifies the tokens (the text's sha256): a checkpoint only resumes on the same tokens."""

    def splits(self) -> tuple[torch.Tensor | TokenFile, torch.Tensor | TokenFile]:
        """(train, valid): two 1-D integer token sequences (in memory, or memory-mapped files)."""
        ...

    def describe(self) -> str:
        """The sizes of the splits and where they came from, for messages."""
        ...


# --------------------------------------------------------------------------------------------- text
def source_path(cfg: DataConfig) -> Path:
    """The text to train on: data.path, else Tiny Shakespeare (fetched into data_dir if needed)."""
    if cfg.path is None:
        return fetch(TINY_SHAKESPEARE, cfg.data_dir, cfg.mirror)
    path = Path(cfg.path).expanduser()
    if not path.is_file():
        raise DataError(f"data.path={path} does not exist (or is not a file)")
    return path


def read_text(path: Path) -> tuple[str, str]:
    """The file's text and the sha256 of its bytes; an unreadable, empty or non-UTF-8 file is a
    DataError."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path} cannot be read ({exc.strerror}): check its permissions, or point "
                        f"data.path at a readable text file") from None
    if not raw.strip():
        raise DataError(f"{path} is empty: there is no text to train on")
    try:
        return raw.decode("utf-8"), sha256_bytes(raw)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text (invalid byte at offset {exc.start}); "
                        f"convert it to UTF-8 or point data.path at a text file") from None


def _tokenize_cached(cfg: DataConfig, path: Path, corpus: str, text_sha256: str
                     ) -> tuple[torch.Tensor, Tokenizer]:
    """The corpus's tokens (int64) and tokenizer, from data_dir/cache when this text was seen before."""
    cache = Path(cfg.data_dir) / "cache" / f"{text_sha256[:20]}-{cfg.tokenizer}.pt"
    if cache.is_file():
        try:
            saved = torch.load(cache, weights_only=True)
            if saved["version"] == CACHE_VERSION:
                return saved["tokens"].long(), tokenizer_from_state(saved["tokenizer"], cfg.data_dir, cfg.mirror)
        except Exception as exc:  # a damaged cache is rebuilt, never trusted
            log.warning("ignoring unreadable token cache %s (%s)", cache, exc)
    encoder = build_tokenizer(cfg.tokenizer, corpus, cfg.data_dir, cfg.mirror)
    tokens = torch.tensor(encoder.encode(corpus), dtype=torch.int64)
    try:
        with atomic_file(cache) as f:
            torch.save({"version": CACHE_VERSION, "tokens": tokens.to(torch.int32),
                        "tokenizer": encoder.state(), "source": str(path)}, f)
    except OSError as exc:  # a full disk at any byte too (atomic_file raises it as itself)
        fix = ("free some space, or set data.data_dir to a directory on another disk" if exc.errno == errno.ENOSPC
               else "set data.data_dir to a writable directory")
        raise DataError(f"the token cache {cache} cannot be written ({exc.strerror}): {fix}") from None
    log.info("tokenized %s: %d tokens with %s, cached in %s", path, len(tokens), encoder.name, cache)
    return tokens, encoder


def _read_and_tokenize(cfg: DataConfig) -> tuple[Path, str, str, torch.Tensor, Tokenizer]:
    """(path, corpus, text sha256, tokens, tokenizer) of the configured text."""
    path = source_path(cfg)
    corpus, text_sha256 = read_text(path)
    return (path, corpus, text_sha256, *_tokenize_cached(cfg, path, corpus, text_sha256))


def load_tokens(cfg: DataConfig) -> tuple[str, torch.Tensor, Tokenizer]:
    """(corpus, tokens, encoder): the text, its tokens as a 1-D int64 tensor, and the tokenizer."""
    _, corpus, _, tokens, encoder = _read_and_tokenize(cfg)
    return corpus, tokens, encoder


def train_valid_split(tokens: torch.Tensor, train_frac: float = 0.9) -> tuple[torch.Tensor, torch.Tensor]:
    """Contiguous split: the first int(N * train_frac) tokens train, the rest validate (views, no copy)."""
    split = int(len(tokens) * train_frac)
    return tokens[:split], tokens[split:]


class TextSource:
    """A UTF-8 text file, tokenized in memory (through the token cache) and split contiguously. Only
    the tokens are kept: the text itself is not held for the length of a run."""

    def __init__(self, cfg: DataConfig):
        self.path, _, self.fingerprint, self.tokens, self.tokenizer = _read_and_tokenize(cfg)
        self.train_frac = cfg.train_frac

    def splits(self) -> tuple[torch.Tensor, torch.Tensor]:
        return train_valid_split(self.tokens, self.train_frac)

    def describe(self) -> str:
        train, valid = self.splits()
        return (f"{self.path}: {len(self.tokens)} tokens, train_frac={self.train_frac}: "
                f"{len(train)} train, {len(valid)} valid")


# ---------------------------------------------------------------------------------------- token files
class BinSource:
    """train.bin and val.bin of data.dir, memory-mapped (nothing is read whole or tokenized). The
    tokenizer is the manifest's; files without a manifest (nanoGPT's) are read as GPT-2 tokens. The
    fingerprint is the manifest's record of the files (their sha256), else their sizes, heads and tails."""

    def __init__(self, cfg: DataConfig):
        self.directory = Path(cfg.dir).expanduser()
        self._check_directory()
        manifest = read_manifest(self.directory)
        self.train, self.valid = (TokenFile(self.directory / name) for name in SPLITS)
        if manifest is None:
            log.info("%s has no manifest.json: reading its files as GPT-2 uint16 tokens (nanoGPT's layout)",
                     self.directory)
            tokenizer = {"name": "gpt2", "vocab_size": 50257}
            self.fingerprint = quick_fingerprint([self.train.path, self.valid.path])
        else:  # TokenFile checked each file against it (size, sampled hash)
            tokenizer = manifest["tokenizer"]
            self.fingerprint = sha256_bytes(json.dumps(manifest["files"], sort_keys=True).encode())
        self.tokenizer = tokenizer_from_state(tokenizer, cfg.data_dir, cfg.mirror)
        log.info("token files %s: %d train and %d valid tokens, tokenizer %s (theirs: data.tokenizer and "
                 "data.train_frac do not apply)", self.directory, len(self.train), len(self.valid), self.tokenizer.name)
        for file in (self.train, self.valid):
            top = file.max_token()
            if top >= self.tokenizer.vocab_size:
                raise DataError(f"{file.path} holds token id {top}, outside the {self.tokenizer.name} vocabulary "
                                f"({self.tokenizer.vocab_size} ids): it was made with another tokenizer")

    def _check_directory(self) -> None:
        directory = self.directory
        if directory.is_file():
            raise DataError(f"data.dir={directory} is a file: data=bin reads a directory of token files (made by "
                            f"scripts/prepare.py); to train on a text file use data=text_file data.path={directory}")
        if not directory.is_dir():
            raise DataError(f"data.dir={directory} is not a directory: make the token files with "
                            f"python scripts/prepare.py <text files> --out {directory}")
        committing = (directory / MARKER).exists()
        if (committing or not all((directory / name).exists() for name in SPLITS)) and prepare_running(directory):
            raise DataError(f"{directory} is being written by scripts/prepare.py now: wait for it to end")
        if committing:
            raise DataError(f"{directory}: a scripts/prepare.py was stopped while it put its files in place: "
                            f"run it again")

    def splits(self) -> tuple[TokenFile, TokenFile]:
        return self.train, self.valid

    def describe(self) -> str:
        return f"{self.directory}: {len(self.train)} train tokens, {len(self.valid)} valid"


def make_source(cfg: DataConfig) -> TokenSource:
    """The token source data.source names."""
    return BinSource(cfg) if cfg.source == "bin" else TextSource(cfg)
