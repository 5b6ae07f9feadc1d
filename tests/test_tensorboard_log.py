"""TensorBoard (gpt2/run/tensorboard_log.py): the metrics rows and samples read back from the event
files with TensorBoard's own readers, across a resume, and the one line without the package."""

import importlib.util
import logging

import pytest

from gpt2.config import LoggerConfig
from gpt2.errors import ConfigError
from gpt2.run.logger import RunLogger, check_logger_env, read_metrics
from gpt2.run.tensorboard_log import sample_markdown

ROWS = [{"iter": 0, "val_loss": 4.25, "lr": 1e-4},
        {"iter": 5, "train_loss": 3.5, "lr": 5e-4, "grad_norm": 1.5, "tokens_per_sec": 1000.0},
        {"iter": 10, "train_loss": 3.0, "lr": 1e-3, "grad_norm": 1.25, "val_loss": 3.125, "tokens_per_sec": 1100.0}]
SAMPLES = [{"iter": 5, "prompt": "ROMEO:", "text": "ROMEO:\nO, she doth teach"}, {"iter": 10, "prompt": "", "text": "x"}]
TB = LoggerConfig(backend="tensorboard")


def scalars(run_dir) -> dict[str, list[tuple[int, float]]]:
    """Each scalar tag's (step, value) points, as TensorBoard shows them (purged points hidden)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def texts(run_dir) -> list[tuple[int, str]]:
    """The samples text by step, read as TensorBoard's server does (it purges text too)."""
    from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    if "samples/text_summary" not in events.Tags()["tensors"]:
        return []
    return [(e.step, e.tensor_proto.string_val[0].decode()) for e in events.Tensors("samples/text_summary")]


def expected(rows) -> dict[str, list[tuple[int, float]]]:
    points = {}
    for row in rows:
        for key, value in row.items():
            if key != "iter":
                points.setdefault(key, []).append((row["iter"], pytest.approx(value, rel=1e-6)))  # float32
    return points


def log_run(run_dir, rows, samples, **kwargs):
    with RunLogger(TB, run_dir, {}, **kwargs) as run_log:
        for row in rows:
            run_log.log(row)
            for sample in samples:
                if sample["iter"] == row["iter"]:
                    run_log.log_sample(sample)
        run_log.finish({"best_val_loss": 3.0})


def test_scalars_and_samples_read_back_equal_the_rows(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="gpt2.run.logger"):
        log_run(tmp_path, ROWS, SAMPLES)
    assert scalars(tmp_path) == expected(ROWS)
    assert texts(tmp_path) == [(s["iter"], sample_markdown(s)) for s in SAMPLES]
    assert "    ROMEO:\n    O, she doth teach" in sample_markdown(SAMPLES[0])  # preformatted
    assert caplog.messages == [f"metrics: {tmp_path}/metrics.jsonl (+ tensorboard: {tmp_path}/tensorboard; "
                               f"tensorboard --logdir {tmp_path})"]


def test_a_resumed_run_hides_the_points_after_its_checkpoint(tmp_path):
    log_run(tmp_path, ROWS, SAMPLES)
    again = [{"iter": 10, "train_loss": 2.75, "lr": 1e-3}, {"iter": 15, "train_loss": 2.5, "lr": 1e-3}]
    resumed = [{"iter": 10, "prompt": "", "text": "y"}]
    log_run(tmp_path, again, resumed, resume_from=5)
    assert read_metrics(tmp_path) == [*ROWS[:2], *again]
    assert scalars(tmp_path) == expected(read_metrics(tmp_path))  # no point twice, none of the first run's after 5
    assert texts(tmp_path) == [(5, sample_markdown(SAMPLES[0])), (10, sample_markdown(resumed[0]))]
    log_run(tmp_path, ROWS[:1], [])  # a fresh start clears the earlier events
    assert scalars(tmp_path) == expected(ROWS[:1]) and texts(tmp_path) == []


def test_tensorboard_turned_on_at_a_resume_shows_the_whole_run(tmp_path):
    with RunLogger(LoggerConfig(backend="none"), tmp_path, {}) as run_log:
        for row in ROWS:
            run_log.log(row)
        run_log.log_sample(SAMPLES[0])
    log_run(tmp_path, [{"iter": 15, "train_loss": 2.5}], [], resume_from=10)
    assert scalars(tmp_path) == expected([*ROWS, {"iter": 15, "train_loss": 2.5}])
    assert texts(tmp_path) == [(5, sample_markdown(SAMPLES[0]))]


def test_without_the_tensorboard_package_it_is_one_line(monkeypatch, tmp_path):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else find_spec(name, *a))
    message = "logger=tensorboard needs the tensorboard package: pip install -e '.[tensorboard]'"
    (tmp_path / "metrics.jsonl").write_text('{"iter": 0, "val_loss": 4.0}\n')
    for backend in ("tensorboard", "wandb+tensorboard"):
        with pytest.raises(ConfigError) as info:
            check_logger_env(LoggerConfig(backend=backend, mode="offline"))
        assert str(info.value) == message
        with pytest.raises(ConfigError, match=r"^logger=tensorboard needs the tensorboard package"):
            RunLogger(LoggerConfig(backend=backend, mode="offline"), tmp_path, {})
    assert (tmp_path / "metrics.jsonl").read_text() == '{"iter": 0, "val_loss": 4.0}\n'  # nothing changed
    assert not (tmp_path / "wandb").exists()
    check_logger_env(LoggerConfig(backend="csv"))
