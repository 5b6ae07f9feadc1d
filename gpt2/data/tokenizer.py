"""Tokenizers: GPT-2 BPE through tiktoken (from checksummed local files) and character-level.

Both expose `name`, `vocab_size`, `encode`, `decode` and `state()`; `state()` is what a checkpoint or a
token cache stores to rebuild the same tokenizer (`tokenizer_from_state`).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Optional, Protocol, Sequence

import numpy as np

from gpt2.data.download import GPT2_ENCODER_JSON, GPT2_VOCAB_BPE, fetch
from gpt2.errors import DataError
from gpt2.files import shown

GPT2_VOCAB = 50257


class Tokenizer(Protocol):
    name: str
    vocab_size: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def token_bytes(self) -> list[int]:
        """The UTF-8 length in bytes of each token id (for bits per byte)."""
        ...

    def state(self) -> dict: ...


class GPT2Tokenizer:
    """tiktoken's `gpt2` encoding (50,257 tokens, <|endoftext|> = 50256). Text is encoded as ordinary
    text, as nanoGPT does: a literal '<|endoftext|>' in the corpus is not a special token."""

    name = "gpt2"

    def __init__(self, data_dir: str | Path, mirror: Optional[str | Path] = None):
        import tiktoken
        from tiktoken.load import data_gym_to_mergeable_bpe_ranks
        from tiktoken_ext.openai_public import ENDOFTEXT, r50k_pat_str

        vocab_bpe = fetch(GPT2_VOCAB_BPE, data_dir, mirror)
        encoder_json = fetch(GPT2_ENCODER_JSON, data_dir, mirror)
        ranks = data_gym_to_mergeable_bpe_ranks(str(vocab_bpe), str(encoder_json),
                                                GPT2_VOCAB_BPE.sha256, GPT2_ENCODER_JSON.sha256)
        self.encoding = tiktoken.Encoding("gpt2", pat_str=r50k_pat_str, mergeable_ranks=ranks,
                                          special_tokens={ENDOFTEXT: GPT2_VOCAB - 1}, explicit_n_vocab=GPT2_VOCAB)
        self.vocab_size = self.encoding.n_vocab
        self.eot_token = self.encoding.eot_token

    def encode(self, text: str) -> list[int]:
        return self.encoding.encode_ordinary(text)

    def encode_array(self, text: str) -> np.ndarray:
        """encode() for long texts, as a numpy array (tiktoken's own, no Python list)."""
        return self.encoding.encode_to_numpy(text, allowed_special=set(), disallowed_special=())

    def token_bytes(self) -> list[int]:
        """<|endoftext|> (a document separator in token files) is no text: 0 bytes."""
        lengths = [len(self.encoding.decode_single_token_bytes(i)) for i in range(self.vocab_size)]
        lengths[self.eot_token] = 0
        return lengths

    def decode(self, ids: Sequence[int]) -> str:
        return self.encoding.decode(list(ids))

    def state(self) -> dict:
        return {"name": self.name, "vocab_size": self.vocab_size}


class CharTokenizer:
    """One token per distinct character of the corpus, ids in sorted character order (nanoGPT's
    shakespeare_char: 65 characters for Tiny Shakespeare)."""

    name = "char"

    def __init__(self, chars: str):
        self.chars = chars
        self.vocab_size = len(chars)
        self._stoi = {c: i for i, c in enumerate(chars)}

    @classmethod
    def from_text(cls, text: str) -> "CharTokenizer":
        return cls("".join(sorted(set(text))))

    def encode(self, text: str) -> list[int]:
        try:
            return [self._stoi[c] for c in text]
        except KeyError as exc:
            raise ValueError(f"character {exc.args[0]!r} is not in this char vocabulary") from None

    def encode_array(self, text: str) -> np.ndarray:
        """encode() for long texts: vectorised, int64 ids."""
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        table = np.frombuffer(self.chars.encode("utf-32-le"), dtype=np.uint32)  # sorted: chars are
        ids = np.minimum(np.searchsorted(table, codes), len(table) - 1)
        unknown = np.flatnonzero(table[ids] != codes)
        if unknown.size:
            raise ValueError(f"character {chr(codes[unknown[0]])!r} is not in this char vocabulary")
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.chars[i] for i in ids)

    def token_bytes(self) -> list[int]:
        return [len(c.encode("utf-8")) for c in self.chars]

    def state(self) -> dict:
        return {"name": self.name, "vocab_size": self.vocab_size, "chars": self.chars}


def build_tokenizer(name: str, corpus: str, data_dir: str | Path,
                    mirror: Optional[str | Path] = None) -> Tokenizer:
    if name == "char":
        return CharTokenizer.from_text(corpus)
    if name == "gpt2":
        return GPT2Tokenizer(data_dir, mirror)
    raise ValueError(f"unknown tokenizer {name!r} (expected 'gpt2' or 'char')")


def chars_problem(chars) -> Optional[str]:
    """What is wrong with a char vocabulary (a non-empty string of distinct characters, in sorted
    order: ids are sorted character order), or None."""
    if not isinstance(chars, str) or not chars:
        return f"{shown(chars)} is not a non-empty string of characters"
    twice = [c for c, count in Counter(chars).items() if count > 1]
    if twice:
        return f"holds {twice[0]!r} more than once"
    if list(chars) != sorted(chars):
        return "is not in sorted order (a char tokenizer's ids are its characters in sorted order)"
    return None


def tokenizer_problem(state) -> Optional[str]:
    """What is wrong with a tokenizer's state (a manifest's or a checkpoint's), naming the field
    ('tokenizer.chars: ...'), or None where `tokenizer_from_state` can rebuild it."""
    if not isinstance(state, dict):
        return "tokenizer: missing" if state is None else f"tokenizer: {shown(state)} is not an object"
    name = state.get("name")
    if name not in ("gpt2", "char"):
        return f"tokenizer.name: {shown(name)} is not a tokenizer this harness knows (gpt2 or char)"
    if name == "char" and "chars" not in state:
        return "tokenizer.chars: missing (a char tokenizer's characters)"
    problem = chars_problem(state["chars"]) if name == "char" else None
    if problem is not None:
        return f"tokenizer.chars: {problem}"
    size = GPT2_VOCAB if name == "gpt2" else len(state["chars"])
    if state.get("vocab_size", size) != size:
        return f"tokenizer.vocab_size: {shown(state['vocab_size'])} is not {size} (its {name} vocabulary)"
    return None


def tokenizer_from_state(state: dict, data_dir: str | Path, mirror: Optional[str | Path] = None
                         ) -> Tokenizer:
    """The tokenizer `state()` describes; a state that cannot describe one is a DataError naming the field."""
    problem = tokenizer_problem(state)
    if problem is not None:
        raise DataError(f"{problem}: this tokenizer state cannot be rebuilt")
    if state["name"] == "char":
        return CharTokenizer(state["chars"])
    return build_tokenizer(state["name"], "", data_dir, mirror)
