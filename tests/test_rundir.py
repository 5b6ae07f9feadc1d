"""A run directory holds one run: a second process is refused while the first runs, default directories
are unique, and no start or resume overwrites the checkpoints of another run."""

import json
import os
import signal

import pytest

from gpt2.train.checkpoint import load_checkpoint
from gpt2.errors import CheckpointError
from gpt2.run.rundir import LOCK_FILE, RunDirBusy, RunDirLock
from gpt2.run.logger import read_metrics
from gpt2.train.trainer import train

from conftest import TINY, run_train, start_train, tiny_config, wait_for_iter


def test_the_lock_refuses_a_second_owner_names_the_holder_and_is_released(tmp_path):
    with RunDirLock(tmp_path / "run"):
        with pytest.raises(RunDirBusy, match=r"run directory .*/run is in use by pid \d+ on .*: wait for that run "
                                             r"to end, or use another hydra.run.dir"):
            with RunDirLock(tmp_path / "run"):
                pass
    assert not (tmp_path / "run" / LOCK_FILE).exists()  # released and removed
    (tmp_path / "run" / LOCK_FILE).write_text('{"pid": 1}')  # left by a killed process: holds nothing
    with RunDirLock(tmp_path / "run"):
        pass


@pytest.mark.parametrize("tamper, deleted", [(lambda lock: lock.unlink(), True), (lambda lock: lock.write_text(""), False),
                                             (lambda lock: lock.write_text("not JSON"), False)],
                         ids=["deleted", "emptied", "overwritten"])
def test_a_run_whose_lock_file_was_tampered_with_still_refuses_a_second(tmp_path, data_dir, tamper, deleted):
    """The directory itself is locked too: a second run is refused, naming the holder, whatever became
    of the .lock file (a `rm`, an editor)."""
    run_dir = tmp_path / "run"
    with RunDirLock(run_dir):
        tamper(run_dir / LOCK_FILE)
        left = sorted(os.listdir(run_dir))
        with pytest.raises(RunDirBusy) as refused:
            train(tiny_config(data_dir), run_dir)
        assert sorted(os.listdir(run_dir)) == left  # nothing written
    line = str(refused.value)
    assert line.startswith(f"run directory {run_dir} is in use by pid {os.getpid()} on ") and "\n" not in line
    assert line.endswith(f"{'; its .lock file was deleted' if deleted else ''}): wait for that run to end, or use "
                         f"another hydra.run.dir")
    with RunDirLock(run_dir):  # released
        pass


def test_a_run_directory_that_is_a_file_is_one_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(Exception, match=r"run directory .*/file/run cannot be used \(is a file"):
        with RunDirLock(tmp_path / "file" / "run"):
            pass


@pytest.mark.slow
def test_two_processes_in_one_directory(tmp_path, data_dir):
    run_dir = tmp_path / "run"
    overrides = [*TINY, f"data.data_dir={data_dir}", "logger=none", "trainer.max_iters=100000",
                 "trainer.eval_interval=20", "trainer.log_interval=1"]
    first = start_train(run_dir, *overrides)
    try:
        wait_for_iter(first, run_dir, 3)
        second = run_train(run_dir, *overrides)
        assert second.returncode == 1
        lines = (second.stdout + second.stderr).strip().splitlines()
        assert len(lines) == 1 and f"is in use by pid {first.pid}" in lines[0], lines
        assert "is in use" not in (run_dir / "train.log").read_text()  # nothing written into the other run
        wait_for_iter(first, run_dir, 21)  # past the checkpoint at iteration 20
        first.send_signal(signal.SIGKILL)  # a killed owner leaves nothing stuck
        first.wait(timeout=60)
        rows = read_metrics(run_dir)
        assert [r["iter"] for r in rows[1:]] == list(range(1, len(rows)))  # one run's rows, in order
        resumed = run_train(run_dir, *overrides, "trainer.max_iters=1", "trainer.resume=auto")
        assert resumed.returncode == 0, resumed.stderr
        assert "resumed from" in (run_dir / "train.log").read_text()
    finally:
        first.kill()


@pytest.mark.slow
def test_default_run_directories_are_unique(tmp_path, data_dir, monkeypatch):
    monkeypatch.delenv("GPT2_RUN_TAG", raising=False)  # as two shells would start them
    overrides = [*TINY, f"data.data_dir={data_dir}", "logger=none", "trainer.max_iters=2",
                 "trainer.sample_tokens=0"]
    procs = [start_train(None, *overrides, cwd=tmp_path) for _ in range(2)]  # started in the same second
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    runs = list((tmp_path / "outputs").glob("*/*"))
    assert len(runs) == 2 and all((r / "summary.json").is_file() for r in runs), runs


