"""The run log (gpt2/run/logger.py): metrics.jsonl and samples.jsonl rows, summary.json, loss.png and
the same rows in an offline W&B run, read back from its files."""

import json
import logging
import math

import pytest

from gpt2.config import LoggerConfig, from_hydra
from gpt2.errors import ConfigError, DataError
from gpt2.run.logger import (NoLogger, RunLogger, copy_history, loss_figure, plot_losses, read_metrics,
                             read_samples, run_title)
from gpt2.run.wandb_run import WandbRun

from conftest import compose_config, read_wandb_records

STRICT = {"parse_constant": lambda name: pytest.fail(f"non-standard JSON literal {name}")}


def test_metrics_summary_plot_and_offline_wandb_agree(tmp_path, caplog):
    rows = [{"iter": 0, "val_loss": 4.2, "lr": 1e-4},
            {"iter": 5, "train_loss": 3.5, "lr": 5e-4, "grad_norm": 1.5, "tokens_per_sec": 1000.0},
            {"iter": 10, "train_loss": 3.0, "lr": 1e-3, "grad_norm": 1.2, "tokens_per_sec": 1100.0,
             "val_loss": 3.1}]
    samples = [{"iter": 5, "prompt": "O Romeo", "text": "O Romeo, wherefore\nart thou"},
               {"iter": 10, "prompt": "O Romeo", "text": "O Romeo, my love"}]
    cfg = LoggerConfig(mode="auto", project="test", group="g1")
    with caplog.at_level(logging.INFO, logger="gpt2.run"):
        with RunLogger(cfg, tmp_path, {"model": {"n_layer": 1}}) as run_log:
            assert run_log.wandb.mode == "offline"
            for row in rows:
                run_log.log(row)
                for sample in samples:
                    if sample["iter"] == row["iter"]:
                        run_log.log_sample(sample)
            run_log.finish({"best_val_loss": 3.1, "iters": 10})
    assert read_metrics(tmp_path) == rows
    assert read_samples(tmp_path) == samples
    offline = next(tmp_path.glob("wandb/offline-run-*"))
    assert f"W&B offline: {offline}; sync with: wandb sync {offline}" in caplog.messages
    assert f"metrics: {tmp_path / 'metrics.jsonl'}" in caplog.messages
    assert json.loads((tmp_path / "summary.json").read_text()) == {"best_val_loss": 3.1, "iters": 10}
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    records = read_wandb_records(tmp_path)
    history = [r["history"] for r in records if r["type"] == "history"]
    logged = {h["step"].get("num", 0): h["item"] for h in history}
    for row in rows:
        for key in ("train_loss", "val_loss", "lr"):
            if key in row:
                assert logged[row["iter"]][key] == row[key]
    tables = {step: json.loads((offline / "files" / item["samples.path"]).read_text())
              for step, item in logged.items() if "samples.path" in item}
    assert {step: table["columns"] for step, table in tables.items()} == {5: ["iter", "prompt", "text"],
                                                                          10: ["iter", "prompt", "text"]}
    assert tables[5]["data"] == [list(samples[0].values())]  # each table holds every sample so far
    assert tables[10]["data"] == [list(s.values()) for s in samples]
    run = next(r["run"] for r in records if r["type"] == "run")
    assert run["project"] == "test" and run["run_group"] == "g1"
    assert run["config"]["update"]["model"] == {"n_layer": 1}
    summary = {}
    for r in records:
        if r["type"] == "summary":
            summary.update(r["summary"].get("update", {}))
    assert summary["best_val_loss"] == 3.1


def test_logger_none_writes_files_only(tmp_path):
    with RunLogger(LoggerConfig(backend="none"), tmp_path, {}) as run_log:
        run_log.log({"iter": 1, "train_loss": 2.0})
        run_log.finish({"best_val_loss": math.inf})
    assert not (tmp_path / "wandb").exists()
    assert read_metrics(tmp_path) == [{"iter": 1, "train_loss": 2.0}]


