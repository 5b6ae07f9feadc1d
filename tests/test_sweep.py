"""Sweeps end to end: Hydra multirun jobs (basic, joblib, submitit_local launchers), the Optuna study run by
train.py, the W&B sweep spec, and the sweep report of a real sweep."""

import json
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from gpt2.config import from_hydra
from gpt2.run.compose import compose
from gpt2.run.logger import read_metrics
from gpt2.sweep.report import collect_jobs, sweep_group

from conftest import ROOT, TINY, read_wandb_records, run_train

pytestmark = pytest.mark.slow  # every test here runs train.py, a script or torchrun in a subprocess

FAST = [*TINY, "data.tokenizer=char", "trainer.sample_tokens=0", "logger.mode=offline"]


def multirun(sweep_dir, *overrides, timeout=300):
    return subprocess.run([sys.executable, str(ROOT / "train.py"), "-m", f"hydra.sweep.dir={sweep_dir}",
                           *overrides], cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=timeout)


def wandb_group(job_dir: Path) -> str:
    run = next(r["run"] for r in read_wandb_records(job_dir) if r["type"] == "run")
    return run["run_group"]


def results(sweep_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (sweep_dir / "results.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def lr_sweep(tmp_path_factory, data_dir):
    sweep_dir = tmp_path_factory.mktemp("multirun") / "2026-11-26" / "01-02-03"
    result = multirun(sweep_dir, *FAST, f"data.data_dir={data_dir}", "optim.lr=1e-3,3e-3")
    assert result.returncode == 0, result.stderr
    return sweep_dir, result.stdout


def test_multirun_runs_every_combination_in_its_own_directory(lr_sweep):
    sweep_dir, stdout = lr_sweep
    rows = results(sweep_dir)
    assert [r["job"] for r in rows] == ["0", "1"] and all(r["status"] == "COMPLETED" for r in rows)
    for row in rows:
        summary = json.loads((sweep_dir / row["job"] / "summary.json").read_text())
        assert row["objective"] == summary["best_val_loss"]  # what the task function returned
        assert summary["iters"] == 20
    configs = [yaml.safe_load((sweep_dir / r["job"] / "config.yaml").read_text()) for r in rows]
    assert sorted(c["optim"]["lr"] for c in configs) == [1e-3, 3e-3]
    # the W&B runs of one sweep share a group named after it
    assert {wandb_group(sweep_dir / r["job"]) for r in rows} == {sweep_group(str(sweep_dir))} == {"2026-11-26_01-02-03"}
    assert "best first" in stdout and (sweep_dir / "sweep_report.png").is_file()


def test_sweep_report_script(lr_sweep, tmp_path):
    sweep_dir, _ = lr_sweep
    png = tmp_path / "report.png"
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "sweep_report.py"), str(sweep_dir),
                          "--png", str(png)], capture_output=True, text=True, timeout=120, check=True).stdout
    lines = out.splitlines()
    assert lines[0].split()[:5] == ["rank", "job", "best", "val", "tokens/s"]
    losses = [float(line.split()[2]) for line in lines[1:3]]
    assert losses == sorted(losses)  # best first
    assert "optim.lr=" in lines[1] and "model.n_layer" not in lines[1]  # only what was swept
    assert png.read_bytes()[:4] == b"\x89PNG"
    jobs = collect_jobs(sweep_dir)
    assert [j["swept"] for j in jobs] and set(jobs[0]["swept"]) == {"optim.lr"}


def test_a_failing_job_is_reported_and_the_others_kept(tmp_path, data_dir):
    result = multirun(tmp_path, *FAST, f"data.data_dir={data_dir}", "model.n_head=2,3", "logger=none")
    assert result.returncode == 0, result.stderr
    rows = {r["job"]: r for r in results(tmp_path)}
    ok = json.loads((tmp_path / "0" / "summary.json").read_text())
    failed = json.loads((tmp_path / "1" / "summary.json").read_text())
    assert ok["iters"] == 20 and rows["0"]["objective"] == ok["best_val_loss"]
    assert rows["0"]["status"] == "COMPLETED" and rows["1"]["status"] == "FAILED" and rows["1"]["objective"] is None
    assert failed == {"status": "failed",
                      "error": "model.n_head: model.n_embd (32) must be divisible by model.n_head (3)"}
    assert "FAILED" in result.stdout and "1 of 2 jobs failed" in result.stdout


