"""gpt2/run/script.py, what every script under scripts/ shares: `run_script` (a user error is one line
on stderr and exit 1, Ctrl-C one line and exit 130, a bug keeps its traceback) and the checks of the
scripts' own options (`int_list`, `require_positive`)."""

import argparse
import errno

import pytest

from gpt2.errors import ConfigError, DataError
from gpt2.run.script import int_list, require_positive, run_script


def raising(exc: BaseException):
    def main():
        raise exc
    return main


@pytest.mark.parametrize("exc, line", [
    (ConfigError("--batches: must be at least 1, got 0"), "error: --batches: must be at least 1, got 0"),
    (DataError("corpus.txt is empty"), "error: corpus.txt is empty"),
    (OSError(errno.ENOSPC, "No space left on device", "/data/train.bin"),
     "error: No space left on device: /data/train.bin (free some space, or write somewhere else)"),
    (OSError(errno.EXDEV, "Invalid cross-device link", "a.tmp", None, "b.bin"),
     "error: Invalid cross-device link: a.tmp -> b.bin"),
    (FileNotFoundError(errno.ENOENT, "No such file or directory", "missing.pt"),
     "error: No such file or directory: missing.pt"),
])
def test_a_user_error_is_one_line_on_stderr_and_exit_1(capsys, exc, line):
    with pytest.raises(SystemExit) as exited:
        run_script(raising(exc))
    assert exited.value.code == 1
    out, err = capsys.readouterr()
    assert (out, err) == ("", line + "\n")


def test_ctrl_c_is_one_line_and_exit_130(capsys):
    with pytest.raises(SystemExit) as exited:
        run_script(raising(KeyboardInterrupt()))
    assert exited.value.code == 130
    assert capsys.readouterr() == ("", "stopped by Ctrl-C\n")


@pytest.mark.parametrize("exc", [KeyError("n_head"), ValueError("bad shape"), OSError("no strerror")])
def test_a_bug_is_raised_as_is_with_nothing_printed(capsys, exc):
    with pytest.raises(type(exc)) as raised:
        run_script(raising(exc))
    assert raised.value is exc
    assert capsys.readouterr() == ("", "")


def test_a_scripts_own_exit_passes_through(capsys):
    with pytest.raises(SystemExit) as exited:
        run_script(raising(SystemExit(2)))  # argparse's usage error
    assert exited.value.code == 2
    assert capsys.readouterr() == ("", "")


def test_a_main_that_returns_prints_nothing(capsys):
    ran = []
    assert run_script(lambda: ran.append(1)) is None
    assert ran == [1] and capsys.readouterr() == ("", "")


@pytest.mark.parametrize("text, values", [("16,32", [16, 32]), ("1", [1]), (" 8, 4 ", [8, 4])])
def test_int_list_reads_comma_separated_positive_integers(text, values):
    assert int_list(text, "--sizes") == values


@pytest.mark.parametrize("text, message", [
    ("16,x", "--sizes: comma-separated integers, got '16,x'"),
    ("16,", "--sizes: comma-separated integers, got '16,'"),
    ("", "--sizes: comma-separated integers, got ''"),
    ("1.5", "--sizes: comma-separated integers, got '1.5'"),
    ("16,0", "--sizes: each must be >= 1, got '16,0'"),
    ("-4", "--sizes: each must be >= 1, got '-4'"),
])
def test_int_list_refuses_anything_else_in_one_line(text, message):
    with pytest.raises(ConfigError) as refused:
        int_list(text, "--sizes")
    assert str(refused.value) == message


def test_require_positive_accepts_values_of_at_least_1():
    require_positive(argparse.Namespace(batches=1, max_new_tokens=500), "--batches", "--max-new-tokens")


@pytest.mark.parametrize("batches, max_new_tokens, message", [
    (0, 5, "--batches: must be at least 1, got 0"),
    (2, -3, "--max-new-tokens: must be at least 1, got -3"),
    (0, 0, "--batches: must be at least 1, got 0"),  # the first option that fails
])
def test_require_positive_names_the_option_below_1(batches, max_new_tokens, message):
    args = argparse.Namespace(batches=batches, max_new_tokens=max_new_tokens)
    with pytest.raises(ConfigError) as refused:
        require_positive(args, "--batches", "--max-new-tokens")
    assert str(refused.value) == message