def test_a_refused_wandb_setup_leaves_the_run_files_alone(monkeypatch, tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"iter": 0, "val_loss": 4.0}\n')
    monkeypatch.setenv("WANDB_MODE", "bogus")
    with pytest.raises(ConfigError, match="^WANDB_MODE='bogus' is not valid: use online, offline"):
        RunLogger(LoggerConfig(mode="offline"), tmp_path, {})
    assert (tmp_path / "metrics.jsonl").read_text() == '{"iter": 0, "val_loss": 4.0}\n'
    # wandb.setup itself, reached without the check, gives the same line instead of a ValidationError
    import wandb

    wandb.teardown()  # a W&B session already set up in this process would ignore the environment
    with pytest.raises(ConfigError, match="^WANDB_MODE='bogus' is not valid: use online, offline"):
        WandbRun(LoggerConfig(mode="offline"), tmp_path, {}, mode="offline")


@pytest.mark.parametrize("line,problem", [
    ('{"iter": 5, "train_loss": 3.', "is not JSON (damaged?)"),
    ("[5, 3.0]", 'is not a metrics row (a JSON object with an integer "iter")'),
    ('{"train_loss": 3.0}', 'is not a metrics row (a JSON object with an integer "iter")'),
    ('{"iter": "5", "train_loss": 3.0}', 'is not a metrics row (a JSON object with an integer "iter")'),
])
def test_resuming_with_a_damaged_metrics_line_is_one_line(tmp_path, line, problem):
    text = '{"iter": 0, "val_loss": 4.0}\n\n' + line + '\n{"iter": 10, "train_loss": 2.0}\n'
    (tmp_path / "metrics.jsonl").write_text(text)
    with pytest.raises(DataError) as info:
        RunLogger(LoggerConfig(backend="none"), tmp_path, {}, resume_from=10)
    assert str(info.value) == (f"{tmp_path / 'metrics.jsonl'} line 3 {problem}: repair or delete the line, "
                               f"or move the file away to resume with a fresh log")
    assert (tmp_path / "metrics.jsonl").read_text() == text  # left for the user to look at


def test_a_last_row_that_is_json_but_not_a_row_is_damage(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"iter": 0, "val_loss": 4.0}\nnull\n')
    with pytest.raises(DataError, match="metrics.jsonl line 2 is not a metrics row"):
        read_metrics(tmp_path)
    (tmp_path / "metrics.jsonl").write_text('{"iter": 0, "val_loss": 4.0}\n{"iter": 5, "tr\n\n')
    assert read_metrics(tmp_path) == [{"iter": 0, "val_loss": 4.0}]  # a line cut by a kill is dropped


