"""scripts/prepare.py and gpt2/prepare.py: text files -> train.bin, val.bin, manifest.json."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from gpt2 import prepare as prep
from gpt2.errors import DataError
from gpt2.prepare import Settings, prepare
from gpt2.tokenizer import GPT2Tokenizer

from conftest import MIRROR, ROOT

SHAKESPEARE = MIRROR / "tinyshakespeare" / "input.txt"


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    return GPT2Tokenizer(tmp_path_factory.mktemp("bpe"), MIRROR)


def settings(tmp_path, **changes) -> Settings:
    return Settings(data_dir=str(tmp_path / "data"), mirror=str(MIRROR), **changes)


def tokens(path) -> list[int]:
    return np.fromfile(path, dtype=np.uint16).tolist()


def test_one_file_is_its_whole_encoding_split_by_position(tmp_path, gpt2, monkeypatch):
    """Cut into many ranges tokenized by two worker processes, the file's tokens are exactly those of
    encoding it whole; the first int(N * train_frac) train."""
    monkeypatch.setattr(prep, "CHUNK_BYTES", 20_000)  # 56 ranges, each cut where GPT-2 splits anyway
    manifest = prepare([str(SHAKESPEARE)], tmp_path / "out", settings(tmp_path, workers=2))
    expected = gpt2.encode(SHAKESPEARE.read_text())
    train, val = tokens(tmp_path / "out" / "train.bin"), tokens(tmp_path / "out" / "val.bin")
    assert train + val == expected
    assert len(train) == int(len(expected) * 0.9)
    assert manifest["split"] == "position" and manifest["unsafe_cuts"] == 0
    assert manifest["files"]["train.bin"]["tokens"] == len(train)
    assert manifest["sources"][0]["sha256"] == "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
    assert not list((tmp_path / "out").glob(".*.tmp")) and not (tmp_path / "out" / prep.MARKER).exists()


def test_documents_are_separated_and_split_by_their_content(tmp_path, gpt2):
    corpus = tmp_path / "corpus"
    texts = {f"doc{i:02d}.txt": f"Document {i}: " + "words and more words. " * (i + 1) for i in range(30)}
    texts["sub/copy.txt"] = texts["doc07.txt"]
    for name, text in texts.items():
        (corpus / name).parent.mkdir(parents=True, exist_ok=True)
        (corpus / name).write_text(text)
    (corpus / ".hidden.txt").write_text("never read")
    manifest = prepare([str(corpus)], tmp_path / "out", settings(tmp_path, train_frac=0.8))
    split = {os.path.relpath(d["path"], corpus): d["split"] for d in manifest["sources"]}
    assert sorted(split) == sorted(texts)  # recursive, sorted, hidden files skipped
    assert split["sub/copy.txt"] == split["doc07.txt"]  # identical documents share a split
    for name, out in (("train", "train.bin"), ("val", "val.bin")):
        docs = [texts[k] for k in sorted(texts) if split[k] == name]
        expected = []
        for text in docs:
            expected += ([50256] if expected else []) + gpt2.encode(text)
        assert tokens(tmp_path / "out" / out) == expected
        assert manifest["files"][out]["documents"] == len(docs)
    assert 2 <= list(split.values()).count("val") <= 12  # ~20% of 31
    again = prepare([str(corpus)], tmp_path / "again", settings(tmp_path, train_frac=0.8))
    assert again["files"] == manifest["files"]  # reproducible: same bytes, same sha256


def test_a_second_run_on_unchanged_inputs_does_nothing(tmp_path):
    (tmp_path / "a.txt").write_text("Hello there. " * 200)
    out = tmp_path / "out"
    first = prepare([str(tmp_path / "a.txt")], out, settings(tmp_path))
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    again = prepare([str(tmp_path / "a.txt")], out, settings(tmp_path))
    assert again["up_to_date"] and again["files"] == first["files"]
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps
    (tmp_path / "a.txt").write_text("Hello there. " * 300)  # a changed source is prepared again
    changed = prepare([str(tmp_path / "a.txt")], out, settings(tmp_path))
    assert "up_to_date" not in changed
    assert changed["files"]["train.bin"]["tokens"] > first["files"]["train.bin"]["tokens"]


def test_an_interrupted_prepare_leaves_no_finished_looking_file(tmp_path, monkeypatch):
    (tmp_path / "a.txt").write_text("Hello there. " * 5000)
    out = tmp_path / "out"
    monkeypatch.setattr(prep, "CHUNK_BYTES", 4096)
    calls = []

    def interrupted(*args):
        calls.append(args)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return original(*args)

    original = prep.encode_range
    monkeypatch.setattr(prep, "encode_range", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare([str(tmp_path / "a.txt")], out, settings(tmp_path))
    assert sorted(p.name for p in out.iterdir()) == sorted([".prepare.lock", prep.MARKER])
    monkeypatch.setattr(prep, "encode_range", original)
    assert prepare([str(tmp_path / "a.txt")], out, settings(tmp_path))["files"]["val.bin"]["tokens"] > 0


def test_a_killed_prepare_script_is_finished_by_running_it_again(tmp_path, gpt2):
    big = tmp_path / "big.txt"
    big.write_text(SHAKESPEARE.read_text() * 12)  # 13 MB: seconds of tokenizing
    command = [sys.executable, str(ROOT / "scripts" / "prepare.py"), str(big), "--out", str(tmp_path / "out"),
               "--workers", "1", "--data-dir", str(tmp_path / "data")]
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while not (tmp_path / "out" / ".train.bin.tmp").exists() and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    names = {p.name for p in (tmp_path / "out").iterdir()}
    assert "train.bin" not in names and "manifest.json" not in names and prep.MARKER in names
    done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"wrote {tmp_path / 'out'}: train.bin ")
    assert tokens(tmp_path / "out" / "train.bin") + tokens(tmp_path / "out" / "val.bin") == gpt2.encode(big.read_text())
    assert not list((tmp_path / "out").glob(".*.tmp")) and not (tmp_path / "out" / prep.MARKER).exists()


def test_bad_input_is_counted_or_refused(tmp_path):
    (tmp_path / "good.txt").write_text("fine text here. " * 50)
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 cr\xe8me br\xfbl\xe9e. ".encode("latin-1") * 10)
    (tmp_path / "empty.txt").write_bytes(b"")
    manifest = prepare([str(tmp_path / "*.txt")], tmp_path / "out", settings(tmp_path))
    assert manifest["replaced_bytes"] == 40 and manifest["skipped"] == [{"path": str(tmp_path / "empty.txt"),
                                                                       "reason": "empty"}]
    script = [sys.executable, str(ROOT / "scripts" / "prepare.py"), "--data-dir", str(tmp_path / "data")]
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "word.txt").write_text("Hello")
    result = subprocess.run(script + [str(tmp_path / "*.txt"), "--out", str(tmp_path / "out2")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "40 bytes that were not UTF-8 replaced by U+FFFD, in 1 file(s)" in result.stdout
    assert f"1 empty file(s) skipped (first: {tmp_path / 'empty.txt'})" in result.stdout
    for args, message in [
        ([str(tmp_path / "nope")], "nope: no such file or directory, and no file matches it as a pattern"),
        ([str(tmp_path / "empty.txt")], "all 1 input files are empty: there is no text to tokenize"),
        ([str(tmp_path / "good.txt"), "--train-frac", "1.5"], "--train-frac: must be between 0 and 1"),
        ([str(tmp_path / "one" / "word.txt")], "train.bin would hold no tokens (1 in all): give more text"),
    ]:
        result = subprocess.run(script + args + ["--out", str(tmp_path / "bad")], capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == 1 and message in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_a_char_vocabulary_beyond_uint16_is_refused(tmp_path):
    many = "".join(chr(c) for c in range(0x10000, 0x10000 + 70_000))  # beyond the surrogates
    (tmp_path / "wide.txt").write_text(many)
    with pytest.raises(DataError, match="70000 distinct characters, more token ids than uint16 files can store"):
        prepare([str(tmp_path / "wide.txt")], tmp_path / "out", settings(tmp_path, tokenizer="char"))


def test_token_files_it_did_not_write_are_never_replaced(tmp_path):
    (tmp_path / "a.txt").write_text("some text. " * 100)
    out = tmp_path / "nanogpt"
    out.mkdir()
    (out / "train.bin").write_bytes(b"\x01\x00" * 100)
    with pytest.raises(DataError, match="already holds train.bin without a manifest.json"):
        prepare([str(tmp_path / "a.txt")], out, settings(tmp_path))
    assert (out / "train.bin").read_bytes() == b"\x01\x00" * 100


def test_the_output_directory_is_never_read_as_input(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("some text. " * 100)
    prepare([str(corpus)], corpus / "out", settings(tmp_path))
    manifest = prepare([str(corpus)], corpus / "out", settings(tmp_path))  # out/ is inside the corpus
    assert manifest["up_to_date"]
    assert [d["path"] for d in manifest["sources"]] == [str(corpus / "a.txt")]


def test_a_long_run_without_whitespace_is_cut_at_a_character_and_counted(tmp_path, monkeypatch):
    monkeypatch.setattr(prep, "CHUNK_BYTES", 1000)
    monkeypatch.setattr(prep, "MAX_SCAN", 100)
    (tmp_path / "a.txt").write_text("é" * 3000 + " end of text. " * 50)
    manifest = prepare([str(tmp_path / "a.txt")], tmp_path / "out", settings(tmp_path))
    # ranges end at bytes 1000, 2000, ... 6000: the five inside the 6000 bytes of "é" find no safe cut
    assert manifest["unsafe_cuts"] == 5 and manifest["replaced_bytes"] == 0  # never inside a character
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["unsafe_cuts"] == 5
