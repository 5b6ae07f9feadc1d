"""gpt2/run/script.py, what every script under scripts/ shares: `run_script` (a user error is one line
on stderr and exit 1, Ctrl-C one line and exit 130, a closed stdout pipe nothing and exit 141, a bug
keeps its traceback), `stop_on_ctrl_c` (the same line during the imports), the checks of the
scripts' own options (`int_list`, `require_positive`, `check_device`) and `--threads`. The pipe and
Ctrl-C are checked on real processes: a tiny script around run_script."""

import argparse
import errno
import os
import signal
import subprocess
import sys

import pytest

from gpt2.errors import ConfigError, DataError
from gpt2.run.script import add_threads_option, apply_threads, check_device, int_list, require_positive, run_script


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


# ------------------------------------------------------------------------- --threads, --device
def test_threads_option_defaults_to_torchs_own_and_sets_the_threads():
    import torch

    parser = argparse.ArgumentParser()
    add_threads_option(parser)
    before = torch.get_num_threads()
    apply_threads(parser.parse_args([]))  # not given: torch's default stays
    assert parser.parse_args([]).threads is None and torch.get_num_threads() == before
    try:
        apply_threads(parser.parse_args(["--threads", "1"]))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("threads", [0, -2])
def test_threads_below_1_are_refused_naming_the_option(threads):
    with pytest.raises(ConfigError) as refused:
        apply_threads(argparse.Namespace(threads=threads))
    assert str(refused.value) == f"--threads: must be at least 1, got {threads}"


@pytest.mark.parametrize("name", ["bogus", "cuda:x", "gpu"])
def test_check_device_refuses_a_name_naming_the_option(name):
    with pytest.raises(ConfigError) as refused:
        check_device(name)
    assert str(refused.value) == f"--device: must be auto, cpu, cuda, cuda:N or mps, got {name!r}"


def test_check_device_refuses_a_device_the_machine_lacks():
    with pytest.raises(ConfigError) as refused:
        check_device("cuda:99", "--eval-device")
    assert str(refused.value).startswith("--eval-device: 'cuda:99' asked for, but ")
    assert str(refused.value).endswith(" (use --eval-device auto or cpu)")


def test_check_device_accepts_what_the_machine_has():
    check_device("cpu")
    check_device("auto")


