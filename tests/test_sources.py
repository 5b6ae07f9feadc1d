"""gpt2/data/sources.py, directly: `source_path` (Tiny Shakespeare through the mirror, a given path, `~`),
`read_text` (one DataError naming the file), `train_valid_split`, the token cache of `load_tokens`,
`TextSource` (splits, content fingerprint, describe), `BinSource` on small token directories (written
by hand and by `prepare`) and `make_source`. Small texts and the char tokenizer: every test is fast."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from gpt2.config import DataConfig
from gpt2.data import sources
from gpt2.data.prepare import Settings, prepare
from gpt2.data.sources import (BinSource, TextSource, load_tokens, make_source, read_text, source_path,
                               train_valid_split)
from gpt2.data.tokenfiles import FORMAT, LOCK, MARKER, TokenFile
from gpt2.data.tokenizer import CharTokenizer
from gpt2.errors import DataError
from gpt2.files import FileLock

from conftest import MIRROR
from test_files import full_disks

TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
        "First Citizen:\nYou are all resolved rather to die than to famish?\n") * 3
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"


def char_config(tmp_path, path, **changes) -> DataConfig:
    return DataConfig(path=str(path), tokenizer="char", data_dir=str(tmp_path / "data"), **changes)


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------ source_path
@pytest.mark.parametrize("explicit_mirror", [False, True], ids=["GPT2_DATA_MIRROR", "data.mirror"])
def test_no_path_is_tiny_shakespeare_copied_from_the_mirror_into_data_dir(tmp_path, monkeypatch, explicit_mirror):
    if explicit_mirror:
        monkeypatch.delenv("GPT2_DATA_MIRROR")
    cfg = DataConfig(data_dir=str(tmp_path / "d"), mirror=str(MIRROR) if explicit_mirror else None)
    path = source_path(cfg)
    assert path == tmp_path / "d" / "tinyshakespeare" / "input.txt"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == SHAKESPEARE_SHA256


def test_a_given_path_is_used_as_it_is(tmp_path, text_file):
    assert source_path(char_config(tmp_path, text_file)) == text_file
    assert not (tmp_path / "data").exists()  # nothing fetched for a given text


def test_a_path_with_a_tilde_is_in_the_home_directory(tmp_path, monkeypatch, text_file):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert source_path(char_config(tmp_path, "~/corpus.txt")) == text_file


@pytest.mark.parametrize("name", ["missing.txt", "a_directory"])
def test_a_path_that_is_no_file_is_one_data_error(tmp_path, name):
    (tmp_path / "a_directory").mkdir()
    with pytest.raises(DataError) as err:
        source_path(char_config(tmp_path, tmp_path / name))
    assert str(err.value) == f"data.path={tmp_path / name} does not exist (or is not a file)"


# -------------------------------------------------------------------------------------- read_text
def test_read_text_gives_the_text_and_the_sha256_of_its_bytes(text_file):
    text, sha256 = read_text(text_file)
    assert text == TEXT and sha256 == hashlib.sha256(TEXT.encode()).hexdigest()


@pytest.mark.parametrize("content, message", [
    (b"caf\xc3\xa9 ok, then \xff bad", "{path} is not UTF-8 text (invalid byte at offset 15); convert it to "
                                       "UTF-8 or point data.path at a text file"),
    (b"cut in the middle of \xc3", "{path} is not UTF-8 text (invalid byte at offset 21)"),
    (b"", "{path} is empty: there is no text to train on"),
    (b" \n\t\r\n", "{path} is empty: there is no text to train on"),
    (None, "{path} cannot be read (No such file or directory): check its permissions, or point data.path "
           "at a readable text file"),
    ("dir", "{path} cannot be read (Is a directory)"),
], ids=["latin-1 byte", "truncated character", "empty", "whitespace only", "missing", "a directory"])
def test_an_unusable_file_is_one_data_error_naming_it(tmp_path, content, message):
    path = tmp_path / "input.txt"
    if content == "dir":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError) as err:
        read_text(path)
    assert str(err.value).startswith(message.format(path=path)) and "\n" not in str(err.value)
    assert err.value.__cause__ is None and (err.value.__context__ is None or err.value.__suppress_context__)


# ------------------------------------------------------------------------------ train_valid_split
@pytest.mark.parametrize("n, frac, n_train", [(100, 0.9, 90), (10, 0.7, 7), (7, 0.5, 3), (3, 0.1, 0),
                                              (1000, 0.999, 999), (29, 0.29, 8)])
def test_the_split_is_contiguous_at_int_n_times_frac(n, frac, n_train):
    tokens = torch.arange(n) * 3
    train, valid = train_valid_split(tokens, frac)
    assert len(train) == n_train == int(n * frac)
    assert torch.equal(torch.cat((train, valid)), tokens)  # every token once, in order
    assert train._base is tokens and valid._base is tokens  # views, no copy


def test_the_default_split_is_ninety_percent():
    train, valid = train_valid_split(torch.arange(50))
    assert (train.tolist(), valid.tolist()) == (list(range(45)), list(range(45, 50)))


# ------------------------------------------------------------------------------- the token cache
def cache_file(cfg: DataConfig, text: str) -> Path:
    """data_dir/cache/<the text's sha256, 20 hex digits>-<tokenizer>.pt"""
    return Path(cfg.data_dir) / "cache" / f"{hashlib.sha256(text.encode()).hexdigest()[:20]}-{cfg.tokenizer}.pt"


