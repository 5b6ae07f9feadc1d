"""gpt2/errors.py: the error classes (their hierarchy) and `error_line`, the one line a user sees
for an error they can fix (a HarnessError or an OSError), or None for a bug."""

from __future__ import annotations

import errno
import os

import pytest
import torch

from gpt2.errors import (CheckpointError, ConfigError, DataError, HarnessError, NonFiniteLossError,
                         PeerFailed, RunDirError, error_line)

HARNESS_ERRORS = [ConfigError, DataError, CheckpointError, RunDirError, NonFiniteLossError, PeerFailed]


@pytest.mark.parametrize("cls", HARNESS_ERRORS, ids=[c.__name__ for c in HARNESS_ERRORS])
def test_a_harness_error_is_its_message_as_is(cls):
    message = "data.path: something the user can fix: do this (and 'that')"
    assert error_line(cls(message)) == message


def test_a_harness_error_without_a_message_is_an_empty_line():
    assert error_line(DataError()) == ""


@pytest.mark.parametrize("exc, line", [
    (FileNotFoundError(errno.ENOENT, "No such file or directory", "/runs/a/config.yaml"),
     "No such file or directory: /runs/a/config.yaml"),
    (IsADirectoryError(errno.EISDIR, "Is a directory", "/runs/a"), "Is a directory: /runs/a"),
    (PermissionError(errno.EACCES, "Permission denied", "/root/x"), "Permission denied: /root/x"),
    (OSError(errno.EXDEV, "Invalid cross-device link", "/tmp/a", None, "/mnt/b"),
     "Invalid cross-device link: /tmp/a -> /mnt/b"),
    (OSError(errno.ENOSPC, "No space left on device", "/data/ckpt/last.pt"),
     "No space left on device: /data/ckpt/last.pt (free some space, or write somewhere else)"),
    (OSError(errno.ENOSPC, "No space left on device"),
     "No space left on device (free some space, or write somewhere else)"),
    (OSError(errno.EIO, "Input/output error"), "Input/output error"),
], ids=["one path", "a directory", "permission", "two paths", "full disk", "full disk no path", "no path"])
def test_an_os_error_is_its_strerror_and_paths(exc, line):
    assert error_line(exc) == line


def test_a_path_object_and_a_real_os_error_are_shown_as_paths(tmp_path):
    missing = tmp_path / "missing.txt"
    with pytest.raises(OSError) as err:
        missing.read_bytes()
    assert error_line(err.value) == f"No such file or directory: {missing}"
    with pytest.raises(OSError) as err:
        os.rename(missing, tmp_path / "other.txt")
    assert error_line(err.value) == f"No such file or directory: {missing} -> {tmp_path / 'other.txt'}"


@pytest.mark.parametrize("exc", [
    OSError("no strerror, only a message"),
    OSError(),
    ConnectionResetError(),
    ValueError("a bug"),
    KeyError("model"),
    TypeError("unsupported operand"),
    RuntimeError("CUDA error"),
    KeyboardInterrupt(),
], ids=["OSError message", "OSError bare", "ConnectionResetError bare", "ValueError", "KeyError",
        "TypeError", "RuntimeError", "KeyboardInterrupt"])
def test_a_bug_or_an_os_error_without_strerror_has_no_line(exc):
    assert error_line(exc) is None


def test_a_config_error_is_a_value_error_and_a_harness_error():
    with pytest.raises(ValueError, match="^model.n_head: must be >= 1$"):
        raise ConfigError("model.n_head: must be >= 1")
    assert issubclass(ConfigError, HarnessError)


@pytest.mark.parametrize("cls", HARNESS_ERRORS, ids=[c.__name__ for c in HARNESS_ERRORS])
def test_every_error_class_is_a_harness_error(cls):
    assert issubclass(cls, HarnessError) and issubclass(cls, Exception)
    assert cls is ConfigError or not issubclass(cls, ValueError)  # only ConfigError is also a ValueError


def test_peer_failed_is_caught_as_a_harness_error():
    with pytest.raises(HarnessError) as err:
        raise PeerFailed("stopped: another process of this torchrun run failed")
    assert error_line(err.value) == "stopped: another process of this torchrun run failed"


OOM_FIX = "lower the sizes of the work (model, batch, samples, tokens) or use a device with more memory"


@pytest.mark.parametrize("exc, said", [
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79 GiB total)\nmore"),
     "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79 GiB total)"),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: "
                  "you tried to allocate 1099511627776 bytes."),
     "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you tried to "
     "allocate 1099511627776 bytes."),
    (MemoryError(), "MemoryError"),
], ids=["cuda", "cpu allocator", "python"])
def test_running_out_of_memory_is_one_line_in_any_script(exc, said):
    """The trainer says more (its estimate, the setting to lower); a script's run_script says this."""
    assert error_line(exc) == f"out of memory ({said}): {OOM_FIX}"


def test_a_real_failed_allocation_is_that_line():
    with pytest.raises(RuntimeError) as failed:
        torch.empty(1 << 62, dtype=torch.uint8)
    assert error_line(failed.value).startswith("out of memory (") and error_line(failed.value).endswith(OOM_FIX)
