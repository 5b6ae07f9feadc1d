"""Stop signals at every moment of a run: during start-up, before the first step, in the loop (a second
Ctrl-C), and during the final evaluation of a finished run."""

import json
import os
import signal
import time

import pytest

from gpt2.train.checkpoint import load_checkpoint
from gpt2.run.logger import read_metrics
from gpt2.signals import Interrupted
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
