"""torchrun: two gloo processes on the CPU train the same model as one process with the same global
batch, stop together, never hang when one dies, and resume exactly (or on another world size)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gpt2.train.checkpoint import load_checkpoint
from gpt2.run.logger import read_metrics

from conftest import ROOT, TINY, wait_for_iter

pytestmark = pytest.mark.slow  # every test here runs train.py, a script or torchrun in a subprocess

# dropout off: with it, one process draws masks for the whole batch and two draw them per slice; float32:
# bfloat16 (auto on CPUs with AMX or AVX512-BF16) rounds a batch of 4 and one of 8 differently, beyond the 1e-5 compared
RUN = [*TINY, "data.tokenizer=char", "data.batch_size=8", "trainer.grad_accum=2", "trainer.max_iters=24",
       "trainer.dtype=float32",
       "trainer.eval_interval=8", "trainer.log_interval=1", "trainer.ckpt_interval=4", "trainer.sample_tokens=0",
       "logger=none"]


def launch(run_dir, *overrides, world=2, **kwargs):
    command = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world}"]
               if world > 1 else [sys.executable])
    return subprocess.Popen([*command, str(ROOT / "train.py"), f"hydra.run.dir={run_dir}", *overrides],
                            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **kwargs)


def finish(proc, timeout=120, stderr_only=False):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, err if stderr_only else out + err


def losses(run_dir):
    return [(r["iter"], r.get("train_loss"), r.get("val_loss")) for r in read_metrics(run_dir)]


def weights(run_dir):
    return load_checkpoint(Path(run_dir) / "ckpt" / "last.pt")["model"]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, data_dir):
    run_dir = tmp_path_factory.mktemp("world1")
    rc, out = finish(launch(run_dir, *RUN, f"data.data_dir={data_dir}", world=1))
    assert rc == 0, out
    return run_dir


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory, data_dir):
    run_dir = tmp_path_factory.mktemp("world2")
    rc, out = finish(launch(run_dir, *RUN, f"data.data_dir={data_dir}"))
    assert rc == 0, out
    assert out.count("batch: 8 windows per micro-step (4 per process x 2 processes) x grad_accum 2") == 1
    return run_dir


@pytest.fixture(scope="module")
def two_processes_fsdp(tmp_path_factory, data_dir):
    run_dir = tmp_path_factory.mktemp("world2_fsdp")
    rc, out = finish(launch(run_dir, *RUN, f"data.data_dir={data_dir}", "trainer.parallel=fsdp"))
    assert rc == 0, out
    return run_dir


# today's recipe: Muon on the matrices (every rank orthogonalises the same all-reduced gradients); its
# iteration in float32, as bfloat16 turns the last-bit differences of an all-reduce into 2^-8 ones
MUON = ["model=modern", "optim=muon", "optim.schedule=wsd", "optim.muon_momentum_warmup=10",
        "optim.muon_precision=float32"]


@pytest.fixture(scope="module")
def one_process_muon(tmp_path_factory, data_dir):
    run_dir = tmp_path_factory.mktemp("world1_muon")
    rc, out = finish(launch(run_dir, *RUN, *MUON, f"data.data_dir={data_dir}", world=1))
    assert rc == 0, out
    return run_dir


@pytest.fixture(scope="module")
def two_processes_muon(tmp_path_factory, data_dir):
    run_dir = tmp_path_factory.mktemp("world2_muon")
    rc, out = finish(launch(run_dir, *RUN, *MUON, f"data.data_dir={data_dir}"))
    assert rc == 0, out
    return run_dir


@pytest.mark.parametrize("parallel", ["ddp", "fsdp", "ddp-muon"])
def test_two_processes_train_the_same_model_as_one(request, parallel):
    one_process = request.getfixturevalue("one_process_muon" if parallel == "ddp-muon" else "one_process")
    two_processes = request.getfixturevalue({"ddp": "two_processes", "fsdp": "two_processes_fsdp",
                                             "ddp-muon": "two_processes_muon"}[parallel])
    ours, theirs = losses(two_processes), losses(one_process)
    assert [r[0] for r in ours] == [r[0] for r in theirs] == list(range(25))
    for (_, train_2, val_2), (_, train_1, val_1) in zip(ours, theirs):
        for a, b in ((train_2, train_1), (val_2, val_1)):
            assert (a is None) == (b is None) and (a is None or abs(a - b) <= 1e-5 * abs(b)), (ours, theirs)
    for name, tensor in weights(one_process).items():
        torch.testing.assert_close(weights(two_processes)[name], tensor, rtol=1e-4, atol=1e-6)
    assert not (two_processes / "ckpt" / ".lock").exists() and (two_processes / "summary.json").is_file()


def ranks(torchrun: subprocess.Popen) -> dict:
    """{rank: pid} of torchrun's worker processes."""
    found = {}
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and int((proc / "stat").read_text().split(") ")[1].split()[1]) == torchrun.pid:
                env = dict(v.split("=", 1) for v in (proc / "environ").read_text().split("\0") if "=" in v)
                found[int(env["RANK"])] = int(proc.name)
        except (OSError, KeyError, IndexError):
            continue
    return found


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_sigterm_to_one_rank_stops_both_and_the_run_resumes_exactly(tmp_path, data_dir, two_processes,
                                                                    two_processes_fsdp, parallel):
    two_processes = two_processes if parallel == "ddp" else two_processes_fsdp
    run = [*RUN, f"data.data_dir={data_dir}", f"trainer.parallel={parallel}"]
    proc = launch(tmp_path, *run)
    wait_for_iter(proc, tmp_path, 6)
    os.kill(ranks(proc)[1], signal.SIGTERM)  # not rank 0: the one that writes
    rc, out = finish(proc, stderr_only=True)
    assert rc != 0 and out.count("stopped by SIGTERM at iteration") == 1, out  # said once, by rank 0
    stopped_at = read_metrics(tmp_path)[-1]["iter"]
    assert load_checkpoint(tmp_path / "ckpt" / "last.pt")["iter"] == stopped_at < 24
    assert "Resume with: torchrun --standalone --nproc_per_node=2 train.py" in out
    rc, out = finish(launch(tmp_path, *run, "trainer.resume=auto"))
    assert rc == 0, out
    assert losses(tmp_path) == losses(two_processes)  # bit-identical, as one process resumes
    for name, tensor in weights(two_processes).items():
        assert torch.equal(weights(tmp_path)[name], tensor), name


