"""A run's ckpt/ folder (gpt2/train/run_checkpoints.py): what a checkpoint of the run holds, last.pt with
its numbered copies, best.pt, restoring a resume plan's checkpoint, and the weights of the run's best."""

import errno
import logging
import os

import pytest
import torch

from gpt2.errors import CheckpointError, error_line
from gpt2.train.checkpoint import load_checkpoint
from gpt2.train.parts import build
from gpt2.train.resume import ConfigChanges, ResumePlan
from gpt2.train.run_checkpoints import RunCheckpoints
from gpt2.train.trainer import Progress, Trainer

from conftest import tiny_config
from test_files import FullDisk, enospc_line, full_disks


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


# ------------------------------------------------------------------------ damage and a full disk
@pytest.fixture(scope="module")
def saved(tmp_path_factory, data_dir):
    """A run's checkpoints with ckpt/last.pt at iteration 4 (one build for the module)."""
    config = tiny_config(data_dir, "data=shakespeare_char", "trainer.keep_last=2")
    run = RunCheckpoints(tmp_path_factory.mktemp("saved") / "ckpt", config, build(config), Progress(iters=4))
    run.save("last.pt")
    return run


C_FC = "transformer.h.0.mlp.c_fc.weight"
# (what is damaged, the mutation of a run's last.pt, the fragment of the line a resume from it gives)
RESUME_DAMAGE = [
    ("iter is a string", lambda s: s.update(iter="4"), "is a damaged checkpoint: its 'iter' is of type str, not int"),
    ("no rng", lambda s: s.pop("rng"), "is not a whole gpt2-harness checkpoint: it has no 'rng'"),
    ("truncated weight", lambda s: s["model"].update({C_FC: s["model"][C_FC][:10]}),
     f": {C_FC} is (10, 32), this run's model implies (128, 32)"),
    ("weight is a list", lambda s: s["model"].update({C_FC: [0.5]}),
     f"its weight {C_FC} is of type list, not a tensor"),
    ("optimizer of another model", lambda s: s["optimizer"].update(param_groups=[]),
     ": its optimizer state does not fit this run (loaded state dict has a different number of parameter groups)"),
    ("loader without its epoch", lambda s: s["train_loader"].pop("epoch"),
     ": its train_loader state does not fit this run (it has no 'epoch')"),
    ("rng of another generator", lambda s: s["rng"].update(torch=torch.zeros(3, dtype=torch.uint8)),
     ": its rng state does not fit this run ("),
]


@pytest.mark.parametrize("mutate, fragment", [row[1:] for row in RESUME_DAMAGE], ids=[row[0] for row in RESUME_DAMAGE])
def test_resuming_a_damaged_checkpoint_is_one_line_naming_it(saved, tmp_path, mutate, fragment):
    state = torch.load(saved.dir / "last.pt", weights_only=True)
    mutate(state)
    damaged = tmp_path / "last.pt"
    torch.save(state, damaged)
    with pytest.raises(CheckpointError) as err:  # opened as the resume plan opens it, restored as the trainer does
        saved.restore(ResumePlan("resume", damaged, load_checkpoint(damaged)))
    line = error_line(err.value)
    assert line.startswith(str(damaged)) and fragment in line and "\n" not in line, line


def test_a_full_disk_at_any_byte_of_a_save_keeps_the_last_checkpoint_and_says_so(tmp_path, data_dir, monkeypatch):
    """The trainer's save: torch.save reports the full disk as a RuntimeError; the line says which file
    and which last.pt is intact, and that file is byte for byte the one before."""
    trainer = Trainer(tiny_config(data_dir, "data=shakespeare_char", "trainer.keep_last=2"), tmp_path)
    last = tmp_path / "ckpt" / "last.pt"
    for disk in full_disks(monkeypatch, lambda: trainer.save("last.pt")):  # iteration 0: the one kept
        old, trainer.progress.iters = last.read_bytes(), 5
        with pytest.raises(CheckpointError) as err:
            trainer.save("last.pt")
        assert error_line(err.value) == (f"could not save {last} at iteration 5 (No space left on device); {last} "
                                         f"(iteration 0) is intact: resume with trainer.resume=auto"), disk.at
        assert last.read_bytes() == old and sorted(os.listdir(last.parent)) == ["iter_0000000.pt", "last.pt"], disk.at
        trainer.progress.iters = 0
    monkeypatch.undo()
    assert load_checkpoint(last)["iter"] == 0


def test_a_numbered_copy_that_cannot_be_kept_is_a_warning(saved, monkeypatch, caplog):
    """Without hard links the copy is a second write; a full disk there leaves last.pt saved, and the run goes on."""
    import gpt2.train.checkpoint

    def no_links(*paths):
        raise OSError(errno.EPERM, "Operation not permitted", *paths)

    monkeypatch.setattr(gpt2.train.checkpoint.os, "link", no_links)
    counted = FullDisk(monkeypatch)
    saved.save("last.pt")  # last.pt, then its copy: the same writes twice
    FullDisk(monkeypatch, at=counted.writes // 2 + 1)  # the copy's first write
    saved.progress.iters = 6
    with caplog.at_level(logging.WARNING):
        saved.save("last.pt")
    numbered = saved.dir / "iter_0000006.pt"
    assert caplog.messages == [f"{saved.dir / 'last.pt'} holds iteration 6, but its numbered copy was not kept: "
                               f"{enospc_line(numbered)}"]
    assert saved.last_saved == 6 and sorted(os.listdir(saved.dir)) == ["iter_0000004.pt", "last.pt"]
    monkeypatch.undo()
    assert load_checkpoint(saved.dir / "last.pt")["iter"] == 6
