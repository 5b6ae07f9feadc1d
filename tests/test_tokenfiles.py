"""data=bin: memory-mapped token files (gpt2/data/tokenfiles.py, BinSource in gpt2/data/sources.py)."""

from __future__ import annotations

import fcntl
import json
import pickle
from dataclasses import replace
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import torch

from gpt2.config import DataConfig
from gpt2.data.loaders import LMSequenceDataset, make_dataloader
from gpt2.errors import DataError
from gpt2.data.prepare import Settings, prepare
from gpt2.run.logger import read_metrics
from gpt2.data.tokenfiles import LOCK, MARKER, TokenFile

from conftest import MIRROR, TINY, one_line, run_train

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
    ("manifest list", "manifest.json cannot be read (TypeError"),
    ("manifest fields", "manifest.json cannot be read (KeyError: 'files')"),
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
    elif damage == "manifest list":
        (copy / "manifest.json").write_text("[1, 2]")
    elif damage == "manifest fields":
        (copy / "manifest.json").write_text('{"format": "gpt2-harness-tokens/1", "tokenizer": {"name": "gpt2"}}')
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
