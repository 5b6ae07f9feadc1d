"""data=bin: memory-mapped token files (gpt2/data/tokenfiles.py, BinSource in gpt2/data/sources.py)."""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import pickle
import shutil
import time
from dataclasses import replace
from itertools import islice
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

from gpt2.config import DataConfig
from gpt2.data.loaders import LMSequenceDataset, make_dataloader
from gpt2.errors import DataError
from gpt2.data.prepare import Settings, prepare
from gpt2.run.logger import read_metrics
from gpt2.data import tokenfiles
from gpt2.data.sources import BinSource
from gpt2.data.tokenfiles import LOCK, MARKER, TokenFile, scan
from gpt2.train.trainer import train

from conftest import MIRROR, TINY, one_line, run_train, tiny_config

SHAKESPEARE = MIRROR / "tinyshakespeare" / "input.txt"


@pytest.fixture(scope="module", params=["gpt2", "char"])
def prepared(request, tmp_path_factory) -> tuple[str, Path, Path]:
    """(tokenizer, Tiny Shakespeare's token dir, the data dir) for each tokenizer."""
    root = tmp_path_factory.mktemp(f"bin-{request.param}")
    prepare([str(SHAKESPEARE)], root / "out", Settings(tokenizer=request.param, workers=2,
                                                       data_dir=str(root / "data"), mirror=str(MIRROR)))
    return request.param, root / "out", root / "data"


def batches(cfg: DataConfig, count: int = 5):
    data = make_dataloader(cfg, eval_iters=3)
    train = [tuple(t.clone() for t in b) for b in islice(data.train_dl.forever(), count)]
    return data, train, [tuple(t.clone() for t in b) for b in data.valid_dl]


@pytest.mark.slow
def test_token_files_give_the_text_paths_batches(prepared):
    """The same corpus through data=bin and through the text path: the same tokenizer, the same
    train and validation tokens, and so the same batches, in the same order."""
    tokenizer, out, data_dir = prepared
    common = dict(block_size=32, batch_size=8, data_dir=str(data_dir), tokenizer=tokenizer)
    text, text_train, text_valid = batches(DataConfig(path=str(SHAKESPEARE), **common))
    binary, bin_train, bin_valid = batches(DataConfig(source="bin", dir=str(out), **common))
    assert binary.encoder.state() == text.encoder.state()
    train_tokens, valid_tokens = text.source.splits()
    assert torch.equal(bin_train_file_tokens(binary), train_tokens)
    assert torch.equal(binary.source.splits()[1].ids(), valid_tokens)
    for ours, theirs in zip(bin_train + bin_valid, text_train + text_valid):
        assert ours[0].dtype == torch.int64 and torch.equal(ours[0], theirs[0]) and torch.equal(ours[1], theirs[1])


def bin_train_file_tokens(data) -> torch.Tensor:
    return data.source.splits()[0].ids()


def test_workers_and_pickling_see_the_file_not_a_copy(prepared):
    _, out, data_dir = prepared
    cfg = DataConfig(source="bin", dir=str(out), block_size=32, batch_size=8, data_dir=str(data_dir))
    _, in_main, _ = batches(cfg)
    _, with_workers, _ = batches(replace(cfg, num_workers=2))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(in_main, with_workers))
    dataset = LMSequenceDataset(TokenFile(out / "train.bin"), 32)
    pickled = pickle.dumps(dataset)
    assert len(pickled) < 1000  # the path, not 600 KB of tokens
    starts = torch.tensor([0, 5, 1000])
    assert all(torch.equal(a, b) for a, b in zip(pickle.loads(pickled)[starts], dataset[starts]))


def rss_file_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1])
    pytest.skip("no RssFile in /proc/self/status (not Linux)")


