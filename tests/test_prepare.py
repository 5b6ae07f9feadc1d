"""scripts/prepare.py and gpt2/data/prepare.py: text files -> train.bin, val.bin, manifest.json."""

from __future__ import annotations

import builtins
import errno
import gzip
import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from gpt2.data import prepare as prep
from gpt2.config import DataConfig
from gpt2.data.loaders import make_dataloader
from gpt2.errors import DataError
from gpt2.data.prepare import Settings, prepare
from gpt2.data.rows import HFDataset
from gpt2.data.tokenizer import GPT2Tokenizer

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
    manifest = prepare([str(corpus)], tmp_path / "out", settings(tmp_path, train_frac=0.8, split_by="documents"))
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
    assert again["split"] == "documents"  # auto: the shares are near enough the asked ones


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


@pytest.mark.slow
def test_a_stopped_or_failed_prepare_leaves_the_directory_as_it_was(tmp_path, monkeypatch):
    """A first prepare stopped mid-way leaves nothing (the directory it created is removed); a rerun
    stopped or failing mid-way leaves the earlier finished files, usable as they were."""
    (tmp_path / "a.txt").write_text("Hello there. " * 5000)
    out = tmp_path / "out"
    monkeypatch.setattr(prep, "CHUNK_BYTES", 4096)
    original, calls = prep.work, []

    def interrupted(*args, **kwargs):
        calls.append(args)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(prep, "work", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare([str(tmp_path / "a.txt")], out, settings(tmp_path))
    assert not out.exists()
    monkeypatch.setattr(prep, "work", original)
    first = prepare([str(tmp_path / "a.txt")], out, settings(tmp_path))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    (tmp_path / "a.txt").write_text("Hello again. " * 6000)  # changed: prepared again, and stopped
    calls.clear()
    monkeypatch.setattr(prep, "work", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare([str(tmp_path / "a.txt")], out, settings(tmp_path))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    with pytest.raises(DataError, match="would hold no tokens"):  # a rerun that fails
        prepare([str(tmp_path / "a.txt")], out, settings(tmp_path, train_frac=1e-9))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert len(make_dataloader(DataConfig(source="bin", dir=str(out), data_dir=str(tmp_path / "data"),
                                          block_size=8, batch_size=4)).train_dl) > 0
    assert first["files"]["train.bin"]["tokens"] == len(tokens(out / "train.bin"))


@pytest.mark.slow
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
    assert "train.bin" not in names and "manifest.json" not in names
    done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"wrote {tmp_path / 'out'}: train.bin ")
    assert tokens(tmp_path / "out" / "train.bin") + tokens(tmp_path / "out" / "val.bin") == gpt2.encode(big.read_text())
    assert not list((tmp_path / "out").glob(".*.tmp")) and not (tmp_path / "out" / prep.MARKER).exists()


def big_input(tmp_path, kind: str):
    """13 MB of text: one file, or rows of ~5 KB in a .jsonl.gz or a Parquet file."""
    text = SHAKESPEARE.read_text() * 12
    if kind == "text":
        (tmp_path / "big.txt").write_text(text)
        return tmp_path / "big.txt"
    docs = [text[i: i + 5000] for i in range(0, len(text), 5000)]
    if kind == "jsonl.gz":
        (tmp_path / "big.jsonl.gz").write_bytes(gzip.compress("".join(json.dumps({"text": d}) + "\n" for d in docs).encode()))
        return tmp_path / "big.jsonl.gz"
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table({"text": docs}), tmp_path / "big.parquet", row_group_size=100)
    return tmp_path / "big.parquet"


@pytest.mark.slow
@pytest.mark.parametrize("sig, kind", [(signal.SIGINT, "text"), (signal.SIGTERM, "text"),
                                       (signal.SIGINT, "jsonl.gz"), (signal.SIGTERM, "parquet")])
