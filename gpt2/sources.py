"""Where a run's tokens come from: a `TokenSource` gives the tokenizer and the train and validation
token sequences; the Dataset (gpt2/data.py) only ever sees those sequences.

Today's source is a UTF-8 text file tokenized in memory: the file (Tiny Shakespeare by default, fetched
with a checksum) is read and hashed once, its tokens are cached under data_dir/cache keyed by that hash
and the tokenizer, and the sequence is split contiguously, the first `train_frac` of it for training
(`load_tokens` and `train_valid_split`, the pipeline's first two steps). A source of memory-mapped
token files plugs in beside it through `make_source`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

import torch

from gpt2.config import DataConfig
from gpt2.download import TINY_SHAKESPEARE, fetch
from gpt2.errors import DataError
from gpt2.files import atomic_file, sha256_bytes
from gpt2.tokenizer import Tokenizer, build_tokenizer, tokenizer_from_state

log = logging.getLogger(__name__)

CACHE_VERSION = 1


class TokenSource(Protocol):
    """The tokens of a run, already split."""

    tokenizer: Tokenizer
    fingerprint: str
    """Identifies the tokens (the text's sha256): a checkpoint only resumes on the same tokens."""

    def splits(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(train, valid): two 1-D integer token sequences."""
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
    except OSError as exc:
        raise DataError(f"the token cache {cache} cannot be written ({exc.strerror}): set data.data_dir to "
                        f"a writable directory") from None
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


def make_source(cfg: DataConfig) -> TokenSource:
    """The token source data config asks for (today: a text file)."""
    return TextSource(cfg)
