"""gpt2/sweep/callback.py, the Hydra callback of a multirun, its hooks called directly with small fake
configs and job returns: a sweep directory holding checkpoints refused at the start, the stop line
set, results.jsonl rows per job (a rerun replacing its row, a failed job's error), and the table and
sweep_report.png at the end; `job_failure` and `read_results` on their own."""

import json
import shlex
from pathlib import Path

import pytest
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import RunMode
from omegaconf import OmegaConf

from gpt2.errors import ConfigError
from gpt2.run.record import RunSummary
from gpt2.signals import STOP
from gpt2.sweep.callback import SweepReport, job_failure, read_results

SWEEP_OVERRIDES = ["optim.lr=1e-3,3e-3", "trainer.max_iters=20"]


def sweep_config(sweep_dir: Path, resume=None):
    """The parts of a multirun's config the callback reads."""
    return OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep_dir)}, "overrides": {"task": SWEEP_OVERRIDES}},
                             "trainer": {"resume": resume}})


def job_return(job_dir: Path, value, status=JobStatus.COMPLETED, overrides=("optim.lr=1e-3",),
               mode=RunMode.MULTIRUN) -> JobReturn:
    """What Hydra hands on_job_end for one job."""
    hydra_cfg = OmegaConf.create({"hydra": {"mode": mode, "runtime": {"output_dir": str(job_dir)}}})
    return JobReturn(overrides=list(overrides), hydra_cfg=hydra_cfg, status=status, _return_value=value)


def row(job, overrides=("optim.lr=1e-3",), status="COMPLETED", objective=None, error=None) -> dict:
    return {"job": job, "overrides": list(overrides), "status": status, "objective": objective, "error": error}


# ------------------------------------------------------------------------------ on_multirun_start
def test_a_sweep_dir_holding_checkpoints_is_refused_in_one_line(tmp_path):
    ckpt = tmp_path / "0" / "ckpt" / "last.pt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"")
    with pytest.raises(SystemExit) as refused:
        SweepReport().on_multirun_start(sweep_config(tmp_path))
    assert str(refused.value.code) == (
        f"error: hydra.sweep.dir={tmp_path} already holds a sweep's runs ({ckpt}, ...): continue it with "
        f"trainer.resume=auto, or use another hydra.sweep.dir")


@pytest.mark.parametrize("checkpoint, resume", [(False, None), (True, "auto"), (False, "auto")])
def test_a_sweep_start_sets_the_stop_line_to_the_continue_command(tmp_path, monkeypatch, checkpoint, resume):
    monkeypatch.setattr(STOP, "context", STOP.context)  # restored after the test
    if checkpoint:
        (tmp_path / "1" / "ckpt").mkdir(parents=True)
        (tmp_path / "1" / "ckpt" / "last.pt").write_bytes(b"")
    SweepReport().on_multirun_start(sweep_config(tmp_path, resume))
    command = (f"python train.py -m optim.lr=1e-3,3e-3 trainer.max_iters=20 trainer.resume=auto "
               f"{shlex.quote(f'hydra.sweep.dir={tmp_path}')}")
    assert STOP.context == (f"during sweep {tmp_path} (the jobs that finished are in its results.jsonl): "
                            f"continue it with: {command}")


# ---------------------------------------------------------------------------------- on_job_end
def test_each_job_appends_its_row_and_a_rerun_replaces_it(tmp_path):
    report, config = SweepReport(), sweep_config(tmp_path)
    report.on_job_end(config, job_return(tmp_path / "0", 2.5))
    report.on_job_end(config, job_return(tmp_path / "1", 2.25, overrides=["optim.lr=3e-3"]))
    assert read_results(tmp_path / "results.jsonl") == [row("0", objective=2.5),
                                                        row("1", ["optim.lr=3e-3"], objective=2.25)]
    report.on_job_end(config, job_return(tmp_path / "0", 2.0))  # a continued sweep reruns job 0
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [row("1", ["optim.lr=3e-3"], objective=2.25),
                                                    row("0", objective=2.0)]


def test_a_job_that_train_py_marked_failed_carries_its_error(tmp_path):
    RunSummary.failure(ConfigError("model.n_head: must divide n_embd")).write(tmp_path / "0")
    SweepReport().on_job_end(sweep_config(tmp_path), job_return(tmp_path / "0", float("inf")))
    assert read_results(tmp_path / "results.jsonl") == [
        row("0", status="FAILED", error="model.n_head: must divide n_embd")]


def test_a_job_that_hydra_marked_failed_carries_its_exception(tmp_path):
    SweepReport().on_job_end(sweep_config(tmp_path),
                             job_return(tmp_path / "0", RuntimeError("CUDA error: out of memory"), JobStatus.FAILED))
    assert read_results(tmp_path / "results.jsonl") == [row("0", status="FAILED", error="CUDA error: out of memory")]


