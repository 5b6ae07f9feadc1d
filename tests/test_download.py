from dataclasses import replace
from pathlib import Path

import pytest

from gpt2.data.download import (GPT2_ENCODER_JSON, GPT2_VOCAB_BPE, HELLASWAG_VAL, TINY_SHAKESPEARE, Remote, fetch,
                                git_blob_sha1)
from gpt2.errors import DataError
from gpt2.files import sha256_file

from conftest import MIRROR


def test_mirror_copy_is_verified_and_reused(tmp_path):
    path = fetch(TINY_SHAKESPEARE, tmp_path, MIRROR)
    assert path == tmp_path / "tinyshakespeare" / "input.txt"
    assert sha256_file(path) == TINY_SHAKESPEARE.sha256
    assert fetch(TINY_SHAKESPEARE, tmp_path, mirror=tmp_path / "nowhere") == path  # already there


def test_download_checks_sha256(tmp_path):
    source = MIRROR / GPT2_VOCAB_BPE.relpath
    remote = replace(GPT2_VOCAB_BPE, url=source.as_uri())  # a file:// URL stands in for the network
    assert sha256_file(fetch(remote, tmp_path / "ok", mirror=None)) == GPT2_VOCAB_BPE.sha256
    wrong = replace(remote, sha256="0" * 64)
    with pytest.raises(DataError, match="wrong sha256"):
        fetch(wrong, tmp_path / "bad", mirror=None)
    assert not (tmp_path / "bad" / GPT2_VOCAB_BPE.relpath).exists()  # nothing unverified is kept


def test_corrupt_local_copy_is_replaced(tmp_path):
    target = tmp_path / TINY_SHAKESPEARE.relpath
    target.parent.mkdir(parents=True)
    target.write_text("truncated")
    assert sha256_file(fetch(TINY_SHAKESPEARE, tmp_path, MIRROR)) == TINY_SHAKESPEARE.sha256


def test_mirror_with_wrong_file_is_refused(tmp_path):
    mirror = tmp_path / "mirror"
    (mirror / "tinyshakespeare").mkdir(parents=True)
    (mirror / "tinyshakespeare" / "input.txt").write_text("not shakespeare")
    with pytest.raises(DataError, match="has the wrong sha256"):
        fetch(TINY_SHAKESPEARE, tmp_path / "d", mirror)


def test_mirror_without_the_file_names_it(tmp_path):
    """...and both places the file may go."""
    with pytest.raises(DataError) as err:
        fetch(GPT2_VOCAB_BPE, tmp_path / "d", tmp_path)
    assert str(err.value) == (f"{tmp_path / 'gpt2-bpe' / 'vocab.bpe'} does not exist: the mirror given by data.mirror "
                              f"/ GPT2_DATA_MIRROR must hold gpt2-bpe/vocab.bpe (or put the file at "
                              f"{tmp_path / 'd' / 'gpt2-bpe' / 'vocab.bpe'})")


def test_unreachable_url(tmp_path, monkeypatch):
    monkeypatch.delenv("GPT2_DATA_MIRROR")
    remote = Remote("x/y.txt", "http://127.0.0.1:9/y.txt", "0" * 64)
    with pytest.raises(DataError, match=r"x/y.txt is missing and could not be downloaded from http://127.0.0.1:9"):
        fetch(remote, tmp_path)


def test_git_blob_sha1_is_gits_object_id():
    assert git_blob_sha1(b"hello\n") == "ce013625030ba8dba906f756967f9e9ca394464a"  # `git hash-object`
    assert git_blob_sha1(b"") == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"  # git's empty blob


def test_a_remote_has_exactly_one_checksum():
    assert [r.digest_name for r in (TINY_SHAKESPEARE, GPT2_VOCAB_BPE, GPT2_ENCODER_JSON)] == ["sha256"] * 3
    assert (HELLASWAG_VAL.relpath, HELLASWAG_VAL.digest_name, HELLASWAG_VAL.digest) == (
        "hellaswag/hellaswag_val.jsonl", "git blob sha1", "0f5ee25d72216f12317d5d8a7b92deafa423d81e")
    assert HELLASWAG_VAL.url == "https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_val.jsonl"
    with pytest.raises(ValueError, match="exactly one of sha256 and git_blob_sha1"):
        Remote("x", "http://127.0.0.1:9/x")
    with pytest.raises(ValueError, match="exactly one of sha256 and git_blob_sha1"):
        Remote("x", "http://127.0.0.1:9/x", "0" * 64, git_blob_sha1="0" * 40)


def blob_remote(tmp_path, content: bytes) -> tuple[Remote, Path]:
    """A mirror holding x/blob.txt, and a Remote verified by the git blob id of `content`."""
    mirror = tmp_path / "mirror"
    (mirror / "x").mkdir(parents=True)
    (mirror / "x" / "blob.txt").write_bytes(b"some published content\n")
    return Remote("x/blob.txt", "http://127.0.0.1:9/blob.txt", git_blob_sha1=git_blob_sha1(content)), mirror


def test_a_file_is_verified_by_its_git_blob_id_from_the_mirror_and_the_network(tmp_path, monkeypatch):
    monkeypatch.delenv("GPT2_DATA_MIRROR")  # mirror=None: the URL
    remote, mirror = blob_remote(tmp_path, b"some published content\n")
    assert fetch(remote, tmp_path / "d", mirror).read_bytes() == b"some published content\n"
    assert fetch(remote, tmp_path / "d", tmp_path / "nowhere") == tmp_path / "d" / "x" / "blob.txt"  # kept
    downloaded = replace(remote, url=(mirror / "x" / "blob.txt").as_uri())
    assert fetch(downloaded, tmp_path / "e", mirror=None).read_bytes() == b"some published content\n"


def test_a_wrong_git_blob_id_is_refused_naming_it(tmp_path, monkeypatch):
    monkeypatch.delenv("GPT2_DATA_MIRROR")  # mirror=None: the URL
    remote, mirror = blob_remote(tmp_path, b"other content\n")
    expected = git_blob_sha1(b"other content\n")
    with pytest.raises(DataError, match=f"blob.txt has the wrong git blob sha1 \\(expected {expected}\\)"):
        fetch(remote, tmp_path / "d", mirror)
    with pytest.raises(DataError, match=f"has the wrong git blob sha1 \\(expected {expected}\\); nothing was saved"):
        fetch(replace(remote, url=(mirror / "x" / "blob.txt").as_uri()), tmp_path / "d", mirror=None)
    assert not (tmp_path / "d" / "x" / "blob.txt").exists()


def test_a_script_names_its_own_mirror_option(tmp_path, monkeypatch):
    monkeypatch.delenv("GPT2_DATA_MIRROR")
    remote = Remote("x/y.txt", "http://127.0.0.1:9/y.txt", "0" * 64)
    with pytest.raises(DataError, match=r"Put the file there, or pass --mirror DIR \(or set the GPT2_DATA_MIRROR "):
        fetch(remote, tmp_path, mirror_option="--mirror")
    with pytest.raises(DataError, match="the mirror given by --mirror / GPT2_DATA_MIRROR must hold x/y.txt"):
        fetch(remote, tmp_path, tmp_path / "empty", mirror_option="--mirror")
