"""Reading a sweep (gpt2/sweep/report.py): every job's summary and overrides, the table best first, the
plot, the W&B group name; on hand-written job folders (Hydra multirun jobs and Optuna trials)."""

import json
import logging

import pytest

from gpt2.files import atomic_write_text
from gpt2.run.record import RunSummary
from gpt2.sweep.report import collect_jobs, format_table, plot_sweep, sweep_group, x_axis_kind


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


def tick_labels(ax) -> list[str]:
    """The x tick labels drawn (inside the view, not empty), asserting that no two overlap."""
    ax.figure.canvas.draw()
    low, high = sorted(ax.get_xlim())
    drawn = [(label.get_window_extent(), label.get_text())
             for label, at in zip(ax.get_xticklabels(), ax.get_xticks()) if low <= at <= high and label.get_text()]
    drawn.sort(key=lambda box_text: box_text[0].x0)
    assert all(a.x1 < b.x0 for (a, _), (b, _) in zip(drawn, drawn[1:])), [text for _, text in drawn]
    return [text for _, text in drawn]


@pytest.mark.parametrize("lrs,scale", [((0.001, 0.003), "linear"), ((0.0001, 0.003), "log")])
def test_the_plot_is_a_png_with_a_log_axis_for_a_wide_range(tmp_path, lrs, scale):
    for n, lr in enumerate(lrs):
        job(tmp_path / str(n), finished(2.0 + n), [f"optim.lr={lr}"])
    fig = plot_sweep(collect_jobs(tmp_path), tmp_path / "report.png")
    assert (tmp_path / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ax = fig.axes[0]
    assert ax.get_xlabel() == "optim.lr" and ax.get_xscale() == scale  # log when 10x apart or more
    assert tick_labels(ax)


STUDY_CONFIG = """hparams_search:
  params:
    optim.lr: {type: float, low: 0.0003, high: 0.003, log: true}
    model.n_layer: {type: int, low: 2, high: 6}
"""


@pytest.mark.parametrize("drawn_log", [True, False])
def test_a_key_the_study_draws_log_uniformly_gets_a_log_axis_and_an_int_key_whole_ticks(tmp_path, drawn_log):
    study = tmp_path / "0"
    atomic_write_text(study / "config.yaml", STUDY_CONFIG if drawn_log else "hparams_search: null\n")
    for n, (lr, layers) in enumerate([(0.0004, 2), (0.002, 3), (0.001, 2)]):  # 5x apart only
        job(study / f"trial_{n:03d}", finished(2.0 + n), [f"optim.lr={lr}", f"model.n_layer={layers}"], hydra=False)
    jobs = collect_jobs(tmp_path)
    assert {frozenset(j["log"]) for j in jobs} == {frozenset({"optim.lr"} if drawn_log else ())}
    fig = plot_sweep(jobs, tmp_path / "report.png")
    layers, lr = fig.axes  # the swept keys, sorted
    assert (lr.get_xlabel(), layers.get_xlabel()) == ("optim.lr", "model.n_layer")
    assert lr.get_xscale() == ("log" if drawn_log else "linear") and layers.get_xscale() == "linear"
    lr_ticks = tick_labels(lr)  # '%g', apart
    assert all(f"{float(t):g}" == t for t in lr_ticks) and (lr_ticks == ["0.0005", "0.001", "0.002"] or not drawn_log)
    assert tick_labels(layers) == ["2", "3"]  # no 2.5
    assert (tmp_path / "report.png").is_file()


@pytest.mark.parametrize("values,drawn_log,kind", [
    ([2, 3], False, "integer"), ([64, 128, 192], False, "integer"), ([8, 256], False, "log"),
    ([0.0004, 0.002], True, "log"), ([0.0004, 0.002], False, "linear"), ([0.0, 0.1], True, "linear"),
    ([0.001, 0.01], False, "log"), (["gelu", "relu"], False, "categorical"), ([1, "x"], False, "categorical"),
])
def test_x_axis_kind(values, drawn_log, kind):
    assert x_axis_kind(values, drawn_log) == kind


@pytest.mark.parametrize("values", [
    [0.00041, 0.00043, 0.00047], [0.0004, 0.0006], [3e-5, 3e-3], [1e-6, 1e-4, 1e-2, 1.0], [1e-9, 1.0, 1e3],
    list(range(2, 14)), [0.0, 0.05, 0.13, 0.2],
])
def test_tick_labels_never_run_together(tmp_path, values):
    for n, value in enumerate(values):
        job(tmp_path / str(n), finished(2.0 + n / 10), [f"optim.lr={value}"])
    labels = tick_labels(plot_sweep(collect_jobs(tmp_path), tmp_path / "report.png").axes[0])
    assert len(labels) >= 2 and all(f"{float(t):g}" == t for t in labels), labels


def test_a_study_whose_storage_is_gone_is_reported_from_its_directory_with_a_warning(tmp_path, caplog):
    gone = tmp_path / "moved.db"
    atomic_write_text(tmp_path / "0" / "study.json", json.dumps({"study_name": "s", "storage": f"sqlite:///{gone}"}))
    job(tmp_path / "0" / "trial_000", finished(2.0), ["optim.lr=0.001"], hydra=False)
    with caplog.at_level(logging.WARNING):
        jobs = collect_jobs(tmp_path)
    assert [j["job"] for j in jobs] == ["0/trial_000"] and not gone.exists()  # not created by opening it
    assert f"study 's': storage sqlite:///{gone} cannot be read (no file {gone})" in caplog.text


@pytest.mark.parametrize("sweep_dir,group", [
    ("multirun/2026-11-26/01-02-03", "2026-11-26_01-02-03"),
    ("/abs/multirun/2026-11-26/01-02-03-9f2c", "2026-11-26_01-02-03-9f2c"),
    ("multirun", "sweep"),
    ("runs/my sweep!", "runs_my_sweep_"),
])
def test_the_wandb_group_is_the_sweep_directorys_last_two_parts(sweep_dir, group):
    assert sweep_group(sweep_dir) == group