def test_resident_memory_is_bounded_by_recent_batches_not_the_file(tmp_path):
    """Reading every window of a 64 MB file keeps at most ~release_bytes of it mapped in; without the
    releases all 64 MB would count in the process's RSS (nanoGPT's memmap 'leak')."""
    path = tmp_path / "train.bin"
    np.arange(32 << 20, dtype=np.uint16).tofile(path)  # 64 MB
    growth = {}
    for release in (4 << 20, 1 << 40):
        dataset = LMSequenceDataset(TokenFile(path, release_bytes=release), 1024)
        before = rss_file_kb()
        for starts in torch.arange(0, len(dataset), 1024 * 64).split(64):
            x, y = dataset[starts]
        growth[release] = rss_file_kb() - before
        assert torch.equal(x[-1], (starts[-1] + torch.arange(1024)) % 65536)
        del dataset, x, y
    assert growth[4 << 20] < 12 * 1024 and growth[1 << 40] > 48 * 1024, growth


@pytest.mark.parametrize("damage, message", [
    ("no directory", "is not a directory: make the token files with python scripts/prepare.py"),
    ("no val.bin", "val.bin does not exist: data.dir must hold train.bin and val.bin"),
    ("odd size", "train.bin is not a uint16 token file (6001 bytes, an odd number)"),
    ("truncated", "holds 300 tokens but its manifest says"),
    ("manifest", "manifest.json cannot be read"),
    ("unfinished", "a scripts/prepare.py was stopped while it put its files in place: run it again"),
    ("being prepared", "is being written by scripts/prepare.py now: wait for it to end"),
    ("a file", "is a file: data=bin reads a directory of token files"),
    ("foreign ids", "train.bin holds token id 60000, outside the gpt2 vocabulary (50257 ids)"),
])
def test_damaged_token_directories_are_refused_in_one_line(prepared, tmp_path, damage, message):
    _, out, data_dir = prepared
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("train.bin", "val.bin", "manifest.json"):
        (copy / name).write_bytes((out / name).read_bytes())
    manifest = json.loads((copy / "manifest.json").read_text())
    if manifest["tokenizer"]["name"] == "char" and damage == "foreign ids":
        return
    if damage == "no directory":
        copy = tmp_path / "nowhere"
    elif damage == "no val.bin":
        (copy / "val.bin").unlink()
    elif damage == "odd size":
        (copy / "train.bin").write_bytes(b"\x00" * 6001)
    elif damage == "truncated":
        (copy / "train.bin").write_bytes(b"\x00\x00" * 300)
    elif damage == "manifest":
        (copy / "manifest.json").write_text("{not json")
    elif damage == "being prepared":  # a first prepare, still tokenizing: no train.bin yet, its lock held
        (copy / "train.bin").unlink()
        lock = open(copy / LOCK, "a")
        fcntl.flock(lock, fcntl.LOCK_EX)
    elif damage == "a file":
        copy = copy / "val.bin"
    elif damage == "unfinished":
        (copy / MARKER).touch()
    elif damage == "foreign ids":  # nanoGPT's layout (no manifest) holding ids of a bigger vocabulary
        (copy / "manifest.json").unlink()
        np.array([1, 2, 60000] * 100, dtype=np.uint16).tofile(copy / "train.bin")
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make_dataloader(DataConfig(source="bin", dir=str(copy), block_size=8, batch_size=4, data_dir=str(data_dir)))


def test_nanogpt_token_files_load_as_gpt2(prepared, tmp_path):
    tokenizer, out, data_dir = prepared
    if tokenizer != "gpt2":
        return
    for name in ("train.bin", "val.bin"):  # what nanoGPT's prepare.py writes: no manifest
        (tmp_path / name).write_bytes((out / name).read_bytes())
    data = make_dataloader(DataConfig(source="bin", dir=str(tmp_path), block_size=8, batch_size=4,
                                      data_dir=str(data_dir)))
    assert data.encoder.name == "gpt2" and len(data.source.fingerprint) == 64
    assert data.encoder.decode(next(iter(data.valid_dl))[0][0].tolist())