# --------------------------------------------------- real processes: a closed pipe, Ctrl-C at start-up
def script_process(tmp_path, body: str, **popen) -> subprocess.Popen:
    """A tiny script around run_script (what every script in scripts/ is), started with its stdout
    and stderr piped."""
    path = tmp_path / "tiny_script.py"
    path.write_text("import signal, sys, time\nfrom gpt2.run.script import run_script, stop_on_ctrl_c\n" + body)
    return subprocess.Popen([sys.executable, str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **popen)


def test_stdout_closed_by_its_reader_ends_the_script_quietly(tmp_path):
    """`script | head -n 1`: the lines after the reader went away end the script with status 141
    (a writer killed by SIGPIPE) and nothing on stderr, not 'error: Broken pipe'."""
    proc = script_process(tmp_path, "def main():\n    for i in range(10**6):\n        print('line', i)\n"
                                    "run_script(main)\n", stdin=subprocess.DEVNULL)
    assert proc.stdout.readline() == "line 0\n"
    proc.stdout.close()  # as head does after its lines
    assert proc.wait(timeout=30) == 141 and proc.stderr.read() == ""


def test_stdout_closed_before_the_last_flush_ends_the_script_quietly(tmp_path):
    """The reader is gone before the script's buffered lines are flushed (at its end): no
    'Exception ignored ... BrokenPipeError' at exit either."""
    buffered = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # as in a user's shell
    proc = script_process(tmp_path, "def main():\n    sys.stdin.readline()\n    print('a short answer')\n"
                                    "run_script(main)\n", stdin=subprocess.PIPE, env=buffered)
    proc.stdout.close()
    proc.stdin.write("go\n")
    proc.stdin.close()
    assert proc.wait(timeout=30) == 141 and proc.stderr.read() == ""


def test_ctrl_c_during_the_imports_is_one_line_and_exit_130(tmp_path):
    """stop_on_ctrl_c before the slow imports: a Ctrl-C there is the same one line, not a
    traceback (nor an exception that an import swallows)."""
    proc = script_process(tmp_path, "stop_on_ctrl_c()\nprint('importing', flush=True)\n"
                                    "while True:\n    time.sleep(0.01)\n", stdin=subprocess.DEVNULL)
    assert proc.stdout.readline() == "importing\n"
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 130 and proc.stderr.read() == "stopped by Ctrl-C\n"


def test_ctrl_c_in_main_unwinds_it_and_is_one_line(tmp_path):
    """Once run_script runs main(), Ctrl-C is KeyboardInterrupt again: main's `finally` runs (files
    tidied up), then the one line; a second Ctrl-C adds none."""
    proc = script_process(tmp_path, "stop_on_ctrl_c()\ndef main():\n    try:\n        print('main', flush=True)\n"
                                    "        while True:\n            time.sleep(0.01)\n    finally:\n"
                                    "        print('tidied', flush=True)\nrun_script(main)\n", stdin=subprocess.DEVNULL)
    assert proc.stdout.readline() == "main\n"
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 130
    assert proc.stdout.read() == "tidied\n" and proc.stderr.read() == "stopped by Ctrl-C\n"


def test_a_second_ctrl_c_while_the_script_exits_adds_nothing(tmp_path):
    """An impatient second Ctrl-C during the exit (torch's atexit clean-up, here a slow one) ends
    the process at once, without an 'Exception ignored in atexit callback' traceback."""
    proc = script_process(tmp_path, "import atexit\nstop_on_ctrl_c()\natexit.register(time.sleep, 30)\n"
                                    "def main():\n    print('main', flush=True)\n    time.sleep(60)\n"
                                    "run_script(main)\n", stdin=subprocess.DEVNULL)
    assert proc.stdout.readline() == "main\n"
    proc.send_signal(signal.SIGINT)
    assert proc.stderr.readline() == "stopped by Ctrl-C\n"  # now in the exit's 30 s clean-up
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=10) == 130 and proc.stderr.read() == ""


def test_importing_a_script_leaves_ctrl_c_alone():
    """A test that imports a script (to call its main) keeps pytest's own Ctrl-C: stop_on_ctrl_c runs
    only in the script's own process."""
    import importlib.util

    from conftest import ROOT

    scripts = [p for p in sorted((ROOT / "scripts").glob("*.py")) if "stop_on_ctrl_c()" in p.read_text()]
    assert {"sample.py", "eval_hellaswag.py", "bench_sample.py"} <= {p.name for p in scripts}
    before = signal.getsignal(signal.SIGINT)
    for path in scripts:
        spec = importlib.util.spec_from_file_location(f"imported_{path.stem}", path)
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
        assert signal.getsignal(signal.SIGINT) is before, path.name


@pytest.mark.parametrize("exists, folder, force, refused", [
    (None, False, False, None),                     # a new file: written
    ("file", False, False, "holds an earlier result"),
    ("file", False, True, None),                    # --force replaces it
    ("dir", False, False, "give a file path in an existing directory"),
    (None, True, False, None),                      # a new folder
    ("empty-dir", True, False, None),               # an empty one
    ("dir", True, False, "holds an earlier result"),
    ("dir", True, True, None),
    ("file", True, True, "give a folder path"),
])
def test_an_output_path_holding_a_result_is_refused_unless_forced(tmp_path, exists, folder, force, refused):
    from gpt2.run.script import check_output

    path = tmp_path / "out"
    if exists == "file":
        path.write_text("earlier")
    elif exists in ("dir", "empty-dir"):
        path.mkdir()
        if exists == "dir":
            (path / "config.json").write_text("{}")
    if refused is None:
        check_output(path, "--out", force, folder)
        return
    with pytest.raises(ConfigError, match=refused) as err:
        check_output(path, "--out", force, folder)
    assert str(err.value).startswith(f"--out {path}")