def test_load_tokens_writes_the_tokens_and_tokenizer_to_a_cache_file(tmp_path, text_file):
    cfg = char_config(tmp_path, text_file)
    corpus, tokens, encoder = load_tokens(cfg)
    assert corpus == TEXT and encoder.chars == "".join(sorted(set(TEXT)))
    assert tokens.dtype == torch.int64 and encoder.decode(tokens.tolist()) == TEXT
    saved = torch.load(cache_file(cfg, TEXT), weights_only=True)
    assert saved["version"] == sources.CACHE_VERSION and saved["tokens"].dtype == torch.int32
    assert torch.equal(saved["tokens"].long(), tokens)
    assert saved["tokenizer"] == encoder.state() and saved["source"] == str(text_file)


def test_a_second_load_reads_the_cache_and_does_not_tokenize_again(tmp_path, text_file, monkeypatch):
    cfg = char_config(tmp_path, text_file)
    _, first, _ = load_tokens(cfg)
    stamp = os.stat(cache_file(cfg, TEXT)).st_mtime_ns
    monkeypatch.setattr(CharTokenizer, "encode", lambda self, text: pytest.fail("tokenized again"))
    monkeypatch.setattr(sources, "build_tokenizer", lambda *a: pytest.fail("built the tokenizer again"))
    corpus, second, encoder = load_tokens(cfg)
    assert torch.equal(first, second) and corpus == TEXT and encoder.decode(second[:14].tolist()) == TEXT[:14]
    assert os.stat(cache_file(cfg, TEXT)).st_mtime_ns == stamp  # not rewritten


def test_the_same_text_at_another_path_reuses_the_cache(tmp_path, text_file, monkeypatch):
    load_tokens(char_config(tmp_path, text_file))
    copy = tmp_path / "elsewhere" / "copy.txt"
    copy.parent.mkdir()
    copy.write_bytes(text_file.read_bytes())
    monkeypatch.setattr(CharTokenizer, "encode", lambda self, text: pytest.fail("tokenized again"))
    _, tokens, _ = load_tokens(char_config(tmp_path, copy))
    assert len(tokens) == len(TEXT) and len(list((tmp_path / "data" / "cache").iterdir())) == 1


def test_a_damaged_cache_is_rebuilt_not_trusted(tmp_path, text_file, caplog):
    cfg = char_config(tmp_path, text_file)
    _, expected, _ = load_tokens(cfg)
    with open(cache_file(cfg, TEXT), "wb") as f:
        f.write(b"not a torch file")
    with caplog.at_level(logging.WARNING, logger="gpt2.data.sources"):
        _, tokens, _ = load_tokens(cfg)
    assert torch.equal(tokens, expected) and "ignoring unreadable token cache" in caplog.text
    assert torch.equal(torch.load(cache_file(cfg, TEXT), weights_only=True)["tokens"].long(), expected)


def test_an_unwritable_cache_is_one_data_error(tmp_path, text_file):
    (tmp_path / "data").write_text("a file where the data dir should be")
    with pytest.raises(DataError, match=r"^the token cache .*data/cache/[0-9a-f]{20}-char.pt cannot be written "
                                        r"\(Not a directory\): set data.data_dir to a writable directory$"):
        load_tokens(char_config(tmp_path, text_file))


