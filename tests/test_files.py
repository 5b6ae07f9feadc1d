import pytest

from gpt2.files import atomic_file, atomic_write_text, remove_stale_temporaries, sha256_file


def test_atomic_write_replaces_whole_or_not_at_all(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    atomic_write_text(target, "first")
    with pytest.raises(RuntimeError):
        with atomic_file(target) as f:
            f.write(b"half of the second")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "first" and [p.name for p in target.parent.iterdir()] == ["out.txt"]
    assert sha256_file(target) == "a7937b64b8caa58f03721bb6bacf5c78cb235febe0e70b1b84cd99541461a08e"


def test_stale_temporaries_are_removed(tmp_path):
    (tmp_path / ".last.pt.abc.tmp").write_text("left by a kill")
    (tmp_path / "last.pt").write_text("kept")
    remove_stale_temporaries(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_atomic_writes_honour_the_umask(tmp_path):
    import os
    import stat

    atomic_write_text(tmp_path / "shared.json", "{}")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "shared.json").stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0600


def test_read_json_tells_a_missing_file_from_a_damaged_one(tmp_path):
    from gpt2.files import read_json

    assert read_json(tmp_path / "none.json") == (False, None)
    (tmp_path / "bad.json").write_text("{half")
    assert read_json(tmp_path / "bad.json") == (True, None)
    (tmp_path / "ok.json").write_text('{"a": 1}')
    assert read_json(tmp_path / "ok.json") == (True, {"a": 1})
