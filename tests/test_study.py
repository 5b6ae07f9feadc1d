"""The Optuna study (gpt2/sweep/study.py) driven in-process with a stand-in for training: stopped and
continued studies, failing trials, a signal between trials. (The study run by train.py end to end is
in test_sweep.py.)"""

import json
import os
import re
import signal
from pathlib import Path

import pytest

from gpt2.config import from_hydra
from gpt2.run.compose import compose


def fake_train(stop_on_call=None, how="SIGTERM"):
    """A stand-in for gpt2.train.trainer.train: the loss is a function of the config; one call may be
    'stopped' by a signal (the trainer's summary says so) or cut by a KeyboardInterrupt."""
    calls = []

    def train_fn(config, run_dir):
        calls.append(config)
        if len(calls) == stop_on_call and how == "KeyboardInterrupt":
            raise KeyboardInterrupt
        stopped = how if len(calls) == stop_on_call else None
        return {"best_val_loss": config.optim.lr * 1000 + config.model.n_layer, "stopped_by": stopped}
    return train_fn, calls


def drawn(config) -> tuple:
    """The values shakespeare_optuna's search draws, as a trial's config holds them."""
    return (config.optim.lr, config.model.n_layer, config.model.n_embd, config.model.dropout,
            config.data.batch_size)


def test_stopped_study_continues_with_the_interrupted_trial(tmp_path):
    from gpt2.sweep.study import run_study

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    cfg = compose("hparams_search=shakespeare_optuna", "hparams_search.n_trials=4",
                  f"hparams_search.storage={storage}", "hparams_search.study_name=s")
    search = from_hydra(cfg).hparams_search
    train_fn, calls = fake_train(stop_on_call=2)
    first = run_study(cfg, search, tmp_path / "a", train_fn, from_hydra, [])
    assert first["stopped_by"] == "SIGTERM" and len(calls) == 2 and first["completed"] == 1
    interrupted = drawn(calls[1])
    train_fn, calls = fake_train()
    second = run_study(cfg, search, tmp_path / "b", train_fn, from_hydra, [])
    assert len(calls) == 3 and second["completed"] == 4 and second["stopped_by"] is None  # 4 in total
    assert drawn(calls[0]) == interrupted  # the interrupted trial's parameters first
    import optuna
    trials = optuna.load_study(study_name="s", storage=storage).trials
    assert trials[2].user_attrs["rerun_of"] == 1 and trials[2].params == trials[1].params
    params = [json.dumps(t.params, sort_keys=True) for t in trials[2:]] + [json.dumps(trials[0].params, sort_keys=True)]
    assert len(set(params)) == 4  # no other trial drawn twice


@pytest.mark.parametrize("stop", ["SIGTERM", "KeyboardInterrupt", "kill"])
def test_a_continued_study_reruns_the_interrupted_trials_parameters_once(tmp_path, monkeypatch, stop):
    """A trial stopped by a signal (told FAIL, marked interrupted), cut by an exception, or left RUNNING
    by a kill: the continued study's next trial has exactly its parameters, and a later continuation
    does not run them a third time. (In memory: one study object stands for the storage.)"""
    import optuna

    from gpt2.sweep import study as study_module

    shared = optuna.create_study(study_name="s")
    monkeypatch.setattr(study_module, "open_study", lambda search: shared)
    cfg = compose("hparams_search=shakespeare_optuna", "hparams_search.n_trials=2")
    search = from_hydra(cfg).hparams_search
    train_fn, calls = fake_train(stop_on_call=None if stop == "kill" else 2, how=stop)
    if stop == "KeyboardInterrupt":
        with pytest.raises(KeyboardInterrupt):
            study_module.run_study(cfg, search, tmp_path / "a", train_fn, from_hydra, [])
    else:
        search.n_trials = 1 if stop == "kill" else 2
        study_module.run_study(cfg, search, tmp_path / "a", train_fn, from_hydra, [])
    if stop == "kill":  # a process killed in trial 1 told nothing: the trial stays RUNNING
        trial = shared.ask()
        interrupted = {k: study_module.suggest(trial, k, dict(spec)) for k, spec in search.params.items()}
    else:
        interrupted = shared.trials[1].params
        assert shared.trials[1].state.name == "FAIL" and "interrupted" in shared.trials[1].user_attrs
    search.n_trials = 2
    train_fn, calls = fake_train()
    second = study_module.run_study(cfg, search, tmp_path / "b", train_fn, from_hydra, [])
    assert second["completed"] == 2 and len(calls) == 1
    assert drawn(calls[0]) == tuple(interrupted[k] for k in search.params)
    search.n_trials = 3  # continued again: the rerun counts, nothing is enqueued twice
    study_module.run_study(cfg, search, tmp_path / "c", train_fn, from_hydra, [])
    assert len(calls) == 2 and drawn(calls[1]) != drawn(calls[0])
    assert [t.user_attrs.get("rerun_of") for t in shared.trials] == [None, None, 1, None]


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
    assert failed == {"status": "failed", "error": "out of memory (CUDA out of memory): lower the sizes of the work "
                                                   "(model, batch, samples, tokens) or use a device with more memory"}


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