@pytest.mark.slow
def test_train_on_token_files_and_resume_exactly(prepared, tmp_path):
    """python train.py data=bin: a run stopped at 10 and resumed to 20 ends as one run straight to 20."""
    tokenizer, out, data_dir = prepared
    if tokenizer != "gpt2":
        return
    args = [*TINY, "data=bin", f"data.dir={out}", f"data.data_dir={data_dir}", "logger=none"]
    straight = run_train(tmp_path / "straight", *args)
    assert straight.returncode == 0, straight.stderr
    first = run_train(tmp_path / "split", *args, "trainer.max_iters=10", "optim.lr_decay_iters=20")
    assert first.returncode == 0, first.stderr
    # the split and the tokenizer are the files': data.train_frac and data.tokenizer do not apply
    resumed = run_train(tmp_path / "split", *args, "trainer.resume=auto", "data.train_frac=0.5", "data.tokenizer=char")
    assert resumed.returncode == 0, resumed.stderr
    whole, parts = read_metrics(tmp_path / "straight"), read_metrics(tmp_path / "split")
    assert [r["iter"] for r in parts] == [r["iter"] for r in whole] == [0, 5, 10, 15, 20]
    for key in ("train_loss", "val_loss", "lr", "grad_norm"):
        assert [r.get(key) for r in parts] == [r.get(key) for r in whole]


@pytest.mark.slow
def test_data_bin_without_a_directory_or_with_a_wrong_one_is_one_line(tmp_path):
    assert one_line(run_train(tmp_path / "a", *TINY, "data=bin", "logger=none")) == (
        "data.dir: data.source=bin needs the directory of train.bin and val.bin (made by scripts/prepare.py)")
    assert one_line(run_train(tmp_path / "b", *TINY, "data=bin", f"data.dir={tmp_path / 'nope'}")) == (
        f"data.dir={tmp_path / 'nope'} is not a directory: make the token files with "
        f"python scripts/prepare.py <text files> --out {tmp_path / 'nope'}")


# ------------------------------------------------------------- token files changed after prepare
TEXT = "Hello there, this is some text. " * 300
"""9,600 characters, 14 distinct: train.bin holds 8,640 char tokens (17,280 bytes), val.bin 960."""


@pytest.fixture(scope="module")
def small(tmp_path_factory, data_dir) -> tuple[Path, Path, Path]:
    """(a char token directory prepare wrote, the session's data dir, its text). Its manifest's checks sample 4
    pieces of 64 bytes (recorded there, so they apply after the patch is undone): most of train.bin
    lies outside them, as most of a big file lies outside the 16 pieces of 64 KiB."""
    root = tmp_path_factory.mktemp("small")
    (root / "a.txt").write_text(TEXT)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tokenfiles, "PIECES", 4)
        patch.setattr(tokenfiles, "PIECE_BYTES", 64)
        prepare([str(root / "a.txt")], root / "out", Settings(tokenizer="char", data_dir=str(data_dir),
                                                               mirror=str(MIRROR)))
    return root / "out", data_dir, root / "a.txt"


def copied(small, tmp_path: Path) -> Path:
    """A copy of the small token directory, its files' mtimes kept (the manifest newest)."""
    return Path(shutil.copytree(small[0], tmp_path / "out"))


def small_config(small, out: Path, **changes) -> DataConfig:
    return DataConfig(source="bin", dir=str(out), block_size=8, batch_size=4, data_dir=str(small[1]), **changes)


def flip(path: Path, offset: int, keep_mtime: bool = False) -> None:
    """Change one byte in place (another char id of the same vocabulary); the mtime put back if asked."""
    stat = path.stat()
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ 1]))
    if keep_mtime:
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_the_sampled_pieces_are_spread_over_the_file_first_and_last_included():
    assert tokenfiles.sample_offsets(17_280, 4, 64) == [0, 5_738, 11_476, 17_216]
    assert tokenfiles.sample_offsets(200, 4, 64) == [0, 64, 128, 192]  # small: the whole file


AGAIN = "it changed after scripts/prepare.py wrote it; run scripts/prepare.py again"