def test_a_full_disk_at_any_byte_of_the_cache_is_one_data_error(tmp_path, text_file, monkeypatch):
    """torch.save reports a failed write as a RuntimeError of its own: whichever write, flush, fsync or
    rename of the cache fails, the line names the cache and no partial cache is left."""
    cfg = char_config(tmp_path, text_file)
    cache = cache_file(cfg, TEXT)
    for disk in full_disks(monkeypatch, lambda: load_tokens(cfg)):
        cache.unlink(missing_ok=True)  # the first run's: each case tokenizes and writes it anew
        with pytest.raises(DataError) as err:
            load_tokens(cfg)
        assert str(err.value) == (f"the token cache {cache} cannot be written (No space left on device): free "
                                  f"some space, or set data.data_dir to a directory on another disk"), disk.at
        assert os.listdir(cache.parent) == [], disk.at
    monkeypatch.undo()
    assert load_tokens(cfg)[1].tolist() == CharTokenizer.from_text(TEXT).encode(TEXT)


# ------------------------------------------------------------------------------------- TextSource
def test_text_source_splits_its_tokens_contiguously(tmp_path, text_file):
    source = TextSource(char_config(tmp_path, text_file, train_frac=0.75))
    train, valid = source.splits()
    n = len(TEXT)
    assert (len(train), len(valid)) == (int(n * 0.75), n - int(n * 0.75))
    assert source.tokenizer.decode(train.tolist()) + source.tokenizer.decode(valid.tolist()) == TEXT
    assert source.tokenizer.vocab_size == len(set(TEXT)) and source.path == text_file
    assert source.describe() == (f"{text_file}: {n} tokens, train_frac=0.75: {int(n * 0.75)} train, "
                                 f"{n - int(n * 0.75)} valid")


def test_the_fingerprint_is_the_texts_sha256_wherever_it_lies(tmp_path, text_file, data_dir):
    other = tmp_path / "other.txt"
    other.write_bytes(text_file.read_bytes())
    changed = tmp_path / "changed.txt"
    changed.write_text(TEXT + "!")
    first, second = TextSource(char_config(tmp_path, text_file)), TextSource(char_config(tmp_path, other))
    assert first.fingerprint == second.fingerprint == hashlib.sha256(TEXT.encode()).hexdigest()
    assert TextSource(char_config(tmp_path, changed)).fingerprint != first.fingerprint
    bpe = TextSource(DataConfig(path=str(other), tokenizer="gpt2", data_dir=str(data_dir)))
    assert bpe.fingerprint == first.fingerprint  # the text's, not its tokens'


# -------------------------------------------------------------------------------------- BinSource
CHARS = "\n abc"


def write_token_dir(directory: Path, train: list[int], val: list[int], chars: str = CHARS) -> dict:
    """A token directory as scripts/prepare.py leaves it, written by hand: train.bin, val.bin (uint16)
    and a manifest of the char tokenizer; returns the manifest."""
    directory.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, ids in (("train.bin", train), ("val.bin", val)):
        data = np.array(ids, dtype=np.uint16).tobytes()
        (directory / name).write_bytes(data)
        files[name] = {"tokens": len(ids), "documents": 1, "sha256": hashlib.sha256(data).hexdigest()}
    manifest = {"format": FORMAT, "tokenizer": {"name": "char", "vocab_size": len(chars), "chars": chars},
                "files": files}
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return manifest


def bin_config(tmp_path, directory, **changes) -> DataConfig:
    return DataConfig(source="bin", dir=str(directory), data_dir=str(tmp_path / "data"), **changes)


def test_bin_source_maps_the_files_with_the_manifests_tokenizer(tmp_path):
    train, val = [2, 3, 4, 1, 0, 2, 2, 4], [4, 3, 2, 0]
    manifest = write_token_dir(tmp_path / "tokens", train, val)
    source = BinSource(bin_config(tmp_path, tmp_path / "tokens"))  # data.tokenizer (gpt2) does not apply
    assert source.tokenizer.state() == manifest["tokenizer"]
    assert source.tokenizer.decode(source.splits()[0].ids().tolist()) == "abc \naac"
    files = source.splits()
    assert all(isinstance(f, TokenFile) for f in files)
    assert (files[0].ids().tolist(), files[1].ids().tolist()) == (train, val)
    assert source.fingerprint == hashlib.sha256(json.dumps(manifest["files"], sort_keys=True).encode()).hexdigest()
    assert source.describe() == f"{tmp_path / 'tokens'}: 8 train tokens, 4 valid"
    assert not (tmp_path / "data").exists()  # no GPT-2 BPE files fetched for a char manifest


