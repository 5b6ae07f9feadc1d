from dataclasses import replace

import pytest

from gpt2.data.download import GPT2_VOCAB_BPE, TINY_SHAKESPEARE, Remote, fetch, sha256_file
from gpt2.errors import DataError

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
    with pytest.raises(DataError, match="must hold gpt2-bpe/vocab.bpe"):
        fetch(GPT2_VOCAB_BPE, tmp_path / "d", tmp_path)


def test_unreachable_url(tmp_path, monkeypatch):
    monkeypatch.delenv("GPT2_DATA_MIRROR")
    remote = Remote("x/y.txt", "http://127.0.0.1:9/y.txt", "0" * 64)
    with pytest.raises(DataError, match=r"x/y.txt is missing and could not be downloaded from http://127.0.0.1:9"):
        fetch(remote, tmp_path)