@pytest.mark.parametrize("change, message", [
    ("a byte in a sampled piece", f"train.bin is not what its manifest records (same size, other bytes): {AGAIN}"),
    ("a byte outside the samples", "train.bin is not what its manifest records (same size, other bytes: its sha256 "
                                   f"differs): {AGAIN}"),
    ("val.bin, a byte outside the samples", "val.bin is not what its manifest records (same size, other bytes: "
                                            f"its sha256 differs): {AGAIN}"),
    ("a token less", f"train.bin holds 8,639 tokens but its manifest says 8,640: {AGAIN}"),
    ("a token more", f"train.bin holds 8,641 tokens but its manifest says 8,640: {AGAIN}"),
])
def test_token_files_changed_after_prepare_are_refused_at_start_in_one_line(small, tmp_path, change, message):
    out = copied(small, tmp_path)
    train = out / "train.bin"
    if change == "a byte in a sampled piece":
        flip(train, 11_476 + 10, keep_mtime=True)  # the sampled hash alone sees it
    elif change == "a byte outside the samples":
        flip(train, 5_000)  # newer than its manifest: read whole once, against the manifest's sha256
    elif change == "val.bin, a byte outside the samples":
        flip(out / "val.bin", 1_000)
    elif change == "a token less":
        os.truncate(train, 17_278)
    else:
        with open(train, "ab") as f:
            f.write(b"\x01\x00")
    with pytest.raises(DataError) as err:
        make_dataloader(small_config(small, out))
    assert str(err.value) == f"{out}/{message}"


def test_a_run_resumed_on_token_files_changed_since_is_refused_in_one_line(small, tmp_path):
    """Before, a same-size change resumed as if nothing happened (the fingerprint is the manifest's)."""
    out = copied(small, tmp_path)
    config = tiny_config(small[1], "data=bin", f"data.dir={out}", "trainer.max_iters=1", "trainer.eval_interval=1",
                         "trainer.eval_iters=1", "trainer.sample_tokens=0", "optim.warmup_iters=0")
    train(config, tmp_path / "run")
    flip(out / "train.bin", 12_000)
    with pytest.raises(DataError) as err:
        train(replace(config, trainer=replace(config.trainer, max_iters=2, resume="auto")), tmp_path / "run")
    assert str(err.value) == (f"{out / 'train.bin'} is not what its manifest records (same size, other bytes: "
                              f"its sha256 differs): {AGAIN}")


@pytest.mark.parametrize("change, loader", [("truncated", "in this thread"), ("truncated", "prefetching"),
                                            ("truncated", "a worker"), ("written in place", "in this thread"),
                                            ("replaced by a rename", "in this thread")])
def test_a_token_file_changed_during_a_run_is_one_line_never_a_bus_error(small, tmp_path, change, loader):
    """Each batch fstats the file first: a file truncated under the run (a `cp` of a smaller file over
    it) was a SIGBUS. A rename puts another file at the path: the run reads on the one it checked."""
    out = copied(small, tmp_path)
    cfg = small_config(small, out, prefetch=loader == "prefetching", num_workers=int(loader == "a worker"))
    batches = make_dataloader(cfg).train_dl.forever()
    expected = list(islice(make_dataloader(small_config(small, small[0])).train_dl.forever(), 6))
    assert torch.equal(next(batches)[0], expected[0][0])
    time.sleep(0.2 if loader != "in this thread" else 0)  # the thread or worker idle, done with its batches
    train_bin = out / "train.bin"
    if change == "truncated":
        os.truncate(train_bin, 1000)
    elif change == "written in place":
        flip(train_bin, 5_000)
    else:
        (out / "new.bin").write_bytes(bytes(17_280))
        os.replace(out / "new.bin", train_bin)
        assert all(torch.equal(next(batches)[0], batch[0]) for batch in expected[1:])
        return
    with pytest.raises(DataError) as err:
        for _ in range(6):  # a thread or a worker may hand out batches it gathered before the change
            next(batches)
    message, err = str(err.value), None  # no cycle through its traceback: a worker stops now, not at a gc
    assert message == (
        f"{train_bin} changed while this run was reading it ({train_bin.stat().st_size:,} bytes now, 17,280 at "
        f"the start): token files must stay as they are during a run; put it back (run scripts/prepare.py again "
        f"on the same inputs), then resume")


