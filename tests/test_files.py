import errno
import os
from typing import Iterator

import pytest

from gpt2.errors import error_line
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


# ----------------------------------------------------------------------------- a full disk at any byte
class FullDisk:
    """The disk under gpt2.files, full at one operation: the `at`-th write() to a file atomic_file
    opened (after writing half of its bytes), or every flush, or the fsync, or the rename. Counts the
    write() calls it sees in `writes`."""

    def __init__(self, monkeypatch, at: int | str | None = None):
        import gpt2.files

        self.at, self.writes = at, 0
        monkeypatch.setattr(gpt2.files, "os", _DiskOs(self))

    def fail(self, operation: str, *paths) -> None:
        if self.at == operation:
            raise OSError(errno.ENOSPC, "No space left on device", *paths)


class _DiskOs:
    def __init__(self, disk: FullDisk):
        self.disk = disk

    def __getattr__(self, name):
        return getattr(os, name)

    def fdopen(self, *args, **kwargs):
        return _FillingFile(self.disk, os.fdopen(*args, **kwargs))

    def fsync(self, fd):
        self.disk.fail("fsync")
        os.fsync(fd)

    def replace(self, src, dst):
        self.disk.fail("replace", src, None, dst)
        os.replace(src, dst)


class _FillingFile:
    def __init__(self, disk: FullDisk, file):
        self.disk, self.file = disk, file

    def write(self, data):
        self.disk.writes += 1
        if self.disk.writes == self.disk.at:
            self.file.write(bytes(data)[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.file.write(data)

    def flush(self):
        self.disk.fail("flush")
        self.file.flush()

    def __getattr__(self, name):
        return getattr(self.file, name)


def full_disks(monkeypatch, write) -> Iterator[FullDisk]:
    """A disk full at each operation of `write()` in turn: every write() call it makes (counted by
    running it once first, on a disk with room), then its flushes, its fsync and its rename."""
    counted = FullDisk(monkeypatch)
    write()
    assert counted.writes > 0
    for at in [*range(1, counted.writes + 1), "flush", "fsync", "replace"]:
        yield FullDisk(monkeypatch, at)


def enospc_line(path) -> str:
    return f"No space left on device: {path} (free some space, or write somewhere else)"


@pytest.mark.parametrize("swallowed", [False, True], ids=["raised", "swallowed by the writer"])
def test_a_full_disk_at_any_write_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch, swallowed):
    target = tmp_path / "out.bin"

    def write(data: bytes) -> None:
        with atomic_file(target) as f:
            for start in range(0, len(data), 3):  # several writes, as torch.save makes
                try:
                    f.write(data[start:start + 3])
                except OSError:
                    if not swallowed:
                        raise

    cases = 0
    for disk in full_disks(monkeypatch, lambda: write(b"old contents")):
        with pytest.raises(OSError) as err:
            write(b"new contents!")
        assert error_line(err.value) == enospc_line(target), disk.at
        assert target.read_bytes() == b"old contents" and os.listdir(tmp_path) == ["out.bin"], disk.at
        cases += 1
    assert cases == 4 + 3  # 4 writes, flush, fsync, rename
