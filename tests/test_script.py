"""gpt2/run/script.py, what every script under scripts/ shares: `run_script` (a user error is one line
on stderr and exit 1, Ctrl-C one line and exit 130, a closed stdout pipe nothing and exit 141, a bug
keeps its traceback), `stop_on_ctrl_c` (the same line during the imports), the checks of the
scripts' own options (`int_list`, `check_device`) and `--threads`. The pipe and
Ctrl-C are checked on real processes: a tiny script around run_script."""

import argparse
import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from gpt2.errors import ConfigError, DataError
from gpt2.run.script import (add_threads_option, apply_threads, check_device, comma_choices, finite_float, int_list,
                             integer, nonempty_path, nonempty_str, nonnegative_float, nonnegative_int, positive_float,
                             fraction, positive_int, probability, run_script, script_parser)


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


# ------------------------------------------------------------------- the argparse types of the flags
@pytest.mark.parametrize("kind, text, value", [
    (positive_int, "3", 3), (positive_int, "1e9", 10**9), (nonnegative_int, "0", 0), (integer, "-3", -3),
    (finite_float, "-1.5", -1.5), (positive_float, "1e-3", 1e-3), (nonnegative_float, "0", 0.0),
    (probability, "1", 1.0), (nonempty_path, "runs/a", Path("runs/a")), (nonempty_str, "./gpt2", "./gpt2"),
    (comma_choices("a", "b"), "b,a", ["b", "a"]),
])
def test_a_flags_type_reads_a_meaningful_value(kind, text, value):
    assert kind(text) == value


@pytest.mark.parametrize("kind, text, message", [
    (positive_int, "0", "must be at least 1, got 0"),
    (positive_int, "-1", "must be at least 1, got -1"),
    (positive_int, "nan", "invalid int value: 'nan'"),
    (positive_int, "1.5", "invalid int value: '1.5'"),
    (positive_int, "", "invalid int value: ''"),
    (positive_int, "9223372036854775808", "must be a 64-bit integer, got 9223372036854775808"),
    (integer, "1e30", "must be a 64-bit integer, got 1e30"),
    (nonnegative_int, "-5", "must be >= 0, got -5"),
    (finite_float, "inf", "must be a finite number, got inf"),
    (finite_float, "x", "invalid float value: 'x'"),
    (positive_float, "nan", "must be a finite number > 0, got nan"),
    (positive_float, "-5", "must be a finite number > 0, got -5"),
    (positive_float, "0", "must be a finite number > 0, got 0"),
    (nonnegative_float, "-inf", "must be a finite number >= 0, got -inf"),
    (probability, "1.5", "must be in (0, 1], got 1.5"),
    (fraction, "1", "must be in (0, 1), both ends excluded, got 1"),
    (probability, "nan", "must be in (0, 1], got nan"),
    (nonempty_path, "", "an empty path; is a shell variable unset?"),
    (nonempty_str, "", "an empty path; is a shell variable unset?"),
    (comma_choices("a", "b"), "c", "comma-separated, each once, of a,b; got 'c'"),
    (comma_choices("a", "b"), "a,a", "comma-separated, each once, of a,b; got 'a,a'"),
])
def test_a_flags_type_refuses_a_meaningless_value_in_one_line(capsys, kind, text, message):
    parser = script_parser(None)
    parser.prog = "tool.py"
    parser.add_argument("--x", type=kind)
    with pytest.raises(SystemExit) as exited:
        parser.parse_args([f"--x={text}"])
    assert (exited.value.code, capsys.readouterr().err) == (1, f"error: --x: {message} (tool.py --help says more)\n")


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


# ---------------------------------------------- every script's flags, its main() imported in-process
SCRIPTS = sorted(p.name for p in (ROOT / "scripts").glob("*.py"))
REFUSED = {
    positive_int: ["0", "-1", "nan", "inf", "", "9223372036854775808"], nonnegative_int: ["-1", "nan", "inf", ""],
    integer: ["nan", "inf", "", "1e30"], finite_float: ["nan", "inf", "-inf", ""],
    positive_float: ["0", "-5", "nan", "inf", "-inf", ""], nonnegative_float: ["-1", "nan", "inf", ""],
    probability: ["0", "1.5", "nan", "inf", ""], fraction: ["0", "1", "1.5", "nan", ""], nonempty_path: [""], nonempty_str: [""],
}
"""What each type must refuse, in one line naming the flag."""
TEXT = {"overrides", "prompt", "labels", "metric", "title", "device", "dtype", "batch_sizes", "world", "batch",
        "train_override", "only", "text_column", "hf_config", "split"}
"""Flags of free text, or checked after the flags are read (int_list, check_device, Hydra, a regex)."""