def test_bin_source_reads_what_prepare_wrote_as_the_text_source_reads_the_text(tmp_path, text_file):
    settings = Settings(tokenizer="char", workers=1, data_dir=str(tmp_path / "data"), mirror=str(MIRROR))
    prepare([str(text_file)], tmp_path / "tokens", settings)
    binary = BinSource(bin_config(tmp_path, tmp_path / "tokens"))
    text = TextSource(char_config(tmp_path, text_file))
    assert binary.tokenizer.state() == text.tokenizer.state()
    for ours, theirs in zip(binary.splits(), text.splits()):
        assert torch.equal(ours.ids(), theirs)
    prepare([str(text_file)], tmp_path / "again", settings)  # the same text elsewhere: the same tokens
    assert BinSource(bin_config(tmp_path, tmp_path / "again")).fingerprint == binary.fingerprint


def test_a_tilde_in_data_dir_is_the_home_directory(tmp_path, monkeypatch):
    write_token_dir(tmp_path / "tokens", [1, 2, 3], [3, 2])
    monkeypatch.setenv("HOME", str(tmp_path))
    assert BinSource(bin_config(tmp_path, "~/tokens")).directory == tmp_path / "tokens"


@pytest.mark.parametrize("state", ["no train.bin", "unfinished", "nothing yet"])
def test_a_directory_being_prepared_is_refused_while_its_lock_is_held(tmp_path, state):
    directory = tmp_path / "tokens"
    write_token_dir(directory, [1, 2, 3], [3, 2])
    if state == "no train.bin":
        (directory / "train.bin").unlink()
    elif state == "unfinished":
        (directory / MARKER).touch()
    else:
        for name in ("train.bin", "val.bin", "manifest.json"):
            (directory / name).unlink()
    with FileLock(directory / LOCK):
        with pytest.raises(DataError) as err:
            BinSource(bin_config(tmp_path, directory))
    assert str(err.value) == f"{directory} is being written by scripts/prepare.py now: wait for it to end"


def test_finished_files_are_read_while_a_new_prepare_holds_the_lock(tmp_path):
    write_token_dir(tmp_path / "tokens", [1, 2, 3], [3, 2])
    with FileLock(tmp_path / "tokens" / LOCK):  # a re-prepare, still tokenizing into temporaries
        assert len(BinSource(bin_config(tmp_path, tmp_path / "tokens")).splits()[0]) == 3


@pytest.mark.parametrize("missing", ["train.bin", "val.bin"])
def test_a_missing_token_file_is_one_data_error_naming_it(tmp_path, missing):
    directory = tmp_path / "tokens"
    write_token_dir(directory, [1, 2, 3], [3, 2])
    (directory / missing).unlink()
    with pytest.raises(DataError) as err:
        BinSource(bin_config(tmp_path, directory))
    assert str(err.value) == (f"{directory / missing} does not exist: data.dir must hold train.bin and val.bin "
                              f"(make them with scripts/prepare.py)")


def test_a_missing_directory_is_one_data_error_naming_it(tmp_path):
    with pytest.raises(DataError) as err:
        BinSource(bin_config(tmp_path, tmp_path / "nowhere"))
    assert str(err.value) == (f"data.dir={tmp_path / 'nowhere'} is not a directory: make the token files with "
                              f"python scripts/prepare.py <text files> --out {tmp_path / 'nowhere'}")


def test_ids_outside_the_manifests_char_vocabulary_are_refused(tmp_path):
    write_token_dir(tmp_path / "tokens", [1, 2, 3], [3, 5, 2])  # 5 chars: ids 0..4
    with pytest.raises(DataError) as err:
        BinSource(bin_config(tmp_path, tmp_path / "tokens"))
    assert str(err.value) == (f"{tmp_path / 'tokens' / 'val.bin'} holds token id 5, outside the char vocabulary "
                              f"(5 ids): it was made with another tokenizer")


# ------------------------------------------------------------------------------------ make_source
@pytest.mark.parametrize("kind", ["text", "bin"])
def test_make_source_chooses_by_data_source(tmp_path, text_file, kind):
    write_token_dir(tmp_path / "tokens", [1, 2, 3], [3, 2])
    cfg = DataConfig(source=kind, path=str(text_file), dir=str(tmp_path / "tokens"), tokenizer="char",
                     data_dir=str(tmp_path / "data"))
    source = make_source(cfg)
    assert type(source) is {"text": TextSource, "bin": BinSource}[kind]
    assert len(source.splits()[0]) == {"text": int(len(TEXT) * 0.9), "bin": 3}[kind]
