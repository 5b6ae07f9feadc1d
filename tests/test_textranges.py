"""gpt2/data/textranges.py: a text file read in ranges whose tokens are those of the whole file."""

from __future__ import annotations

import hashlib

import pytest

from gpt2.data import textranges
from gpt2.data.tokenizer import GPT2Tokenizer

from conftest import MIRROR

SHAKESPEARE = MIRROR / "tinyshakespeare" / "input.txt"


def test_a_file_is_hashed_and_a_nul_near_its_start_marks_it_binary(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"plain text")
    (tmp_path / "b.bin").write_bytes(b"\x89PNG\0\0data")
    assert textranges.hash_file(tmp_path / "a.txt") == (10, hashlib.sha256(b"plain text").hexdigest(), False)
    assert textranges.hash_file(tmp_path / "b.bin")[2]


def test_bytes_that_are_not_utf8_become_one_replacement_each():
    assert textranges.decode_replacing("café".encode() + b"\xff\xfe!") == ("café\ufffd\ufffd!", 2)


def test_cuts_fall_before_whitespace_that_follows_a_word(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes(b"one  two\nthree")
    with open(path, "rb") as f:
        assert [textranges.safe_cut(f, pos, 14)[0] for pos in (0, 1, 4, 5, 9, 14)] == [0, 3, 8, 8, 14, 14]


@pytest.mark.parametrize("size", [1000, 7919, 65536])
def test_ranges_tokenize_as_the_whole_file(tmp_path, size):
    tokenizer = GPT2Tokenizer(tmp_path / "data", MIRROR)
    path = str(SHAKESPEARE)
    total = SHAKESPEARE.stat().st_size // 8  # an eighth of Tiny Shakespeare, in ranges of `size`
    pieces = [textranges.read_range(path, start, min(start + size, total)) for start in range(0, total, size)]
    text = SHAKESPEARE.read_bytes()[:textranges.safe_cut(open(path, "rb"), total, SHAKESPEARE.stat().st_size)[0]]
    assert "".join(p[0] for p in pieces) == text.decode()
    assert sum((tokenizer.encode(p[0]) for p in pieces), []) == tokenizer.encode(text.decode())
    assert not any(p[1] or p[2] for p in pieces)
