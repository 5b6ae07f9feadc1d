"""The run log (gpt2/run/logger.py): metrics.jsonl rows, summary.json, loss.png and the same rows in an
offline W&B run, read back from its files."""

import json
import math

import pytest

from gpt2.config import LoggerConfig
from gpt2.errors import ConfigError, DataError
from gpt2.run.logger import RunLogger, read_metrics
from gpt2.run.wandb_run import WandbRun

from conftest import read_wandb_records

STRICT = {"parse_constant": lambda name: pytest.fail(f"non-standard JSON literal {name}")}


def test_metrics_summary_plot_and_offline_wandb_agree(tmp_path):
    rows = [{"iter": 0, "val_loss": 4.2, "lr": 1e-4},
            {"iter": 5, "train_loss": 3.5, "lr": 5e-4, "grad_norm": 1.5, "tokens_per_sec": 1000.0},
            {"iter": 10, "train_loss": 3.0, "lr": 1e-3, "grad_norm": 1.2, "tokens_per_sec": 1100.0,
             "val_loss": 3.1}]
    cfg = LoggerConfig(mode="auto", project="test", group="g1")
    with RunLogger(cfg, tmp_path, {"model": {"n_layer": 1}}) as run_log:
        assert run_log.wandb.mode == "offline"
        for row in rows:
            run_log.log(row)
        run_log.finish({"best_val_loss": 3.1, "iters": 10})
    assert read_metrics(tmp_path) == rows
    assert json.loads((tmp_path / "summary.json").read_text()) == {"best_val_loss": 3.1, "iters": 10}
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    records = read_wandb_records(tmp_path)
    history = [r["history"] for r in records if r["type"] == "history"]
    logged = {h["step"].get("num", 0): h["item"] for h in history}
    for row in rows:
        for key in ("train_loss", "val_loss", "lr"):
            if key in row:
                assert logged[row["iter"]][key] == row[key]
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