@pytest.fixture(scope="module")
def scripts():
    """Every script of scripts/, imported once (prepare.py installs the harness's signal handlers when
    imported: they are put back)."""
    import importlib.util

    from gpt2.signals import STOP

    installed, handlers = STOP._installed, {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    modules = {}
    try:
        for name in SCRIPTS:
            spec = importlib.util.spec_from_file_location(f"script_{name[:-3]}", ROOT / "scripts" / name)
            modules[name] = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = modules[name]  # dataclasses look their module up there
            spec.loader.exec_module(modules[name])
    finally:
        STOP._installed = installed
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    yield modules
    for name in SCRIPTS:
        sys.modules.pop(f"script_{name[:-3]}", None)


class Parsed(Exception):
    """Raised instead of parsing: carries the parser a script's main() built."""


def parser_of(module, monkeypatch) -> argparse.ArgumentParser:
    """The script's parser: its build_parser(), else the one its main() builds (caught at parse_args)."""
    if hasattr(module, "build_parser"):
        return module.build_parser()
    def caught_here(parser, *args, **kwargs):
        raise Parsed(parser)

    with monkeypatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, "parse_args", caught_here)
        with pytest.raises(Parsed) as caught:
            module.main()
    return caught.value.args[0]


def one_line_exit_1(capsys, call) -> str:
    with pytest.raises(SystemExit) as exited:
        call()
    err = capsys.readouterr().err
    assert exited.value.code == 1 and err.count("\n") == 1 and err.startswith("error: "), err
    return err.rstrip("\n")


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_scripts_argument_errors_are_one_line_and_exit_1(script, scripts, monkeypatch, capsys):
    """Each script's own main() on an argument argparse refuses: an unknown flag, or the positional
    argument missing before it."""
    monkeypatch.setattr(sys, "argv", [script, "--no-such-flag"])
    assert one_line_exit_1(capsys, scripts[script].main).endswith(f"({script} --help says more)")


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_scripts_number_and_path_flags_refuse_meaningless_values(script, scripts, monkeypatch, capsys):
    """Generated from each script's parser: every flag that takes a value has a checked type (or is free
    text, TEXT), and NaN, inf, a count below 1, an empty path ('' from an unset shell variable) or a
    name it does not know is one line naming the flag and exit 1, before any work."""
    parser, unchecked = parser_of(scripts[script], monkeypatch), []
    for action in parser._actions:
        if action.nargs == 0 or action.choices is not None or action.dest in TEXT:
            continue
        allowed = getattr(action.type, "allowed", None)
        bad = ["", "nosuch", f"{allowed[0]},{allowed[0]}"] if allowed else REFUSED.get(action.type)
        name = action.option_strings[0] if action.option_strings else action.metavar or action.dest
        if bad is None:
            unchecked.append(name)
        for value in bad or []:
            argv = [f"{name}={value}"] if action.option_strings else [value]
            line = one_line_exit_1(capsys, lambda: parser.parse_args(argv))
            assert line.startswith(f"error: {name}: ") and line.endswith("--help says more)"), (argv, line)
    assert not unchecked, f"{script}: {unchecked} take values no type checks (use gpt2/run/script.py's types)"


def test_a_selection_that_matches_nothing_is_one_line(scripts, tmp_path, capsys):
    """A run without evaluations to draw, a README pattern matching no command (or empty, or no regex),
    a sweep directory without runs, a metric no row has: one line and exit 1, not an empty result."""
    run = tmp_path / "run"
    run.mkdir()
    (tmp_path / "empty").mkdir()
    (run / "summary.json").write_text('{"iters": 10, "tokens_seen": 100}')
    (run / "metrics.jsonl").write_text('{"iter": 0, "train_loss": 4.0}\n')
    cases = [
        ("compare_runs.py", [str(run), "--out", str(tmp_path / "c.png")],
         f"error: {run}: its metrics.jsonl holds no evaluation (no val_loss): nothing to draw"),
        ("check_readme.py", ["--list", "--only", "no-such-command"],
         "error: --only 'no-such-command': matches no command of the README"),
        ("check_readme.py", ["--list", "--only", ""], "error: --only: an empty pattern; is a shell variable unset?"),
        ("check_readme.py", ["--list", "--only", "("],
         "error: --only '(': not a regular expression (missing ), unterminated subpattern at position 0)"),
        ("sweep_report.py", [str(tmp_path / "empty")],
         f"error: no summary.json under {tmp_path / 'empty'}: is it a sweep directory?"),
        ("loss_chart.py", [str(run), "--metric", "val_bpb"], f"error: {run / 'metrics.jsonl'} has no 'val_bpb' values"),
    ]
    for script, argv, message in cases:
        assert one_line_exit_1(capsys, lambda: run_script(lambda: scripts[script].main(argv))) == message