def test_optuna_study_runs_trials_and_continues_from_storage(tmp_path, data_dir):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    common = [*FAST, f"data.data_dir={data_dir}", "hparams_search=shakespeare_optuna",
              f"hparams_search.storage={storage}", "trainer.max_iters=6", "trainer.eval_interval=3",
              "optim.warmup_iters=2"]
    first = multirun(tmp_path / "a", *common, "hparams_search.n_trials=3")
    assert first.returncode == 0, first.stderr
    job = tmp_path / "a" / "0"
    best = json.loads((job / "best_params.json").read_text())
    trials = sorted(job.glob("trial_*"))
    assert [t.name for t in trials] == ["trial_000", "trial_001", "trial_002"]
    losses = [json.loads((t / "summary.json").read_text())["best_val_loss"] for t in trials]
    assert best["best_val_loss"] == min(losses) and best["completed"] == 3
    assert results(tmp_path / "a")[0]["objective"] == best["best_val_loss"]  # the returned objective
    assert set(best["params"]) == {"optim.lr", "model.n_layer", "model.n_embd", "model.dropout", "data.batch_size"}
    assert f"best trial {best['best_trial']} of 3" in first.stdout
    # every trial is its own W&B run in the study's group
    assert {wandb_group(t) for t in trials} == {"shakespeare_optuna"} == {best["study"]}
    # the override line is ready to use: it gives the best trial's config, study settings included
    line = (job / "best_overrides.txt").read_text().split()
    best_trial = yaml.safe_load((job / f"trial_{best['best_trial']:03d}" / "config.yaml").read_text())
    again = yaml.safe_load(OmegaConf.to_yaml(compose(*line), resolve=True))
    for key in ("data", "model", "optim", "trainer"):
        assert again[key] == best_trial[key], key
    assert again["data"]["tokenizer"] == "char" and again["trainer"]["max_iters"] == 6
    # the stored study continues: n_trials is the total, so one more trial runs
    second = multirun(tmp_path / "b", *common, "hparams_search.n_trials=4")
    assert second.returncode == 0, second.stderr
    assert [t.name for t in (tmp_path / "b" / "0").glob("trial_*")] == ["trial_003"]
    assert json.loads((tmp_path / "b" / "0" / "best_params.json").read_text())["trials"] == 4


def test_wandb_sweep_spec_is_valid_for_train_py(tmp_path, data_dir):
    spec = yaml.safe_load((ROOT / "scripts" / "wandb_sweep.yaml").read_text())
    assert spec["metric"] == {"name": "best_val_loss", "goal": "minimize"}
    assert "${args_no_hyphens}" in spec["command"] and spec["program"] == "train.py"
    samples = {}
    for key, param in spec["parameters"].items():
        values = param.get("values") or [param["min"], param["max"]]
        for value in values:  # every parameter is a valid override of our config
            from_hydra(compose(f"{key}={value}", "model.n_head=2" if key == "model.n_embd" else "model.n_head=4"))
        samples[key] = values[0]
    # the agent's command line, as `wandb agent` builds it, is accepted by train.py; each run gets
    # its own directory from the run id the agent sets (here the test's own directory instead)
    fixed = [arg for arg in spec["command"] if not arg.startswith("${")]
    assert "hydra.run.dir=outputs/wandb_sweep/${oc.env:WANDB_RUN_ID}" in fixed
    fixed = [arg for arg in fixed if not arg.startswith("hydra.run.dir=")]
    args = [f"{k}={v}" for k, v in samples.items()]
    result = run_train(tmp_path / "run", *fixed, *args, *FAST, f"data.data_dir={data_dir}",
                       "trainer.max_iters=4", "trainer.eval_interval=2")
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["iters"] == 4


