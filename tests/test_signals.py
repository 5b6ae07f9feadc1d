"""Stop signals at every moment of a run: during start-up, before the first step, in the loop (a second
Ctrl-C), during the final evaluation of a finished run, and while a run that has trained ends (its
record, its loggers, the interpreter's exit)."""

import json
import os
import signal
import time

import pytest

from gpt2.train.checkpoint import load_checkpoint
from gpt2.run.logger import read_metrics
from gpt2.signals import FINISHING, START_UP, STOP, Interrupted, StopSignals
from gpt2.train.trainer import Trainer, train

from conftest import TINY, start_train, tiny_config


def strict_json(text: str):
    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")
    return json.loads(text, parse_constant=refuse)


def test_a_second_ctrl_c_stops_at_once_and_says_what_is_intact(tmp_path, data_dir):
    def twice(trainer):
        if trainer.progress.iters == 7:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(Interrupted) as stopped:
        train(tiny_config(data_dir, "trainer.ckpt_interval=5"), tmp_path, on_step=twice)
    assert str(stopped.value) == (f"stopped by SIGINT at once (second Ctrl-C) at iteration 7; "
                                  f"{tmp_path / 'ckpt' / 'last.pt'} (iteration 5) is intact: resume with "
                                  f"trainer.resume=auto")
    summary = strict_json((tmp_path / "summary.json").read_text())
    assert summary["stopped_by"] == "SIGINT" and summary["iters"] == 7
    assert load_checkpoint(tmp_path / "ckpt" / "last.pt")["iter"] == 5


@pytest.mark.slow
def test_a_stop_during_the_final_evaluation_does_not_unfinish_the_run(tmp_path, data_dir):
    def at_the_end(trainer):
        if trainer.progress.iters == 20:  # before the last evaluation and the sample
            os.kill(os.getpid(), signal.SIGTERM)

    summary = train(tiny_config(data_dir), tmp_path, on_step=at_the_end)
    assert summary["stopped_by"] is None and summary["iters"] == 20
    assert strict_json((tmp_path / "summary.json").read_text())["stopped_by"] is None


def test_a_stop_before_the_first_step_records_the_measured_loss(tmp_path, data_dir, monkeypatch):
    evaluate = Trainer.evaluate

    def evaluate_then_stop(self):
        loss = evaluate(self)
        os.kill(os.getpid(), signal.SIGTERM)  # during the evaluation at step 0
        return loss

    monkeypatch.setattr(Trainer, "evaluate", evaluate_then_stop)
    summary = train(tiny_config(data_dir), tmp_path)
    rows = [strict_json(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert summary["stopped_by"] == "SIGTERM" and summary["iters"] == 0
    assert summary["best_val_loss"] == rows[0]["val_loss"] == read_metrics(tmp_path)[0]["val_loss"]
    saved = strict_json((tmp_path / "summary.json").read_text())
    assert saved["best_val_loss"] == rows[0]["val_loss"]  # not Infinity
    assert load_checkpoint(tmp_path / "ckpt" / "last.pt")["iter"] == 0


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_start_up_is_one_line(tmp_path, data_dir, sig):
    proc = start_train(tmp_path / "run", *TINY, f"data.data_dir={data_dir}", "logger=none")
    time.sleep(0.8)  # importing torch and Hydra
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert stderr.strip().splitlines() == [
        f"stopped by {signal.Signals(sig).name} during start-up, before training began (nothing was saved): "
        f"run the command again"]


@pytest.fixture
def handler(monkeypatch):
    """A StopSignals installed as this process's SIGINT/SIGTERM handler; the previous handlers (and
    atexit) are restored after the test."""
    monkeypatch.setattr("atexit.register", lambda function: None)
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    stop = StopSignals()
    stop.install()
    yield stop
    for sig, previous_handler in previous.items():
        signal.signal(sig, previous_handler)


def send(*signals: int) -> None:
    for sig in signals:
        os.kill(os.getpid(), sig)
        time.sleep(0.01)  # Python runs the handler at its next instruction


@pytest.mark.parametrize("phase, signals, stopped", [
    ("start-up", [signal.SIGTERM], f"stopped by SIGTERM {START_UP}"),
    ("finishing", [signal.SIGINT], None),
    ("finishing", [signal.SIGTERM, signal.SIGTERM], None),
    ("finishing", [signal.SIGINT, signal.SIGINT], f"stopped by SIGINT at once (second Ctrl-C) {FINISHING}"),
    ("finishing, then the next sweep job", [signal.SIGTERM], f"stopped by SIGTERM {START_UP}"),
])
def test_a_run_that_has_trained_ends_with_its_result(handler, phase, signals, stopped):
    """Once a run has trained, a signal only is recorded (train.py ends it with its result, saying that
    the signal came after the last iteration); a second Ctrl-C still stops at once; the next run of
    the process (a sweep's next job) starts as any run does."""
    if phase.startswith("finishing"):
        handler.finishing()
    if phase.endswith("next sweep job"):
        handler.starting()
    if stopped is None:
        send(*signals)
    else:
        with pytest.raises(Interrupted) as interrupted:
            send(*signals)
        assert str(interrupted.value) == stopped and interrupted.value.code == stopped
    assert handler.received == signal.Signals(signals[0]).name


def test_from_the_interpreters_exit_on_signals_are_ignored(handler):
    """Python restores the default handlers while it finalises, which would end the process with
    status 130 and nothing said: the atexit hook ignores the signals first."""
    handler.ignore_at_exit()
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN and signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    send(signal.SIGINT, signal.SIGTERM)  # nothing happens


def test_under_torchrun_a_stop_is_said_by_rank_0_only(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    assert (str(Interrupted("SIGINT", START_UP)), Interrupted("SIGINT", START_UP).code) == (
        f"stopped by SIGINT {START_UP}", 1)  # exit status 1, no message
    monkeypatch.setenv("RANK", "0")
    assert Interrupted("SIGINT", START_UP).code == f"stopped by SIGINT {START_UP}"


def test_a_signal_after_train_returns_lets_the_run_end_with_its_result(tmp_path, data_dir, monkeypatch):
    """train() leaves the process finishing: a Ctrl-C while train.py reports, closes its loggers and
    exits is recorded (report says it came after the last iteration) instead of ending the process."""
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    monkeypatch.setattr("atexit.register", lambda function: None)
    for name in ("received", "context", "_finishing", "_installed", "_at_exit", "_pid"):
        monkeypatch.setattr(STOP, name, getattr(STOP, name))  # restored after the test
    STOP.install()  # as train.py does
    try:
        summary = train(tiny_config(data_dir, "trainer.max_iters=2", "trainer.sample_tokens=0"), tmp_path)
        send(signal.SIGINT)
        assert STOP.received == "SIGINT" and summary["stopped_by"] is None
        with pytest.raises(Interrupted, match="second Ctrl-C"):
            send(signal.SIGINT)
    finally:
        for sig, previous_handler in previous.items():
            signal.signal(sig, previous_handler)
