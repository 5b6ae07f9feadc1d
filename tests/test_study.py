"""The Optuna study (gpt2/sweep/study.py) driven in-process with a stand-in for training: stopped and
continued studies, failing trials, a signal between trials. (The study run by train.py end to end is
in test_sweep.py.)"""

import json
import os
import signal

from gpt2.config import from_hydra
from gpt2.run.compose import compose


def fake_train(stop_on_call=None):
    """A stand-in for gpt2.train.trainer.train: the loss is a function of the config; one call may be
    'stopped' by a signal."""
    calls = []

    def train_fn(config, run_dir):
        calls.append(config)
        stopped = "SIGTERM" if len(calls) == stop_on_call else None
        return {"best_val_loss": config.optim.lr * 1000 + config.model.n_layer, "stopped_by": stopped}
    return train_fn, calls


def test_stopped_study_continues_with_the_interrupted_trial(tmp_path):
    from gpt2.sweep.study import run_study

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    cfg = compose("hparams_search=shakespeare_optuna", "hparams_search.n_trials=4",
                  f"hparams_search.storage={storage}", "hparams_search.study_name=s")
    search = from_hydra(cfg).hparams_search
    train_fn, calls = fake_train(stop_on_call=2)
    first = run_study(cfg, search, tmp_path / "a", train_fn, from_hydra, [])
    assert first["stopped_by"] == "SIGTERM" and len(calls) == 2 and first["completed"] == 1
    train_fn, calls = fake_train()
    second = run_study(cfg, search, tmp_path / "b", train_fn, from_hydra, [])
    assert len(calls) == 3 and second["completed"] == 4 and second["stopped_by"] is None  # 4 in total
    import optuna
    params = [t.params for t in optuna.load_study(study_name="s", storage=storage).trials]
    assert len({json.dumps(p, sort_keys=True) for p in params}) == len(params)  # no trial drawn twice


def test_invalid_or_crashing_trials_fail_and_the_study_goes_on(tmp_path):
    from gpt2.sweep.study import run_study

    cfg = compose("hparams_search=shakespeare_optuna", "hparams_search.n_trials=3", "model.n_head=4")

    def crash_on_second(config, run_dir, calls=[]):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("CUDA out of memory")
        return {"best_val_loss": 2.0 + len(calls), "stopped_by": None}

    result = run_study(cfg, from_hydra(cfg).hparams_search, tmp_path, crash_on_second, from_hydra, [])
    assert result["completed"] == 2 and result["best_val_loss"] == 3.0
    failed = json.loads((tmp_path / "trial_001" / "summary.json").read_text())
    assert failed == {"status": "failed", "error": "RuntimeError: CUDA out of memory"}


def test_a_signal_between_trials_keeps_the_finished_trial_and_the_study_continues(tmp_path):
    import optuna

    from gpt2.sweep.study import run_study

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    cfg = compose("hparams_search=shakespeare_optuna", "hparams_search.n_trials=3",
                  f"hparams_search.storage={storage}", "hparams_search.study_name=s")
    search = from_hydra(cfg).hparams_search
    train_fn, calls = fake_train()

    def then_sigterm(config, run_dir):
        summary = train_fn(config, run_dir)
        os.kill(os.getpid(), signal.SIGTERM)  # the trial has finished: the signal comes between trials
        return summary

    first = run_study(cfg, search, tmp_path / "a", then_sigterm, from_hydra, [])
    assert first["stopped_by"] == "SIGTERM" and len(calls) == 1 and first["completed"] == 1
    states = [t.state.name for t in optuna.load_study(study_name="s", storage=storage).trials]
    assert states == ["COMPLETE"]  # told, not left RUNNING
    second = run_study(cfg, search, tmp_path / "b", train_fn, from_hydra, [])
    assert len(calls) == 3 and second["completed"] == 3 and second["stopped_by"] is None