def test_a_damaged_summary_gives_an_error_naming_it(tmp_path):
    (tmp_path / "0").mkdir()
    (tmp_path / "0" / "summary.json").write_text("{\"best_val_loss\": 1.")
    SweepReport().on_job_end(sweep_config(tmp_path), job_return(tmp_path / "0", 1.5))
    assert read_results(tmp_path / "results.jsonl") == [
        row("0", status="FAILED", error=f"{tmp_path / '0' / 'summary.json'} is not a JSON object (damaged?)")]


@pytest.mark.parametrize("value", [float("inf"), float("nan"), None, "2.5"])
def test_a_completed_job_without_a_finite_float_has_no_objective(tmp_path, value):
    RunSummary(best_val_loss=None, stopped_by=None).write(tmp_path / "0")
    SweepReport().on_job_end(sweep_config(tmp_path), job_return(tmp_path / "0", value))
    assert read_results(tmp_path / "results.jsonl") == [row("0")]


def test_a_single_run_writes_no_results(tmp_path):
    SweepReport().on_job_end(sweep_config(tmp_path), job_return(tmp_path / "0", 1.5, mode=RunMode.RUN))
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------- job_failure, read_results
@pytest.mark.parametrize("summary, failure", [
    (None, None),  # an Optuna study's job: best_params.json instead
    (RunSummary(best_val_loss=1.5, stopped_by=None), None),
    (RunSummary(best_val_loss=1.5, stopped_by="SIGTERM"), None),
    (RunSummary.failure(KeyError("n_head")), "KeyError: 'n_head'"),
])
def test_job_failure_is_the_error_a_summary_records(tmp_path, summary, failure):
    if summary is not None:
        summary.write(tmp_path)
    assert job_failure(tmp_path) == failure


def test_job_failure_of_a_damaged_summary_names_it(tmp_path):
    (tmp_path / "summary.json").write_text("[]")
    assert job_failure(tmp_path) == f"{tmp_path / 'summary.json'} is not a JSON object (damaged?)"


def test_read_results_drops_damaged_lines(tmp_path):
    path = tmp_path / "results.jsonl"
    assert read_results(path) == []
    path.write_text('{"job": "0", "objective": 2.5}\n{"job": "1", "obj\n[1, 2]\n\n"text"\n{"job": "2"}\n')
    assert read_results(path) == [{"job": "0", "objective": 2.5}, {"job": "2"}]


# ------------------------------------------------------------------------------ on_multirun_end
def fake_job(sweep_dir: Path, name: str, lr: str, summary: RunSummary) -> None:
    summary.write(sweep_dir / name)
    (sweep_dir / name / ".hydra").mkdir()
    OmegaConf.save(OmegaConf.create([f"optim.lr={lr}", "trainer.max_iters=20"]),
                   sweep_dir / name / ".hydra" / "overrides.yaml")


def finished(loss: float) -> RunSummary:
    return RunSummary(best_val_loss=loss, tokens_per_sec=1234.4, wall_s=12.34, stopped_by=None, sample="")


def test_a_sweeps_end_prints_the_table_best_first_and_writes_the_png(tmp_path, capsys):
    fake_job(tmp_path, "0", "0.001", finished(2.5))
    fake_job(tmp_path, "1", "0.003", finished(2.25))
    SweepReport().on_multirun_end(sweep_config(tmp_path))
    assert capsys.readouterr().out == (
        f"\nsweep {tmp_path} (2 runs), best first:\n"
        "rank  job  best val  tokens/s  wall s  overrides\n"
        "1     1    2.2500    1234      12.3    optim.lr=0.003\n"
        "2     0    2.5000    1234      12.3    optim.lr=0.001\n")
    assert (tmp_path / "sweep_report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_sweeps_end_counts_its_failed_jobs(tmp_path, capsys):
    fake_job(tmp_path, "0", "0.001", finished(2.5))
    fake_job(tmp_path, "1", "1.0", RunSummary.failure(ConfigError("optim.lr: too large")))
    SweepReport().on_multirun_end(sweep_config(tmp_path))
    assert capsys.readouterr().out == (
        f"\nsweep {tmp_path} (2 runs), best first:\n"
        "rank  job  best val  tokens/s  wall s  overrides\n"
        "1     0    2.5000    1234      12.3    optim.lr=0.001\n"
        "2     1    FAILED    -         -       optim.lr=1.0  (optim.lr: too large)\n"
        "1 of 2 jobs failed (see their train.log)\n")
    assert (tmp_path / "sweep_report.png").is_file()


def test_a_sweep_without_jobs_ends_quietly(tmp_path, capsys):
    SweepReport().on_multirun_end(sweep_config(tmp_path))
    assert capsys.readouterr().out == ""
    assert list(tmp_path.iterdir()) == []
