"""gpt2/data/units.py: what a prepare worker makes of a unit: tokens per split, documents, edges."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest

from gpt2.data import rows
from gpt2.data.tokenizer import GPT2Tokenizer
from gpt2.data.units import Job, TextRange, rank, work

from conftest import MIRROR


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("data")
    encoder = GPT2Tokenizer(data_dir, MIRROR)
    state = {**encoder.state(), "eot_token": encoder.eot_token}
    return encoder, Job("tokens", 0.5, (json.dumps(state), str(data_dir), str(MIRROR)), separator=encoder.eot_token)


def unit(*texts) -> rows.JsonLines:
    return rows.JsonLines("a.jsonl", "".join(json.dumps({"text": t}) + "\n" for t in texts).encode(), 1, "text")


def ranked(text: str) -> float:
    return rank(hashlib.sha256(text.encode()).hexdigest())


def test_rows_are_documents_split_by_their_hash_and_separated(job):
    encoder, tokens = job
    texts = [f"document number {i}." for i in range(12)] + [""]
    piece = work(unit(*texts), 0, tokens)
    assert (piece.rows, piece.empty) == (13, 1)
    for name in ("train.bin", "val.bin"):
        mine = [t for t in texts[:-1] if (ranked(t) >= 0.5) == (name == "val.bin")]
        expected = sum(([encoder.eot_token] + encoder.encode(t) for t in mine), [])[1:]
        assert piece.ids[name].tolist() == expected and piece.starts[name] == len(mine)
    train = [(ranked(t), i + 1) for i, t in enumerate(texts[:-1]) if ranked(t) < 0.5]
    val = [(ranked(t), i + 1) for i, t in enumerate(texts[:-1]) if ranked(t) >= 0.5]
    assert piece.edges == {"train.bin": max(train), "val.bin": min(val)}  # rows are numbered by line


def test_a_job_can_move_a_row_to_the_other_split(job):
    encoder, tokens = job
    text = next(f"row {i}" for i in range(100) if ranked(f"row {i}") < 0.5)
    moved = dataclasses.replace(tokens, overrides=(((3, 1), "val.bin"),))
    assert list(work(unit(text), 3, moved).ids) == ["val.bin"]
    assert list(work(unit(text), 2, moved).ids) == ["train.bin"]  # another source's row 1


def test_a_text_range_continues_its_document_and_chars_are_collected(tmp_path, job):
    encoder, tokens = job
    (tmp_path / "a.txt").write_text("Hello world. " * 100)
    first = work(TextRange(str(tmp_path / "a.txt"), 0, 600, "val.bin", 1 << 20), 0, tokens)
    later = work(TextRange(str(tmp_path / "a.txt"), 600, 1300, "val.bin", 1 << 20), 0, tokens)
    assert first.starts["val.bin"] == 1 and later.starts["val.bin"] == 0
    assert first.ids["val.bin"].tolist() + later.ids["val.bin"].tolist() == encoder.encode("Hello world. " * 100)
    chars = work(unit("ab", "ba c"), 0, Job("chars", 0.5))
    assert chars.chars == " abc" and not chars.ids
