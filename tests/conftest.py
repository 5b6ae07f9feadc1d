"""Shared fixtures: the offline data mirror, a session-wide data dir, and composing configs with Hydra."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gpt2.config import Config, from_hydra
from gpt2.run.compose import compose, register_configs

ROOT = Path(__file__).resolve().parents[1]
MIRROR = Path(os.environ.get("GPT2_DATA_MIRROR") or ROOT.parent / "shared" / "data").resolve()

# A model and run small enough for a 2-core CPU: every test that trains uses these.
TINY = [
    "model.n_layer=1", "model.n_head=2", "model.n_embd=32",
    "data.block_size=16", "data.batch_size=4",
    "trainer.max_iters=20", "trainer.eval_interval=10", "trainer.eval_iters=2",
    "trainer.log_interval=5", "trainer.device=cpu", "trainer.sample_tokens=16",
    "trainer.progress=false", "optim.warmup_iters=2", "optim.lr=3e-3",
]

register_configs()


@pytest.fixture(scope="session", autouse=True)
def offline_environment(tmp_path_factory):
    """Tests never touch the network, a real W&B account or the user's Hugging Face cache."""
    if not (MIRROR / "tinyshakespeare" / "input.txt").is_file():
        pytest.exit(f"the offline data mirror {MIRROR} is missing: set GPT2_DATA_MIRROR", returncode=2)
    saved = {k: os.environ.pop(k, None) for k in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL")}
    os.environ["GPT2_DATA_MIRROR"] = str(MIRROR)
    os.environ["NETRC"] = os.devnull  # no W&B credentials from the user's ~/.netrc
    os.environ["HF_HOME"] = str(tmp_path_factory.mktemp("hf-home"))  # before `datasets` is imported
    os.environ["HF_HUB_OFFLINE"] = "1"
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # a pytest-xdist worker starts so, and the
        signal.signal(signal.SIGINT, signal.default_int_handler)  # processes it starts would inherit it
    yield
    for key, value in saved.items():
        if value is not None:
            os.environ[key] = value


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """A data dir shared by the session: downloads copied from the mirror, token caches filled once."""
    return tmp_path_factory.mktemp("data")


compose_config = compose


def tiny_config(data_dir: Path, *overrides: str) -> Config:
    return from_hydra(compose_config(*TINY, f"data.data_dir={data_dir}", "logger=none", *overrides))


def run_train(run_dir: Path, *overrides: str, env: dict | None = None, timeout: int = 300):
    """Run train.py in a subprocess (no stdin, as CI) and return the CompletedProcess."""
    environment = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, str(ROOT / "train.py"), f"hydra.run.dir={run_dir}", *overrides],
                          cwd=ROOT, env=environment, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=timeout)


def one_line(result) -> str:
    """The single line a refused run prints (after the log prefix), asserting there is only one."""
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and "Traceback" not in lines[0], lines
    return lines[0].split("] - ", 1)[-1]


def read_wandb_records(run_dir: Path, run: Path | None = None) -> list[dict]:
    """Every record of an offline W&B run, read back from its .wandb file: `run` (an offline-run-*
    folder) or else the only one under run_dir/wandb."""
    import json

    files = list(run.glob("run-*.wandb")) if run else list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1, files
    wandb_cli = shutil.which("wandb", path=str(Path(sys.executable).parent)) or "wandb"
    out = subprocess.run([wandb_cli, "leet", "inspect", "--json", str(files[0])], capture_output=True,
                         text=True, timeout=60, check=True, stdin=subprocess.DEVNULL).stdout
    records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return records


def start_train(run_dir, *overrides, cwd=ROOT):
    """train.py in the background (stdout and stderr piped), for tests that send it signals."""
    command = [sys.executable, str(ROOT / "train.py"), *([f"hydra.run.dir={run_dir}"] if run_dir else []), *overrides]
    return subprocess.Popen(command, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for_iter(proc, run_dir, iteration, timeout=120):
    """Wait until run_dir/metrics.jsonl has a row at `iteration` or later."""
    from gpt2.run.logger import read_metrics

    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        rows = read_metrics(run_dir) if (run_dir / "metrics.jsonl").exists() else []
        if rows and rows[-1]["iter"] >= iteration:
            return
        time.sleep(0.01)
    raise AssertionError(f"never reached iteration {iteration}: {proc.poll()}")