def test_non_finite_values_are_written_as_null(tmp_path):
    with RunLogger(LoggerConfig(backend="none"), tmp_path, {}) as run_log:
        run_log.log({"iter": 0, "val_loss": math.inf, "lr": 1e-4})
        run_log.log({"iter": 5, "train_loss": 3.5, "grad_norm": math.nan, "lr": 5e-4})
        run_log.finish({"best_val_loss": math.inf, "losses": {"last": [-math.inf, 3.5]}, "iters": 5})
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line, **STRICT) for line in lines] == [
        {"iter": 0, "val_loss": None, "lr": 1e-4}, {"iter": 5, "train_loss": 3.5, "grad_norm": None, "lr": 5e-4}]
    assert json.loads((tmp_path / "summary.json").read_text(), **STRICT) == {
        "best_val_loss": None, "losses": {"last": [None, 3.5]}, "iters": 5}
    with RunLogger(LoggerConfig(backend="none"), tmp_path, {}, resume_from=5) as run_log:  # reads the nulls back
        run_log.finish({"best_val_loss": 3.5})
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_samples_are_rows_and_a_resume_drops_those_after_it(tmp_path):
    samples = [{"iter": i, "prompt": "\n", "text": f"sample {i}"} for i in (10, 20, 30)]
    with RunLogger(LoggerConfig(backend="none"), tmp_path, {}) as run_log:
        for i, sample in enumerate(samples):
            run_log.log({"iter": 10 * (i + 1), "train_loss": 3.0 - i})
            run_log.log_sample(sample)
    lines = (tmp_path / "samples.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == samples == read_samples(tmp_path)
    with RunLogger(LoggerConfig(backend="none"), tmp_path, {}, resume_from=20) as run_log:
        assert read_samples(tmp_path) == samples[:2] and [r["iter"] for r in read_metrics(tmp_path)] == [10, 20]
        run_log.log_sample({"iter": 30, "prompt": "\n", "text": "again"})
    assert read_samples(tmp_path) == [*samples[:2], {"iter": 30, "prompt": "\n", "text": "again"}]
    (tmp_path / "samples.jsonl").write_text('{"iter": 10}\n"x"\n{"iter": 20}\n')
    with pytest.raises(DataError, match=r"samples.jsonl line 2 is not a samples row"):
        RunLogger(LoggerConfig(backend="none"), tmp_path, {}, resume_from=20)
    assert [r["iter"] for r in read_metrics(tmp_path)] == [10, 20]  # read before anything is rewritten
    with RunLogger(LoggerConfig(backend="none"), tmp_path, {}):  # a fresh start drops them all
        pass
    assert read_samples(tmp_path) == [] and read_metrics(tmp_path) == []
    with NoLogger() as no_log:
        no_log.log_sample(samples[0])


def test_a_run_resumed_from_another_directory_starts_with_its_history(tmp_path):
    source, run_dir = tmp_path / "a", tmp_path / "b"
    source.mkdir()
    with RunLogger(LoggerConfig(backend="none"), source, {}) as run_log:
        for i in (0, 5, 10):
            run_log.log({"iter": i, "val_loss": 4.0 - i / 10})
            run_log.log_sample({"iter": i, "prompt": "", "text": str(i)})
    run_dir.mkdir()
    (run_dir / "samples.jsonl").write_text('{"iter": 1, "prompt": "", "text": "stale"}\n')
    copy_history(source, run_dir, 5)
    assert read_metrics(run_dir) == read_metrics(source)[:2] and read_samples(run_dir) == read_samples(source)[:2]


def test_loss_png_has_a_title_and_an_lr_panel(tmp_path):
    rows = [{"iter": 0, "val_loss": 4.0, "lr": 0.0}, {"iter": 5, "train_loss": 3.5, "lr": 5e-4},
            {"iter": 10, "train_loss": math.nan, "lr": 1e-3, "val_loss": 3.0}, {"iter": 15, "train_loss": 2.5}]
    config = {"model": {"n_layer": 4, "n_head": 4, "n_embd": 128}, "optim": {"name": "adamw", "lr": 1e-3},
              "data": {"batch_size": 12, "block_size": 64}, "trainer": {"grad_accum": 2}}
    title = run_title(tmp_path / "baby", config)
    assert title == "baby: 4L 4H 128d, adamw lr 0.001, batch 12 x 64 x 2 accum"
    fig = loss_figure(rows, title)
    loss_ax, lr_ax = fig.axes
    assert loss_ax.get_title() == title and lr_ax.get_shared_x_axes().joined(loss_ax, lr_ax)
    [lr_line] = lr_ax.get_lines()
    assert list(lr_line.get_xdata()) == [0, 5, 10] and list(lr_line.get_ydata()) == [0.0, 5e-4, 1e-3]
    assert [list(line.get_xdata()) for line in loss_ax.get_lines()] == [[5, 15], [0, 10]]  # train, val
    long = run_title(tmp_path / ("x" * 200), config)
    assert len(long) == 100 and long.endswith("…") and "\n" not in long
    assert run_title(tmp_path / "r", {}) == "r"
    plot_losses(rows, tmp_path / "loss.png", title)
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_logger_backends_combine_with_plus_and_each_part_is_checked():
    assert from_hydra(compose_config("logger=tensorboard")).logger.backends == ("tensorboard",)
    assert from_hydra(compose_config("logger=csv")).logger.backends == ("csv",)
    config = from_hydra(compose_config("logger.backend=wandb+tensorboard+csv"))
    assert config.logger.backends == ("wandb", "tensorboard", "csv")
    assert LoggerConfig(backend="none").backends == ()
    for bad in ("wandb+tensorbord", "none+csv", "csv+csv", "wandb+", ""):
        with pytest.raises(ConfigError) as info:
            LoggerConfig(backend=bad)
        assert str(info.value) == ("logger.backend: must be 'none' or one or more of wandb, tensorboard, csv "
                                   f"joined by '+' (e.g. wandb+tensorboard), got {bad!r}")


def test_the_start_up_line_says_where_the_metrics_go(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="gpt2.run.logger"):
        with RunLogger(LoggerConfig(backend="none"), tmp_path, {}):
            pass
        with RunLogger(LoggerConfig(backend="csv"), tmp_path, {}):  # tensorboard: test_tensorboard_log.py
            pass
    assert caplog.messages == [f"metrics: {tmp_path}/metrics.jsonl",
                               f"metrics: {tmp_path}/metrics.jsonl (+ csv: {tmp_path}/metrics.csv)"]