def test_a_run_stopped_on_two_processes_resumes_on_one(tmp_path, data_dir, two_processes):
    run = [*RUN, f"data.data_dir={data_dir}"]
    proc = launch(tmp_path, *run)
    wait_for_iter(proc, tmp_path, 10)
    os.kill(ranks(proc)[0], signal.SIGINT)
    assert finish(proc)[0] != 0
    stopped_at = load_checkpoint(tmp_path / "ckpt" / "last.pt")["iter"]
    rc, out = finish(launch(tmp_path, *run, "trainer.resume=auto", world=1))
    assert rc == 0, out
    ours, theirs = losses(tmp_path), losses(two_processes)  # the same data order, float rounding apart
    assert [r[0] for r in ours] == list(range(25)) and stopped_at < 24
    assert all(abs(a[1] - b[1]) <= 1e-4 * b[1] for a, b in zip(ours[1:], theirs[1:]))


def test_a_dead_rank_ends_the_run_without_a_hang(tmp_path, data_dir):
    proc = launch(tmp_path, *RUN, f"data.data_dir={data_dir}", "trainer.max_iters=100000")
    wait_for_iter(proc, tmp_path, 3)
    os.kill(ranks(proc)[1], signal.SIGKILL)
    started = time.time()
    rc, _ = finish(proc, timeout=90)
    assert rc != 0 and time.time() - started < 60


def test_a_batch_the_processes_cannot_share_is_one_line(tmp_path, data_dir):
    rc, out = finish(launch(tmp_path, *RUN, f"data.data_dir={data_dir}", "data.batch_size=5"))
    assert rc != 0
    assert out.count("data.batch_size=5 is the global batch (windows per micro-step over all processes) and "
                     "must divide by the 2 processes: use a multiple of 2") == 1, out
    # the only traceback is torchrun's own failure report (its launcher's frames), none from train.py
    assert out.count("Traceback") == out.count('Traceback (most recent call last):\n  File "<frozen runpy>"')


def test_an_fsdp_run_resumes_on_another_number_of_processes(tmp_path, data_dir):
    run = [*RUN, f"data.data_dir={data_dir}", "trainer.parallel=fsdp"]
    rc, out = finish(launch(tmp_path, *run, "trainer.max_iters=12", world=1))  # one process: no sharding
    assert rc == 0, out
    rc, out = finish(launch(tmp_path, *run, "trainer.resume=auto"))  # continued by two, sharded
    assert rc == 0, out
    assert [r["iter"] for r in read_metrics(tmp_path)] == list(range(25))


def test_without_a_run_id_the_ranks_need_a_run_directory(tmp_path, data_dir):
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29641",
               str(ROOT / "train.py"), *RUN, f"data.data_dir={data_dir}"]
    result = subprocess.run(command, cwd=tmp_path, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode != 0
    # said once, by rank 0 (every rank meets it before the run's own error handler)
    assert result.stderr.count("the ranks cannot agree on a default run directory: set hydra.run.dir") == 1, result.stderr
    assert not (tmp_path / "outputs").exists()