def test_ctrl_c_or_sigterm_mid_prepare_is_one_line_and_leaves_nothing_finished(tmp_path, sig, kind):
    """Ctrl-C reaches every process of the terminal's group (the workers too); SIGTERM the main one."""
    big = big_input(tmp_path, kind)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "prepare.py"), str(big), "--out", str(out),
                             "--workers", "2", "--data-dir", str(tmp_path / "data")], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 60
    while not (out / ".train.bin.tmp").exists() and time.time() < deadline:
        time.sleep(0.01)
    if sig == signal.SIGINT:
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert stderr.strip() == (f"stopped by {sig.name} before the token files were finished (nothing finished "
                              f"was written): run the command again")
    assert not out.exists()  # it created the directory and wrote nothing finished in it


@pytest.mark.slow
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
        ([str(tmp_path / "empty.txt")], "all 1 input files are empty or binary: there is no text to tokenize"),
        ([str(tmp_path / "good.txt"), "--out", str(tmp_path / "good.txt")], f"--out {tmp_path / 'good.txt'} is a file"),
        ([str(tmp_path / "good.txt"), "--train-frac", "1.5"], "--train-frac: must be in (0, 1), both ends excluded, got 1.5"),
        ([str(tmp_path / "good.txt"), "--train-frac", "1"], "--train-frac: must be in (0, 1), both ends excluded, got 1"),
        ([str(tmp_path / "one" / "word.txt")], "train.bin would hold no tokens (1 in all): give more text"),
    ]:
        result = subprocess.run(script + args + ["--out", str(tmp_path / "bad")], capture_output=True,
                                text=True, timeout=120)  # the last --out wins
        if "--out" in args:
            result = subprocess.run(script + args, capture_output=True, text=True, timeout=120)
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
    with pytest.raises(DataError, match="already holds train.bin not written by scripts/prepare.py"):
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
    monkeypatch.setattr(prep.textranges, "MAX_SCAN", 100)
    (tmp_path / "a.txt").write_text("é" * 3000 + " end of text. " * 50)
    manifest = prepare([str(tmp_path / "a.txt")], tmp_path / "out", settings(tmp_path))
    # ranges end at bytes 1000, 2000, ... 6000: the five inside the 6000 bytes of "é" find no safe cut
    assert manifest["unsafe_cuts"] == 5 and manifest["replaced_bytes"] == 0  # never inside a character
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["unsafe_cuts"] == 5


