"""The scripts in scripts/: each runs from anywhere on the installed package, answers --help, and turns
a user error into one line on stderr with exit status 1."""

import subprocess
import sys

import pytest

from conftest import ROOT

SCRIPTS = ["bench_data.py", "bench_checkpoint.py", "sweep_report.py"]


def run_script(name, *args, env=None, cwd="/"):
    return subprocess.run([sys.executable, str(ROOT / "scripts" / name), *args], cwd=cwd, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_works_from_any_directory(name):
    result = run_script(name, "--help")  # cwd=/: the package comes from the installation, not sys.path edits
    assert result.returncode == 0 and "usage:" in result.stdout, result.stderr


def test_no_script_edits_sys_path():
    for path in (ROOT / "scripts").glob("*.py"):
        assert "sys.path" not in path.read_text(), path.name


def test_bench_data_without_data_is_one_line(tmp_path, monkeypatch):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "GPT2_DATA_MIRROR": str(tmp_path / "no-mirror")}
    result = run_script("bench_data.py", "--batches", "2", env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'no-mirror' / 'tinyshakespeare' / 'input.txt'} does not exist: the mirror given "
        f"by data.mirror / GPT2_DATA_MIRROR must hold tinyshakespeare/input.txt"]


def test_sweep_report_of_a_directory_without_runs_is_one_line(tmp_path):
    result = run_script("sweep_report.py", str(tmp_path))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == f"error: no summary.json under {tmp_path}: is it a sweep directory?"


@pytest.mark.parametrize("override,message", [
    ("model.n_head=5", "error: model.n_head: model.n_embd (128) must be divisible by model.n_head (5)"),
    ("model.nosuch=3", "error: Could not override 'model.nosuch'. (Key 'nosuch' not in 'ModelConfig')"),
    ("experiment=nosuch", "error: In 'config': Could not find 'experiment/nosuch'"),
])
def test_bench_checkpoint_with_a_bad_override_is_one_line(tmp_path, override, message):
    result = run_script("bench_checkpoint.py", override, cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), lines