def test_parallel_jobs_in_the_default_sweep_directory(tmp_path, data_dir, monkeypatch):
    """joblib's workers resolve the sweep directory again: it must be the one the sweep announced."""
    monkeypatch.delenv("GPT2_RUN_TAG", raising=False)
    result = subprocess.run([sys.executable, str(ROOT / "train.py"), "-m", *FAST, f"data.data_dir={data_dir}",
                             "logger=none", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                             "trainer.num_threads=1", "trainer.seed=1,2"], cwd=tmp_path, stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    sweeps = list((tmp_path / "multirun").glob("*/*"))
    assert len(sweeps) == 1, sweeps
    assert sorted(r["job"] for r in results(sweeps[0])) == ["0", "1"]
    assert (sweeps[0] / "0" / "summary.json").is_file() and (sweeps[0] / "1" / "summary.json").is_file()


def test_parallel_jobs_with_the_joblib_launcher(tmp_path, data_dir):
    result = multirun(tmp_path, *FAST, f"data.data_dir={data_dir}", "logger=none", "hydra/launcher=joblib",
                      "hydra.launcher.n_jobs=2", "trainer.num_threads=1", "optim.lr=1e-3,3e-3")
    assert result.returncode == 0, result.stderr
    assert sorted(r["job"] for r in results(tmp_path)) == ["0", "1"]
    assert all(json.loads((tmp_path / j / "summary.json").read_text())["iters"] == 20 for j in "01")


def test_a_study_that_cannot_complete_a_trial_or_open_its_storage_exits_1(tmp_path, data_dir):
    common = [*FAST, f"data.data_dir={data_dir}", "hparams_search=shakespeare_optuna", "hparams_search.n_trials=2"]
    bad_storage = multirun(tmp_path / "a", *common, "hparams_search.storage=nosuchdb://x")
    assert bad_storage.returncode == 1
    last = (bad_storage.stdout + bad_storage.stderr).strip().splitlines()[-1]
    assert last.split(" - ", 1)[-1].startswith("hparams_search.storage='nosuchdb://x' cannot be opened (")
    # every trial's width (64, 128 or 192) fails to divide by 5 heads
    none_completed = multirun(tmp_path / "b", *common, "model.n_head=5", "model.n_embd=40")
    assert none_completed.returncode == 1
    assert "no trial completed" in (none_completed.stdout + none_completed.stderr).strip().splitlines()[-1]
    assert "Traceback" not in bad_storage.stderr + none_completed.stderr


def test_a_stopped_sweep_says_how_to_continue_and_continues(tmp_path, data_dir):
    from conftest import wait_for_iter

    sweep = tmp_path / "sweep"
    overrides = [*FAST, f"data.data_dir={data_dir}", "logger=none", "trainer.max_iters=400",
                 "trainer.log_interval=1", "optim.lr=1e-3,2e-3,3e-3"]
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), "-m", f"hydra.sweep.dir={sweep}", *overrides],
                            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    while not (sweep / "1" / "metrics.jsonl").exists() and proc.poll() is None:
        time.sleep(0.05)
    wait_for_iter(proc, sweep / "1", 5)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 1
    line = stderr.strip().splitlines()[-1]
    assert [r["job"] for r in results(sweep)] == ["0"]  # what finished is recorded
    finished = (sweep / "0" / "summary.json").read_bytes()
    command = shlex.split(line.split("Continue the sweep with: ", 1)[1])
    assert command[:3] == ["python", "train.py", "-m"] and "trainer.resume=auto" in command
    again = subprocess.run([sys.executable, *command[1:]], cwd=ROOT, stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    rows = results(sweep)
    assert sorted(r["job"] for r in rows) == ["0", "1", "2"] and {r["status"] for r in rows} == {"COMPLETED"}
    assert [r["iter"] for r in read_metrics(sweep / "1")] == list(range(401))  # job 1 resumed, not restarted
    assert (sweep / "0" / "summary.json").read_bytes() == finished  # the finished job is kept as it was


def test_a_sweep_or_study_never_overwrites_another_in_its_directory(tmp_path, data_dir):
    common = [*FAST, f"data.data_dir={data_dir}", "logger=none", "trainer.max_iters=5"]
    assert multirun(tmp_path / "sweep", *common, "optim.lr=1e-3").returncode == 0
    files = [tmp_path / "sweep" / "multirun.yaml", *(p for p in (tmp_path / "sweep" / "0").rglob("*") if p.is_file())]
    before = {p: p.read_bytes() for p in files}
    again = multirun(tmp_path / "sweep", *common, "optim.lr=5e-3")
    assert again.returncode == 1 and again.stderr.strip().splitlines() == [
        f"error: hydra.sweep.dir={tmp_path / 'sweep'} already holds a sweep's runs "
        f"({tmp_path / 'sweep' / '0' / 'ckpt' / 'best.pt'}, ...): continue it with trainer.resume=auto, or use "
        f"another hydra.sweep.dir"]
    assert {p: p.read_bytes() for p in files} == before
    study = [*common, "hparams_search=shakespeare_optuna", "hparams_search.n_trials=1"]
    assert multirun(tmp_path / "study", *study).returncode == 0
    trial = tmp_path / "study" / "0" / "trial_000"
    files = [tmp_path / "study" / "0" / "config.yaml", *(p for p in trial.rglob("*") if p.is_file())]
    before = {p: p.read_bytes() for p in files}
    other = multirun(tmp_path / "study", *study, "hparams_search.seed=7")
    assert other.returncode == 1 and "already holds a run or another study's trials" in other.stderr
    assert {p: p.read_bytes() for p in before} == before


def test_the_submitit_local_launcher_runs_the_sweep(tmp_path, data_dir):
    """The path a Slurm sweep takes (hydra/launcher=submitit_slurm), on one machine without Slurm."""
    result = multirun(tmp_path, *FAST, f"data.data_dir={data_dir}", "logger=none", "hydra/launcher=submitit_local",
                      "optim.lr=1e-3,3e-3")
    assert result.returncode == 0, result.stderr
    rows = results(tmp_path)
    assert sorted(r["job"] for r in rows) == ["0", "1"] and {r["status"] for r in rows} == {"COMPLETED"}
    assert all(json.loads((tmp_path / j / "summary.json").read_text())["iters"] == 20 for j in "01")
