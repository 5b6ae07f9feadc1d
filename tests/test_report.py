"""Reading a sweep (gpt2/sweep/report.py): every job's summary and overrides, the table best first, the
plot, the W&B group name; on hand-written job folders (Hydra multirun jobs and Optuna trials)."""

import json
import logging

import pytest

from gpt2.files import atomic_write_text
from gpt2.run.record import RunSummary
from gpt2.sweep.report import collect_jobs, format_table, plot_sweep, sweep_group


def job(directory, summary: dict, overrides: list[str], hydra: bool = True):
    """A finished job as train.py leaves it: summary.json and its overrides (Hydra's .hydra/overrides.yaml,
    or a study trial's overrides.json)."""
    RunSummary(summary).write(directory)
    if hydra:
        atomic_write_text(directory / ".hydra" / "overrides.yaml", "".join(f"- {o}\n" for o in overrides))
    else:
        atomic_write_text(directory / "overrides.json", json.dumps(overrides))


def finished(loss: float, **more) -> dict:
    return {"best_val_loss": loss, "tokens_per_sec": 1000.0, "wall_s": 2.5, "stopped_by": None, **more}


@pytest.fixture
def sweep(tmp_path):
    job(tmp_path / "0", finished(2.5), ["optim.lr=0.001", "model.n_layer=2", "hydra.run.dir=x"])
    job(tmp_path / "1", finished(2.1, stopped_by="SIGTERM"), ["optim.lr=0.003", "model.n_layer=2"])
    job(tmp_path / "2", {"status": "failed", "error": "model.n_head: must divide"}, ["optim.lr=0.01",
                                                                                      "model.n_layer=2"])
    return tmp_path


def test_jobs_come_best_first_with_only_the_swept_keys(sweep):
    jobs = collect_jobs(sweep)
    assert [j["job"] for j in jobs] == ["1", "0", "2"]  # failed last
    assert [j["swept"] for j in jobs] == [{"optim.lr": 0.003}, {"optim.lr": 0.001}, {"optim.lr": 0.01}]
    assert jobs[0]["overrides"] == {"optim.lr": 0.003, "model.n_layer": 2}  # numbers read as numbers


def test_the_table_ranks_jobs_and_marks_stopped_and_failed_ones(sweep):
    lines = format_table(collect_jobs(sweep)).splitlines()
    assert lines[0].split() == ["rank", "job", "best", "val", "tokens/s", "wall", "s", "overrides"]
    assert lines[1].split() == ["1", "1", "2.1000", "1000", "2.5", "optim.lr=0.003", "(stopped)"]
    assert lines[2].split() == ["2", "0", "2.5000", "1000", "2.5", "optim.lr=0.001"]
    assert lines[3].split()[:5] == ["3", "2", "FAILED", "-", "-"] and "(model.n_head: must divide)" in lines[3]


def test_study_trials_are_read_from_their_overrides_json(tmp_path):
    job(tmp_path / "trial_000", finished(3.0), ["optim.lr=0.001"], hydra=False)
    job(tmp_path / "trial_001", finished(2.0, tokens_per_sec=None), ["optim.lr=0.002"], hydra=False)
    jobs = collect_jobs(tmp_path)
    assert [(j["job"], j["swept"]) for j in jobs] == [("trial_001", {"optim.lr": 0.002}),
                                                     ("trial_000", {"optim.lr": 0.001})]
    assert format_table(jobs).splitlines()[1].split()[:4] == ["1", "trial_001", "2.0000", "-"]  # null: '-'


def test_a_damaged_job_is_left_out_with_a_warning_naming_it(sweep, caplog):
    (sweep / "3").mkdir()
    (sweep / "3" / "summary.json").write_text("[1, 2")
    atomic_write_text(sweep / "0" / ".hydra" / "overrides.yaml", "{not: a list}\n")
    with caplog.at_level(logging.WARNING):
        jobs = collect_jobs(sweep)
    assert sorted(j["job"] for j in jobs) == ["0", "1", "2"] and jobs[1]["overrides"] == {}
    assert f"{sweep / '3' / 'summary.json'} is not a JSON object (damaged?): the job is left out" in caplog.text
    assert "is not a list of overrides (damaged?): the job is reported without them" in caplog.text


@pytest.mark.parametrize("lrs,scale", [((0.001, 0.003), "linear"), ((0.0001, 0.003), "log")])
def test_the_plot_is_a_png_with_a_log_axis_for_a_wide_range(tmp_path, monkeypatch, lrs, scale):
    import matplotlib.pyplot as plt

    for n, lr in enumerate(lrs):
        job(tmp_path / str(n), finished(2.0 + n), [f"optim.lr={lr}"])
    axes, subplots = [], plt.subplots

    def keeping_the_axes(*args, **kwargs):
        fig, grid = subplots(*args, **kwargs)
        axes.append(grid[0][0])
        return fig, grid

    monkeypatch.setattr(plt, "subplots", keeping_the_axes)
    plot_sweep(collect_jobs(tmp_path), tmp_path / "report.png")
    assert (tmp_path / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert axes[0].get_xlabel() == "optim.lr" and axes[0].get_xscale() == scale  # log when 10x apart or more


@pytest.mark.parametrize("sweep_dir,group", [
    ("multirun/2026-11-26/01-02-03", "2026-11-26_01-02-03"),
    ("/abs/multirun/2026-11-26/01-02-03-9f2c", "2026-11-26_01-02-03-9f2c"),
    ("multirun", "sweep"),
    ("runs/my sweep!", "runs_my_sweep_"),
])
def test_the_wandb_group_is_the_sweep_directorys_last_two_parts(sweep_dir, group):
    assert sweep_group(sweep_dir) == group