@pytest.mark.slow
def test_resuming_another_runs_checkpoint_never_overwrites_a_run(tmp_path, data_dir):
    source, other = tmp_path / "source", tmp_path / "other"
    train(tiny_config(data_dir, "trainer.max_iters=10", "trainer.eval_interval=5"), source)
    train(tiny_config(data_dir, "trainer.max_iters=10", "trainer.seed=7"), other)
    before = {p.name: p.read_bytes() for p in [*(other / "ckpt").iterdir(), other / "metrics.jsonl"]}
    with pytest.raises(CheckpointError, match=r"already holds another run \(ckpt/: last.pt, best.pt, "
                                              r"iter_0000010.pt\), which resuming there would overwrite"):
        train(tiny_config(data_dir, f"trainer.resume={source / 'ckpt' / 'last.pt'}"), other)
    assert {p.name: p.read_bytes() for p in [*(other / "ckpt").iterdir(), other / "metrics.jsonl"]} == before
    # into a new directory it continues, its metrics starting with the source run's rows
    summary = train(tiny_config(data_dir, f"trainer.resume={source / 'ckpt' / 'iter_0000005.pt'}",
                                "trainer.eval_interval=5"), tmp_path / "new")
    assert summary["iters"] == 20
    assert [r["iter"] for r in read_metrics(tmp_path / "new")] == [0, 5, 10, 15, 20]
    assert read_metrics(tmp_path / "new")[:2] == read_metrics(source)[:2]


@pytest.mark.slow
def test_resuming_an_older_checkpoint_of_the_run_itself_is_refused(tmp_path, data_dir):
    run_dir = tmp_path / "run"
    train(tiny_config(data_dir, "trainer.max_iters=10", "trainer.eval_interval=5"), run_dir)
    with pytest.raises(CheckpointError, match=r"is at iteration 5, but .* holds later checkpoints "
                                              r"\(last.pt, best.pt, iter_0000010.pt\)"):
        train(tiny_config(data_dir, f"trainer.resume={run_dir / 'ckpt' / 'iter_0000005.pt'}"), run_dir)
    # its newest checkpoint, named by path, is the same as trainer.resume=auto
    summary = train(tiny_config(data_dir, f"trainer.resume={run_dir / 'ckpt' / 'last.pt'}",
                                "trainer.max_iters=15"), run_dir)
    assert summary["iters"] == 15


@pytest.mark.slow
def test_a_run_killed_before_its_first_last_pt_keeps_its_best_pt(tmp_path, data_dir):
    """trainer.ckpt_interval=0: best.pt is the only checkpoint until the end; after a SIGKILL a fresh
    start is refused, and resume=auto continues from best.pt."""
    run_dir = tmp_path / "run"
    overrides = [*TINY, f"data.data_dir={data_dir}", "logger=none", "trainer.max_iters=100000",
                 "trainer.ckpt_interval=0", "trainer.eval_interval=10", "trainer.log_interval=1"]
    proc = start_train(run_dir, *overrides)
    wait_for_iter(proc, run_dir, 12)
    proc.kill()
    proc.wait(timeout=60)
    best = run_dir / "ckpt" / "best.pt"
    saved, held = best.read_bytes(), load_checkpoint(best)["iter"]
    assert not (run_dir / "ckpt" / "last.pt").exists() and held >= 10
    fresh = run_train(run_dir, *overrides)
    assert fresh.returncode == 1 and "already holds a run (ckpt/: best.pt)" in fresh.stdout + fresh.stderr
    assert best.read_bytes() == saved
    resumed = run_train(run_dir, *overrides, "trainer.max_iters=30", "trainer.resume=auto")
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed from {best} at iteration {held}" in (run_dir / "train.log").read_text()
    assert [r["iter"] for r in read_metrics(run_dir)] == list(range(31))


@pytest.mark.slow
def test_a_refused_second_run_leaves_the_first_runs_files(tmp_path, data_dir):
    """Hydra's .hydra/ files and config.yaml are written only once the run owns the directory."""
    run_dir = tmp_path / "run"
    assert run_train(run_dir, *TINY, f"data.data_dir={data_dir}", "logger=none").returncode == 0
    files = [run_dir / "config.yaml", *(run_dir / ".hydra").iterdir()]
    before = {p: p.read_bytes() for p in files}
    refused = run_train(run_dir, *TINY, f"data.data_dir={data_dir}", "logger=none", "optim.lr=1e-2")
    assert refused.returncode == 1 and "already holds a run" in refused.stdout + refused.stderr
    assert {p: p.read_bytes() for p in files} == before
    assert "optim.lr=1e-2" not in json.dumps([p.read_text() for p in files])