def test_prepare_checks_every_byte_before_it_says_up_to_date(small, tmp_path, caplog):
    """A same-size change outside the sampled pieces, its mtime put back, passes the start's cheap check;
    prepare's up-to-date check reads every byte, says so in one line and writes the files again."""
    out = copied(small, tmp_path)
    pristine = (out / "train.bin").read_bytes()
    flip(out / "train.bin", 5_000, keep_mtime=True)
    make_dataloader(small_config(small, out))  # not seen at start: the documented limit of sampling
    settings = Settings(tokenizer="char", data_dir=str(small[1]), mirror=str(MIRROR))
    again = prepare([str(small[2])], out, settings)
    assert "up_to_date" not in again and (out / "train.bin").read_bytes() == pristine
    assert f"{out}: train.bin changed after scripts/prepare.py wrote it (its sha256 is not the manifest's): " \
           f"preparing it again" in caplog.messages
    assert prepare([str(small[2])], out, settings)["up_to_date"]


@pytest.mark.parametrize("layout", ["manifest without checks", "no manifest"])
def test_files_without_checks_are_read_whole_once_then_by_their_note(small, tmp_path, monkeypatch, caplog, layout):
    """A manifest from before `checks` still loads: each file is read whole once (its highest id, and its
    sha256 against the manifest's), noted beside it, and a later start reads only the samples; prepare
    then records the checks without writing the files again. nanoGPT's files (no manifest): the same,
    for their highest id."""
    caplog.set_level(logging.INFO, logger="gpt2.data.tokenfiles")
    out = copied(small, tmp_path)
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["checks"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    if layout == "no manifest":
        (out / "manifest.json").unlink()
    scans = []
    monkeypatch.setattr(tokenfiles, "scan", lambda fd, digest=True: scans.append(digest) or scan(fd, digest))
    opened = [TokenFile(out / name) for name in ("train.bin", "val.bin")]
    assert scans == [layout != "no manifest"] * 2 and [f.max_token() for f in opened] == [13, 13]
    assert sorted(p.name for p in out.glob(".*.checked.json")) == [".train.bin.checked.json", ".val.bin.checked.json"]
    why = "its manifest predates sampled checks (run scripts/prepare.py again to add them)" \
        if layout != "no manifest" else "no manifest: read whole once for its highest token id"
    assert sum(why in message for message in caplog.messages) == 2
    assert TokenFile(out / "val.bin").max_token() == 13 and len(scans) == 2  # the note, not a read
    if layout == "manifest without checks":
        stamps = [(out / name).stat().st_mtime_ns for name in ("train.bin", "val.bin")]
        settings = Settings(tokenizer="char", data_dir=str(small[1]), mirror=str(MIRROR))
        assert prepare([str(small[2])], out, settings)["up_to_date"]
        assert "checks" in json.loads((out / "manifest.json").read_text())
        assert [(out / name).stat().st_mtime_ns for name in ("train.bin", "val.bin")] == stamps
    flip(out / "train.bin", 5_000)  # the note no longer matches: read whole again
    if layout == "no manifest":
        assert TokenFile(out / "train.bin").max_token() == 13 and len(scans) == 3
        return
    with pytest.raises(DataError, match=r"train.bin is not what its manifest records \(same size, other bytes"):
        TokenFile(out / "train.bin")


@pytest.mark.parametrize("layout", ["prepared, then a vocabulary one shorter", "manifest without checks",
                                    "no manifest"])
def test_an_id_beyond_the_vocabulary_at_the_end_of_a_file_is_refused_at_start(small, tmp_path, monkeypatch, layout):
    """The whole file is checked (by blocks; here of 64 bytes, the bad id in the last one), not its head.
    (nanoGPT's files, no manifest, are GPT-2's: the line is the "foreign ids" row above; here the id.)"""
    monkeypatch.setattr(tokenfiles, "SCAN_BYTES", 64)
    out = copied(small, tmp_path)
    manifest = json.loads((out / "manifest.json").read_text())
    ids = np.fromfile(out / "train.bin", dtype=np.uint16)
    top = 13  # the file's highest id
    if layout == "prepared, then a vocabulary one shorter":
        manifest["tokenizer"] = {"name": "char", "chars": manifest["tokenizer"]["chars"][:-1]}
    else:
        top = ids[-1] = 14 if layout == "manifest without checks" else 60000
        ids.tofile(out / "train.bin")
        del manifest["checks"]
        manifest["files"]["train.bin"]["sha256"] = hashlib.sha256(ids.tobytes()).hexdigest()
    (out / "manifest.json").write_text(json.dumps(manifest))
    if layout == "no manifest":
        (out / "manifest.json").unlink()
        assert TokenFile(out / "train.bin").max_token() == 60000
        return
    with pytest.raises(DataError) as err:
        BinSource(small_config(small, out))
    assert str(err.value) == (f"{out / 'train.bin'} holds token id {top}, outside the char vocabulary ({top} ids): "
                              f"it was made with another tokenizer")


# --------------------------------------------------------------------------- damaged manifests
def setting(keys: tuple, value) -> Callable[[dict], None]:
    def change(manifest: dict) -> None:
        *parents, last = keys
        for key in parents:
            manifest = manifest[key]
        if value is DELETE:
            del manifest[last]
        else:
            manifest[last] = value
    return change


DELETE = object()


@pytest.mark.parametrize("change, problem", [
    (lambda m: [1, 2], "holds [1, 2], not a JSON object"),
    (setting(("format",), "other/2"), "format: \"other/2\" is not 'gpt2-harness-tokens/1'"),
    (setting(("tokenizer",), DELETE), "tokenizer: missing"),
    (setting(("tokenizer",), "char"), "tokenizer: \"char\" is not an object"),
    (setting(("tokenizer", "name"), "bpe"),
     'tokenizer.name: "bpe" is not a tokenizer this harness knows (gpt2 or char)'),
    (setting(("tokenizer", "chars"), DELETE), "tokenizer.chars: missing (a char tokenizer's characters)"),
    (setting(("tokenizer", "chars"), ["a", "b"]),
     'tokenizer.chars: ["a", "b"] is not a non-empty string of characters'),
    (setting(("tokenizer", "chars"), ""), 'tokenizer.chars: "" is not a non-empty string of characters'),
    (setting(("tokenizer", "chars"), " ,.Hehilmorssx"), "tokenizer.chars: holds 's' more than once"),
    (setting(("tokenizer", "chars"), "x ,.Hehilmorst"), "tokenizer.chars: is not in sorted order (a char "
                                                        "tokenizer's ids are its characters in sorted order)"),
    (setting(("tokenizer", "vocab_size"), 99), "tokenizer.vocab_size: 99 is not 14 (its char vocabulary)"),
    (setting(("files",), DELETE), "files.train.bin.tokens: missing"),
    (setting(("files", "val.bin"), DELETE), "files.val.bin.tokens: missing"),
    (setting(("files", "train.bin", "tokens"), "8640"),
     'files.train.bin.tokens: "8640" is not a count (an integer >= 0)'),
    (setting(("files", "train.bin", "tokens"), -1), "files.train.bin.tokens: -1 is not a count (an integer >= 0)"),
    (setting(("files", "train.bin", "tokens"), True), "files.train.bin.tokens: true is not a count (an integer >= 0)"),
    (setting(("files", "val.bin", "sha256"), "xyz"), 'files.val.bin.sha256: "xyz" is not a sha256 (64 hex digits)'),
    (setting(("checks", "train.bin", "max_id"), DELETE), "checks.train.bin.max_id: missing"),
    (setting(("checks", "val.bin", "pieces"), 0), "checks.val.bin.pieces: 0 is not an integer from 1 to 65536"),
    (setting(("checks", "val.bin", "piece_bytes"), 1 << 40),
     "checks.val.bin.piece_bytes: 1099511627776 is not an integer from 1 to 16777216"),
    (setting(("checks", "train.bin", "bytes"), 17_282),
     "checks.train.bin.bytes: 17282 is not 2 x files.train.bin.tokens (8640)"),
])
def test_a_damaged_or_crafted_manifest_is_one_line_naming_it_and_the_field(small, tmp_path, change, problem):
    out = copied(small, tmp_path)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest = change(manifest) or manifest
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError) as err:
        make_dataloader(small_config(small, out))
    assert str(err.value) == f"{out / 'manifest.json'}: {problem}: run scripts/prepare.py again"