def test_a_study_continued_in_another_directory_is_reported_as_one(tmp_path, monkeypatch):
    """Each run of a stored study records it in study.json and each trial's directory in the storage:
    the report of either directory (or of both) holds every trial, each once."""
    import shutil

    from gpt2.run.record import RunSummary
    from gpt2.sweep.report import collect_jobs, format_table
    from gpt2.sweep.study import run_study

    cfg = compose("hparams_search=shakespeare_optuna", "hparams_search.n_trials=1",
                  "hparams_search.storage=sqlite:///study.db", "hparams_search.study_name=s")
    train_fn, _ = fake_train()

    def writing_its_summary(config, run_dir):  # as the trainer does
        summary = train_fn(config, run_dir)
        RunSummary(summary).write(run_dir)
        return summary

    monkeypatch.chdir(tmp_path)  # the storage URL is relative, as in docs/sweeps.md
    run_study(cfg, from_hydra(cfg).hparams_search, Path("a/0"), writing_its_summary, from_hydra, [])
    cfg.hparams_search.n_trials = 2  # the same study, continued later in another multirun directory
    run_study(cfg, from_hydra(cfg).hparams_search, Path("b/0"), writing_its_summary, from_hydra, [])
    assert json.loads((tmp_path / "b" / "0" / "study.json").read_text()) == {
        "study_name": "s", "storage": f"sqlite:///{(tmp_path / 'study.db').resolve()}"}
    first = collect_jobs(tmp_path / "a")
    assert {j["job"] for j in first} == {"0/trial_000", "../b/0/trial_001"}
    assert len(format_table(first).splitlines()) == 1 + 2  # one table: header and every trial
    assert {j["job"] for j in collect_jobs(tmp_path / "b")} == {"../a/0/trial_000", "0/trial_001"}
    shutil.copytree(tmp_path / "b" / "0" / "trial_001", tmp_path / "a" / "0" / "trial_001")  # held twice
    assert {j["job"] for j in collect_jobs(tmp_path / "a")} == {"0/trial_000", "0/trial_001"}
    assert len(collect_jobs(tmp_path)) == 2  # both directories: each trial once


def test_a_directory_holds_one_study(tmp_path):
    from gpt2.run.rundir import RunDirTaken
    from gpt2.sweep.study import record_study

    record_study(tmp_path, "s", f"sqlite:///{tmp_path / 'study.db'}")
    record_study(tmp_path, "s", f"sqlite:///{tmp_path / 'study.db'}")  # the same study, continued
    with pytest.raises(RunDirTaken, match=re.escape(f"{tmp_path} already holds study 's' (storage sqlite:///")):
        record_study(tmp_path, "t", f"sqlite:///{tmp_path / 'study.db'}")