def test_what_is_read_and_what_is_not(tmp_path, gpt2):
    """nanoGPT's layout (the text inside --out) works; earlier token directories, the tokenizer's own
    files (a data dir inside the corpus) and binary files are never read; symlinked directories are."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "input.txt").write_text("The text itself. " * 40)
    (corpus / "picture.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00" + bytes(range(256)))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "linked.txt").write_text("Linked words here. " * 30)
    (corpus / "more").symlink_to(elsewhere)
    (corpus / "loop").symlink_to(corpus)
    here = Settings(data_dir=str(corpus / "data"), mirror=str(MIRROR))
    manifest = prepare([str(corpus)], corpus, here)  # --out is the corpus itself, as nanoGPT's layout
    read = sorted(os.path.relpath(d["path"], corpus) for d in manifest["sources"])
    assert read == ["../elsewhere/linked.txt", "input.txt"] and (corpus / "data" / "gpt2-bpe").is_dir()
    assert manifest["skipped"] == [{"path": str(corpus / "picture.png"), "reason": "binary (NUL bytes)"}]
    assert prepare([str(corpus)], corpus, here)["up_to_date"]  # its own files and the BPE files unread
    assert prepare([str(corpus)], tmp_path / "out2", here)["sources"] == manifest["sources"]


@pytest.mark.parametrize("text", [
    "Привет, как дела? Всё хорошо. " * 300,  # no ASCII letters beside the spaces
    "1,7,x1\r\n2,8,y2\r\n" * 500,  # CRLF lines without a space
    "中文文本没有空格。\n" * 400 + "tab\tseparated\tvalues\n" * 100,
])
def test_text_without_ascii_words_is_still_cut_where_gpt2_splits(tmp_path, gpt2, monkeypatch, text):
    monkeypatch.setattr(prep, "CHUNK_BYTES", 1000)
    monkeypatch.setattr(prep.textranges, "MAX_SCAN", 200)
    (tmp_path / "a.txt").write_text(text, newline="")
    manifest = prepare([str(tmp_path / "a.txt")], tmp_path / "out", settings(tmp_path))
    assert manifest["unsafe_cuts"] == 0
    assert tokens(tmp_path / "out" / "train.bin") + tokens(tmp_path / "out" / "val.bin") == gpt2.encode(text)


@pytest.mark.slow
def test_a_worker_that_dies_is_one_line(tmp_path):
    big = tmp_path / "big.txt"
    big.write_text(SHAKESPEARE.read_text() * 12)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "prepare.py"), str(big), "--out", str(out),
                             "--workers", "2", "--data-dir", str(tmp_path / "data")], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline, killed = time.time() + 60, False
    while not killed and time.time() < deadline:  # a worker of the tokenizing pool, alive when killed
        time.sleep(0.01)
        if not (out / ".train.bin.tmp").exists():
            continue
        for worker in subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split():
            try:
                os.kill(int(worker), signal.SIGKILL)  # as the OOM killer would
                killed = True
                break
            except ProcessLookupError:  # gone meanwhile (under load, the hashing pool's may linger)
                pass
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 1 and stderr.strip() == (
        "error: a worker process died (killed, or out of memory?): nothing finished was written; run the "
        "command again, with fewer --workers if memory is short")
    assert not out.exists()


def test_few_uneven_documents_warn_about_the_split(tmp_path, caplog):
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "big.txt").write_text(SHAKESPEARE.read_text()[:100_000])
    (tmp_path / "corpus" / "README.txt").write_text("A short note.")
    with caplog.at_level("WARNING"):
        manifest = prepare([str(tmp_path / "corpus")], tmp_path / "out", settings(tmp_path, split_by="documents"))
    share = manifest["files"]["val.bin"]["tokens"] / sum(f["tokens"] for f in manifest["files"].values())
    assert not 0.05 <= share <= 0.2
    assert "each document goes to one split whole" in caplog.text


# ------------------------------------------------------------------------ row files: one document a row
def row_documents() -> list[str]:
    """40 documents of uneven sizes, from Tiny Shakespeare, with non-ASCII text and a duplicate."""
    text = SHAKESPEARE.read_text()
    docs = [text[i * 997: i * 997 + 200 + 131 * (i % 7)] for i in range(38)]
    return docs + ["Ünïcödé — “quotes” 日本語 🙂 tabs\tand\nnew lines", docs[3]]


def expected_splits(docs: list[str], gpt2, train_frac: float = 0.9) -> dict[str, list[int]]:
    """Each document to val when the sha256 of its UTF-8 bytes ranks at train_frac or above, tokens
    joined by <|endoftext|> in each split: the rule, computed here from scratch."""
    out = {"train.bin": [], "val.bin": []}
    for doc in docs:
        digest = hashlib.sha256(doc.encode()).hexdigest()
        name = "val.bin" if int(digest[:16], 16) / 2**64 >= train_frac else "train.bin"
        out[name] += ([50256] if out[name] else []) + gpt2.encode(doc)
    return out


def write_every_format(root, docs: list[str]) -> dict[str, dict]:
    """The same documents as text files, Parquet (2 files, row groups of 7), .jsonl, .jsonl.gz,
    .jsonl.zst, a dataset saved with save_to_disk and a directory of Parquet read by `datasets`:
    {format: prepare's inputs and settings}."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zstandard
    (root / "txt").mkdir(parents=True)
    for i, doc in enumerate(docs):
        (root / "txt" / f"{i:03d}.txt").write_text(doc)
    (root / "parquet").mkdir()
    for name, part in (("a.parquet", docs[:25]), ("b.parquet", docs[25:])):
        table = pa.table({"id": list(range(len(part))), "content": part})
        pq.write_table(table, root / "parquet" / name, row_group_size=7)
    (root / "parquet" / "README.md").write_text("# a dataset card: not a document")
    lines = "".join(json.dumps({"id": i, "text": doc}) + "\n" for i, doc in enumerate(docs)).encode()
    (root / "docs.jsonl").write_bytes(lines)
    (root / "docs.jsonl.gz").write_bytes(gzip.compress(lines))
    (root / "docs.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(lines))
    datasets.Dataset.from_dict({"text": docs}).save_to_disk(str(root / "saved"))
    return {"text files": {"inputs": [str(root / "txt")]},
            "parquet": {"inputs": [str(root / "parquet")], "text_column": "content"},
            "jsonl": {"inputs": [str(root / "docs.jsonl")]},
            "jsonl.gz": {"inputs": [str(root / "docs.jsonl.gz")]},
            "jsonl.zst": {"inputs": [str(root / "docs.jsonl.zst")]},
            "hf save_to_disk": {"inputs": [], "hf": HFDataset(str(root / "saved"))},
            "hf parquet dir": {"inputs": [], "hf": HFDataset(str(root / "parquet")), "text_column": "content"}}


@pytest.fixture(scope="module")
def every_format(tmp_path_factory):
    docs = row_documents()
    return docs, write_every_format(tmp_path_factory.mktemp("formats"), docs)


@pytest.mark.slow
def test_every_format_gives_the_tokens_of_its_documents(tmp_path, gpt2, every_format, monkeypatch):
    """Whichever format holds the same documents, the token files are those documents tokenized
    directly and split by their hash, and the manifest's files are the same."""
    docs, formats = every_format
    monkeypatch.setattr(prep, "CHUNK_BYTES", 3000)  # JSON lines and dataset rows in several units
    expected = expected_splits(docs, gpt2)
    files = {}
    for i, (name, given) in enumerate(formats.items()):
        out = tmp_path / f"out{i}"
        manifest = prepare(given["inputs"], out, settings(tmp_path, workers=1 + i % 2, split_by="documents",
                                                         **{k: v for k, v in given.items() if k != "inputs"}))
        assert tokens(out / "train.bin") == expected["train.bin"], name
        assert tokens(out / "val.bin") == expected["val.bin"], name
        assert manifest["split"] == "documents"
        files[name] = manifest["files"]
        if name != "text files":
            assert sum(s["rows"] for s in manifest["sources"]) == len(docs)
            assert sum(s["documents"]["val.bin"] for s in manifest["sources"]) == manifest["files"]["val.bin"]["documents"]
    assert all(f == files["text files"] for f in files.values())
    parquet = json.loads((tmp_path / "out1" / "manifest.json").read_text())
    assert [(os.path.basename(s["path"]), s["rows"], s["format"]) for s in parquet["sources"]] == \
        [("a.parquet", 25, "parquet"), ("b.parquet", 15, "parquet")]
    assert parquet["skipped"][0]["path"].endswith("README.md")


def test_a_second_run_on_unchanged_row_files_does_nothing(tmp_path, every_format):
    _, formats = every_format
    given = formats["parquet"]
    first = prepare(given["inputs"], tmp_path / "out", settings(tmp_path, text_column="content"))
    again = prepare(given["inputs"], tmp_path / "out", settings(tmp_path, text_column="content"))
    assert again["up_to_date"] and again["files"] == first["files"]
    other = prepare(formats["jsonl"]["inputs"], tmp_path / "out", settings(tmp_path))  # another source
    assert not other.get("up_to_date") and other["files"] == first["files"]


@pytest.mark.parametrize("rows, split", [(["only one document here, " * 40], "position"),
                                         (["two documents", "ranked by hash"], "documents")])
def test_few_rows_still_fill_both_splits(tmp_path, gpt2, rows, split):
    """One row is split by position; two rows that hash to the same split still give one to each."""
    (tmp_path / "few.jsonl").write_text("".join(json.dumps({"text": r}) + "\n" for r in rows))
    manifest = prepare([str(tmp_path / "few.jsonl")], tmp_path / "out",
                       settings(tmp_path, train_frac=0.999, split_by="documents"))
    assert manifest["split"] == split
    train, val = tokens(tmp_path / "out" / "train.bin"), tokens(tmp_path / "out" / "val.bin")
    assert train and val
    if split == "position":
        assert train + val == gpt2.encode(rows[0])
    else:
        assert sorted([train, val]) == sorted([gpt2.encode(r) for r in rows])


# ------------------------------------------------------------------------------- split by tokens
def three_books(root, salt: int = 0) -> list[str]:
    """Three big documents (~60k characters each) as text files book0..2.txt under root."""
    text = SHAKESPEARE.read_text()
    books = [f"Book {i} ({salt})\n" + text[i * 60_000: (i + 1) * 60_000] for i in range(3)]
    root.mkdir(parents=True, exist_ok=True)
    for i, book in enumerate(books):
        (root / f"book{i}.txt").write_text(book)
    return books


def by_hash(docs: list[str], train_frac: float) -> tuple[list[int], list[int]]:
    """The document split of text files, from scratch: (train, val) document indices, by the rank of
    each file's sha256, at least one each way."""
    ranks = [int(hashlib.sha256(d.encode()).hexdigest()[:16], 16) / 2**64 for d in docs]
    val = [i for i, r in enumerate(ranks) if r >= train_frac] or [ranks.index(max(ranks))]
    val = val if len(val) < len(docs) else [i for i in val if i != ranks.index(min(ranks))]
    return [i for i in range(len(docs)) if i not in val], val


def stream_of(encoded: list[list[int]], separator) -> tuple[list[int], list[tuple[int, int]]]:
    """Documents' tokens joined (a separator between, if any) and each one's [start, end)."""
    tokens, spans = [], []
    for ids in encoded:
        tokens += ([separator] if tokens and separator is not None else [])
        spans.append((len(tokens), len(tokens) + len(ids)))
        tokens += ids
    return tokens, spans


@pytest.mark.parametrize("split_by, tokenizer, workers", [("tokens", "gpt2", 2), ("auto", "gpt2", 1),
                                                          ("documents", "gpt2", 1), ("tokens", "char", 1)])
def test_few_big_documents_split_by_tokens_give_val_the_asked_share(tmp_path, gpt2, monkeypatch, caplog,
                                                                     split_by, tokenizer, workers):
    """Three big documents: by documents val.bin holds a whole one (~33% where 10% is asked); by tokens
    (and auto, which says so in one line) the document split's stream (train's documents, then
    val's) is cut at int(N * 0.9): the files are its tokens, encoded here directly."""
    monkeypatch.setattr(prep, "CHUNK_BYTES", 20_000)  # each book in several ranges
    books = three_books(tmp_path / "corpus")
    with caplog.at_level("WARNING"):
        manifest = prepare([str(tmp_path / "corpus")], tmp_path / "out",
                           settings(tmp_path, tokenizer=tokenizer, workers=workers, split_by=split_by))
    encode = gpt2.encode if tokenizer == "gpt2" else prep.CharTokenizer("".join(sorted(set("".join(books))))).encode
    separator = 50256 if tokenizer == "gpt2" else None
    train_docs, val_docs = by_hash(books, 0.9)
    train, val = tokens(tmp_path / "out" / "train.bin"), tokens(tmp_path / "out" / "val.bin")
    if split_by == "documents":  # today's split, byte for byte, and its warning
        assert (train, val) == tuple(stream_of([encode(books[i]) for i in docs], separator)[0]
                                     for docs in (train_docs, val_docs))
        assert "each document goes to one split whole" in caplog.text and manifest["split"] == "documents"
        return
    stream, spans = stream_of([encode(books[i]) for i in train_docs + val_docs], separator)
    keep = int(len(stream) * 0.9)
    assert (train, val) == (stream[:keep], stream[keep:]) and abs(len(val) / len(stream) - 0.1) < 1e-4
    assert manifest["split"] == "tokens" and manifest["split_by"] == split_by
    assert manifest["files"]["train.bin"]["documents"] == sum(start < keep for start, _ in spans)
    assert manifest["files"]["val.bin"]["documents"] == sum(end > keep for _, end in spans)
    order = train_docs + val_docs
    sides = {i: "+".join(n for n, side in (("train", spans[order.index(i)][0] < keep),
                                           ("val", spans[order.index(i)][1] > keep)) if side) for i in range(3)}
    assert [s["split"] for s in manifest["sources"]] == [sides[i] for i in range(3)]
    said = [r.message for r in caplog.records if r.message.startswith("split by tokens: by documents")]
    assert len(said) == (split_by == "auto") and "each document goes to one split whole" not in caplog.text


def test_rows_split_by_tokens_are_the_text_files_tokens_counted_per_source(tmp_path, gpt2):
    """The same three documents as rows of two JSON Lines files: the same token files as the text
    files give, and each source's documents counted on each side of the cut."""
    books = three_books(tmp_path / "corpus", salt=1)
    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"text": b}) + "\n" for b in books[:2]))
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": books[2]}) + "\n")
    common = settings(tmp_path, split_by="tokens", train_frac=0.7)
    rows = prepare([str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")], tmp_path / "rows", common)
    files = prepare([str(tmp_path / "corpus")], tmp_path / "files", common)
    assert rows["files"] == files["files"] and rows["split"] == "tokens"
    split = {os.path.basename(s["path"]): s["split"] for s in files["sources"]}
    documents = [s["documents"] for s in rows["sources"]]
    expected = [{name: sum(side in split[f"book{i}.txt"].split("+") for i in books_in) for name, side in
                 (("train.bin", "train"), ("val.bin", "val"))} for books_in in ((0, 1), (2,))]
    assert documents == expected


def test_split_by_is_in_the_manifest_and_a_rerun_with_another_is_prepared_again(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i, words in enumerate(("Hello there. ", "Some more words here. ", "Short.")):
        (corpus / f"{i}.txt").write_text(words * 300)
    out = tmp_path / "out"
    by_documents = prepare([str(corpus)], out, settings(tmp_path, split_by="documents"))
    by_tokens = prepare([str(corpus)], out, settings(tmp_path, split_by="tokens"))
    assert not by_tokens.get("up_to_date") and by_tokens["key"] != by_documents["key"]
    assert (by_documents["split_by"], by_tokens["split_by"]) == ("documents", "tokens")
    assert json.loads((out / "manifest.json").read_text())["split"] == "tokens"
    assert prepare([str(corpus)], out, settings(tmp_path, split_by="tokens"))["up_to_date"]
    assert sorted(p.name for p in out.iterdir()) == [".prepare.lock", "manifest.json", "train.bin", "val.bin"]
    with pytest.raises(DataError, match="split_by: must be one of auto, documents, tokens, got 'hash'"):
        prepare([str(corpus)], out, settings(tmp_path, split_by="hash"))


def test_the_script_splits_by_tokens_where_documents_miss_and_says_so_in_one_line(tmp_path):
    three_books(tmp_path / "corpus", salt=2)
    script = [sys.executable, str(ROOT / "scripts" / "prepare.py"), str(tmp_path / "corpus"), "--tokenizer", "char",
              "--workers", "1", "--out", str(tmp_path / "out")]
    result = subprocess.run(script, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("split by tokens: by documents val.bin would hold ") and "--split-by documents" in line
    assert "; split by tokens;" in result.stdout


def test_a_short_document_alone_in_val_is_refused_at_train_time_and_tokens_fix_it(tmp_path, gpt2):
    """The reported case: big documents and a short one, which alone goes to val by its hash. By
    documents val.bin is a few tokens, which training refuses in one line; by tokens val.bin gets the
    end of the last training document too, and 10% of the tokens."""
    text = SHAKESPEARE.read_text()
    for salt in range(1000):  # the texts for which the short document alone goes to val
        docs = [f"Book {i} ({salt})\n" + text[i * 60_000: (i + 1) * 60_000] for i in range(2)]
        docs.append(f"A short note ({salt}) about these two books, for whoever reads them next.")
        if by_hash(docs, 0.9) == ([0, 1], [2]):
            break
    (tmp_path / "corpus").mkdir()
    for i, doc in enumerate(docs):
        (tmp_path / "corpus" / f"{i}.txt").write_text(doc)
    data = {"block_size": 8, "batch_size": 4, "data_dir": str(tmp_path / "data")}
    prepare([str(tmp_path / "corpus")], tmp_path / "docs", settings(tmp_path, split_by="documents"))
    stream, spans = stream_of([gpt2.encode(d) for d in docs], 50256)
    note, total = spans[2][1] - spans[2][0], spans[1][1] + spans[2][1] - spans[2][0]  # train.bin: books 0, 1
    with pytest.raises(DataError) as err:
        make_dataloader(DataConfig(source="bin", dir=str(tmp_path / "docs"), **data))
    assert str(err.value) == (f"val split: {note} tokens ({100 * note / total:.2f}% of {total:,}), under "
                              f"data.min_val_frac=0.001: prepare it with --split-by tokens, or set "
                              f"data.min_val_frac=0 to train anyway")
    manifest = prepare([str(tmp_path / "corpus")], tmp_path / "tokens", settings(tmp_path, split_by="auto"))
    keep = int(len(stream) * 0.9)
    assert tokens(tmp_path / "tokens" / "val.bin") == stream[keep:] and manifest["split"] == "tokens"
    assert [s["split"] for s in manifest["sources"]] == ["train", "train+val", "val"]
    assert len(make_dataloader(DataConfig(source="bin", dir=str(tmp_path / "tokens"), **data)).valid_dl) > 0


class FullDisk:
    """A disk that fills up at the `at`-th write (of the files prepare opens to write) or fsync (of
    prepare's files and of its manifest's atomic write), as a plain write fails: OSError ENOSPC."""

    def __init__(self, what: str, at: int = 0):
        self.what, self.at, self.count = what, at, 0

    def hit(self, what: str) -> None:
        if what == self.what:
            self.count += 1
            if self.count == self.at:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def open(self, path, mode="r", *args, **kwargs):
        f = builtins.open(path, mode, *args, **kwargs)
        return Filling(f, self) if set(mode) & set("wa+") else f


class Filling:
    def __init__(self, f, disk: FullDisk):
        self._f, self._disk = f, disk

    def write(self, data):
        self._disk.hit("write")
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


@pytest.mark.parametrize("what, at", [("write", 1), ("write", 2), ("write", "last"), ("fsync", 1),
                                      ("fsync", 3)])
def test_a_full_disk_is_one_line_and_leaves_the_earlier_output_as_it_was(tmp_path, monkeypatch, what, at):
    """ENOSPC at a write of the token files (the first, the second, the last: the cut of val.bin), at
    their fsync, or at the manifest's (fsync 3, before any file is moved): one line, --out as it was."""
    text, out = tmp_path / "a.txt", tmp_path / "out"
    text.write_text("Hello there. " * 200)
    prepare([str(text)], out, settings(tmp_path, tokenizer="char"))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    text.write_text("Hello again, and again. " * 300)
    disk = FullDisk(what)
    fsync = os.fsync
    monkeypatch.setattr(prep, "open", disk.open, raising=False)
    monkeypatch.setattr(os, "fsync", lambda fd: disk.hit("fsync") or fsync(fd))
    if at == "last":  # count the writes of a whole prepare first
        prepare([str(text)], tmp_path / "dry", settings(tmp_path, tokenizer="char"))
        at, disk.count = disk.count, 0
    disk.at = at
    with pytest.raises(DataError) as err:
        prepare([str(text)], out, settings(tmp_path, tokenizer="char"))
    thing = "the manifest" if (what, at) == ("fsync", 3) else "the token files"
    assert str(err.value) == (f"cannot write {thing} in {out}: No space left on device (free some space, or choose "
                              f"another --out); {out} holds what it held before")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
