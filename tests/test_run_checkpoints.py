"""A run's ckpt/ folder (gpt2/train/run_checkpoints.py): what a checkpoint of the run holds, last.pt with
its numbered copies, best.pt, restoring a resume plan's checkpoint, and the weights of the run's best."""

import logging
import os

import pytest
import torch

from gpt2.errors import CheckpointError
from gpt2.train.checkpoint import load_checkpoint
from gpt2.train.parts import build
from gpt2.train.resume import ConfigChanges, ResumePlan
from gpt2.train.run_checkpoints import RunCheckpoints
from gpt2.train.trainer import Progress

from conftest import tiny_config


@pytest.fixture
def run(tmp_path, data_dir):
    """A fresh run's checkpoints in tmp_path/ckpt, keeping 2 numbered copies."""
    config = tiny_config(data_dir, "data=shakespeare_char", "trainer.keep_last=2")
    return RunCheckpoints(tmp_path / "ckpt", config, build(config), Progress())


def test_last_pt_keeps_numbered_hard_links_and_prunes_the_oldest(run):
    for iters in (5, 10, 15):
        run.progress.iters = iters
        run.save("last.pt")
    names = sorted(p.name for p in run.dir.iterdir())
    assert names == ["iter_0000010.pt", "iter_0000015.pt", "last.pt"] and run.last_saved == 15
    assert os.stat(run.dir / "last.pt").st_ino == os.stat(run.dir / "iter_0000015.pt").st_ino  # no second write


def test_a_checkpoint_holds_what_identifies_the_run_and_every_part(run):
    run.progress.iters, run.progress.best_val_loss, run.wandb_id = 7, 3.25, "abc123"
    run.save("best.pt")
    state = load_checkpoint(run.dir / "best.pt")
    assert (state["iter"], state["best_val_loss"], state["wandb_id"]) == (7, 3.25, "abc123")
    assert state["model_args"]["n_embd"] == 32 and state["tokenizer"]["name"] == "char"
    assert state["data_fingerprint"] == run.parts.data.source.fingerprint
    assert state["config"]["trainer"]["ckpt_interval"] == 10  # resolved: follows eval_interval
    assert {"model", "optimizer", "schedule", "train_loader", "progress", "rng", "grad_scaler"} <= set(state)
    assert run.last_saved is None  # best.pt is not last.pt


def test_restoring_a_plan_loads_every_part_without_opening_the_file(run, tmp_path, data_dir, caplog):
    run.progress.iters, run.wandb_id = 4, "w1"
    run.save("last.pt")
    state = load_checkpoint(run.dir / "last.pt")
    config = tiny_config(data_dir, "data=shakespeare_char", "trainer.keep_last=2", "trainer.max_iters=30")
    other = RunCheckpoints(tmp_path / "other" / "ckpt", config, build(config, state["model_args"]), Progress())
    with torch.no_grad():
        for p in other.parts.model.parameters():
            p.add_(1.0)
    (run.dir / "last.pt").unlink()  # the plan holds the state: nothing is read again
    changes = ConfigChanges(allowed={"trainer.max_iters": (20, 30), "trainer.resume": (None, "auto")})
    with caplog.at_level(logging.INFO):
        other.restore(ResumePlan("resume", run.dir / "last.pt", state, changes=changes))
    assert "changed since the checkpoint: trainer.max_iters 20 -> 30" in caplog.messages
    assert all(torch.equal(a, b) for a, b in zip(other.parts.model.state_dict().values(),
                                                 run.parts.model.state_dict().values()))
    assert (other.progress.iters, other.last_saved, other.wandb_id) == (4, 4, "w1")


def test_restoring_a_checkpoint_of_other_data_is_refused_naming_it(run):
    run.save("last.pt")
    state = {**load_checkpoint(run.dir / "last.pt"), "data_fingerprint": "ab" * 32}
    with pytest.raises(CheckpointError, match=r"ckpt/last.pt does not match this config: it was trained on other data"):
        run.restore(ResumePlan("resume", run.dir / "last.pt", state))


def test_the_best_model_is_this_runs_best_pt_only(run):
    assert run.best_model(torch.device("cpu")) is None  # no best.pt yet
    run.progress.best_val_loss = 2.5
    run.save("best.pt")
    model, path = run.best_model(torch.device("cpu"))
    assert path == run.dir / "best.pt" and not model.training
    assert torch.equal(model.lm_head.weight, run.parts.model.lm_head.weight)
    run.progress.best_val_loss = 2.4  # a better evaluation that best.pt does not hold (another run's file)
    assert run.best_model(torch.device("cpu")) is None
