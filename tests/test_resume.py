"""Exact resume: a run stopped anywhere (SIGINT, SIGTERM, SIGKILL) and resumed gives, from the resumed
iteration on, bit-identical losses and final weights to the run that was never stopped."""

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import (
    MIRROR,
    ROOT,
    TINY,
    read_wandb_records,
    start_train,
    tiny_config,
    wait_for_iter,
)

from gpt2.train.checkpoint import FORMAT_VERSION, load_checkpoint, read_torch_file, save_checkpoint
from gpt2.config import Config, OptimConfig, TrainerConfig
from gpt2.errors import CheckpointError, ConfigError, NonFiniteLossError
from gpt2.train.optim import LRSchedule
from gpt2.train.parts import build
from gpt2.train.resume import continue_schedule
from gpt2.train.run_checkpoints import RunCheckpoints
from gpt2.run.logger import read_metrics
from gpt2.train.trainer import Progress, train

# 600 characters: 540 train tokens, 524 windows, 16 batches of 32 per epoch, so 30 steps cross an
# epoch boundary at step 16. Dropout on, so the RNG state matters too.
RESUMABLE = ["data.tokenizer=char", "data.batch_size=32", "model.dropout=0.1", "trainer.max_iters=30",
             "trainer.log_interval=1", "trainer.ckpt_interval=5", "trainer.eval_interval=10"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "small.txt"
    path.write_text((MIRROR / "tinyshakespeare" / "input.txt").read_text()[:600])
    return path


def config(data_dir, corpus, *overrides):
    return tiny_config(data_dir, f"data.path={corpus}", *RESUMABLE, *overrides)


def signal_at(step: int, sig: int):
    def on_step(trainer):
        if trainer.progress.iters == step:
            os.kill(os.getpid(), sig)
    return on_step


def trajectory(run_dir):
    return [(r["iter"], r.get("train_loss"), r.get("val_loss"), r["lr"], r.get("grad_norm"))
            for r in read_metrics(run_dir)]


def assert_same_run(run_dir, reference_dir):
    assert trajectory(run_dir) == trajectory(reference_dir)  # every iteration once, same values
    final = load_checkpoint(Path(run_dir) / "ckpt" / "last.pt")
    expected = load_checkpoint(Path(reference_dir) / "ckpt" / "last.pt")
    assert final["iter"] == expected["iter"]
    for name, tensor in expected["model"].items():
        assert torch.equal(final["model"][name], tensor), name


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_dir, corpus) -> Path:
    run_dir = tmp_path_factory.mktemp("reference")
    train(config(data_dir, corpus), run_dir)
    return run_dir


@pytest.mark.parametrize("sig,step", [(signal.SIGINT, 7), (signal.SIGTERM, 20), (signal.SIGINT, 16)],
                         ids=["SIGINT-mid-epoch", "SIGTERM-after-epoch-boundary", "SIGINT-at-epoch-end"])
def test_stop_and_resume_is_exact(tmp_path, data_dir, corpus, reference, sig, step):
    stopped = train(config(data_dir, corpus), tmp_path, on_step=signal_at(step, sig))
    assert stopped["stopped_by"] == signal.Signals(sig).name and stopped["iters"] == step
    assert load_checkpoint(tmp_path / "ckpt" / "last.pt")["iter"] == step
    resumed = train(config(data_dir, corpus, "trainer.resume=auto"), tmp_path)
    assert resumed["iters"] == 30 and resumed["stopped_by"] is None
    assert_same_run(tmp_path, reference)


def test_resume_twice_and_from_a_path(tmp_path, data_dir, corpus, reference):
    train(config(data_dir, corpus), tmp_path / "a", on_step=signal_at(4, signal.SIGINT))
    train(config(data_dir, corpus, "trainer.resume=auto"), tmp_path / "a", on_step=signal_at(23, signal.SIGTERM))
    # resume=PATH: a checkpoint from anywhere continues in a new run directory
    resumed = train(config(data_dir, corpus, f"trainer.resume={tmp_path / 'a' / 'ckpt' / 'last.pt'}"),
                    tmp_path / "b")
    assert resumed["iters"] == 30
    # b's metrics.jsonl starts with a's rows up to the checkpoint (iteration 23), then its own
    assert trajectory(tmp_path / "b") == trajectory(reference)
    assert torch.equal(load_checkpoint(tmp_path / "b" / "ckpt" / "last.pt")["model"]["lm_head.weight"],
                       load_checkpoint(reference / "ckpt" / "last.pt")["model"]["lm_head.weight"])


def test_periodic_checkpoints_are_kept_and_pruned(reference):
    names = sorted(p.name for p in (reference / "ckpt").iterdir())
    assert names == ["best.pt", "iter_0000025.pt", "iter_0000030.pt", "last.pt"]
    assert load_checkpoint(reference / "ckpt" / "iter_0000025.pt")["iter"] == 25


def test_resume_auto_without_a_checkpoint_starts_fresh(tmp_path, data_dir, corpus, reference):
    train(config(data_dir, corpus, "trainer.resume=auto"), tmp_path)
    assert_same_run(tmp_path, reference)


def test_longer_run_on_resume_is_allowed(tmp_path, data_dir, corpus):
    train(config(data_dir, corpus, "trainer.max_iters=10"), tmp_path)
    summary = train(config(data_dir, corpus, "trainer.max_iters=14", "trainer.resume=auto"), tmp_path)
    assert summary["iters"] == 14 and [r["iter"] for r in read_metrics(tmp_path)] == list(range(15))


def test_extending_a_finished_run_keeps_its_lr_schedule(tmp_path, data_dir, corpus, caplog):
    """A 10-iteration run decays to min_lr at its end; resumed with trainer.max_iters=16, its LR stays
    there (before the fix, lr_decay_iters followed max_iters and the LR jumped back up)."""
    train(config(data_dir, corpus, "trainer.max_iters=10"), tmp_path)
    with caplog.at_level("INFO"):
        train(config(data_dir, corpus, "trainer.max_iters=16", "trainer.resume=auto"), tmp_path)
    lrs = {r["iter"]: r["lr"] for r in read_metrics(tmp_path)}
    assert [lrs[i] for i in range(11, 17)] == [1e-4] * 6 and lrs[10] >= 1e-4
    assert "lr schedule kept from the checkpoint" in caplog.text
    assert "trainer.max_iters=16 does not move it; the run had finished its decay" in caplog.text


def test_what_a_new_decay_end_may_do_on_resume():
    def resumed(decay_iters=None, step=50, decay_lr=True, max_iters=300):
        schedule = LRSchedule.from_config(OptimConfig(decay_lr=decay_lr), 100)  # a 100-iteration run
        config = Config(optim=OptimConfig(lr_decay_iters=decay_iters, decay_lr=decay_lr),
                        trainer=TrainerConfig(max_iters=max_iters))
        return schedule, continue_schedule(schedule, config, step)

    schedule, line = resumed()
    assert schedule.decay_iters == 100 and "set optim.lr_decay_iters to decay over the longer run" in line
    schedule, line = resumed(200)
    assert schedule.decay_iters == 200 and line.startswith("lr schedule changed at iteration 50")
    with pytest.raises(ConfigError, match=r"optim.lr_decay_iters=40 would end the LR decay before the resume "
                                          r"point \(iteration 50\).*decay ends at 100"):
        resumed(40)
    schedule, line = resumed(200, step=120)  # finished: nothing to continue, never back up
    assert schedule.decay_iters == 100 and "the LR stays at min_lr" in line
    schedule, line = resumed(200, decay_lr=False)
    assert line == "lr schedule kept from the checkpoint: constant 1.00e-03" and schedule(150) == 1e-3


@pytest.mark.slow
def test_checkpoints_record_resolved_values_and_plain_names(tmp_path, data_dir, corpus):
    """A null that follows another key is saved as the value the run used (so an explicit equal value
    resumes), and the model's names are GPT-2's even when the step model is compiled."""
    train(config(data_dir, corpus, "trainer.max_iters=4"), tmp_path)
    saved = load_checkpoint(tmp_path / "ckpt" / "last.pt")["config"]
    assert (saved["optim"]["lr_decay_iters"], saved["trainer"]["ckpt_interval"], saved["model"]["block_size"]) == (
        4, 5, 16)
    summary = train(config(data_dir, corpus, "trainer.max_iters=6", "model.block_size=16", "trainer.resume=auto"),
                    tmp_path)
    assert summary["iters"] == 6
    parts = build(config(data_dir, corpus))
    parts.step_model = torch.compile(parts.model)  # compiles lazily: nothing runs here
    state = RunCheckpoints(tmp_path / "c", config(data_dir, corpus), parts, Progress()).state()
    assert set(state["model"]) == set(parts.model.state_dict()) and not any("_orig_mod" in k for k in state["model"])


def test_the_sample_never_comes_from_another_runs_best(tmp_path, data_dir, corpus, caplog):
    # a killed run left best.pt (and no last.pt): a fresh start there is refused, the file kept
    train(config(data_dir, corpus, "trainer.max_iters=10"), tmp_path / "old")
    (tmp_path / "run" / "ckpt").mkdir(parents=True)
    foreign = tmp_path / "run" / "ckpt" / "best.pt"
    (tmp_path / "old" / "ckpt" / "best.pt").rename(foreign)
    saved = foreign.read_bytes()
    with pytest.raises(CheckpointError, match=r"already holds a run \(ckpt/: best.pt\)"):
        train(config(data_dir, corpus), tmp_path / "run")
    assert foreign.read_bytes() == saved
    # should another run's best.pt appear while a run stops before its first evaluation: a stopped run
    # samples nothing (it saves and ends), so nothing is taken from that file, nor written over it
    foreign.rename(tmp_path / "foreign.pt")

    def plant_and_stop(trainer):
        if trainer.progress.iters == 3:
            (tmp_path / "foreign.pt").rename(tmp_path / "run" / "ckpt" / "best.pt")
            os.kill(os.getpid(), signal.SIGINT)

    with caplog.at_level("INFO"):
        summary = train(config(data_dir, corpus), tmp_path / "run", on_step=plant_and_stop)
    assert summary["stopped_by"] == "SIGINT" and summary["sample"] == ""
    assert "sampling" not in caplog.text and foreign.read_bytes() == saved


def test_resumed_elsewhere_the_sample_comes_from_the_runs_best(tmp_path, data_dir, corpus, caplog):
    train(config(data_dir, corpus), tmp_path / "a", on_step=signal_at(20, signal.SIGINT))

    def spoil(trainer):  # the resumed step makes the model worse: no new best in b
        with torch.no_grad():
            trainer.parts.model.transformer.wpe.weight.mul_(50)

    with caplog.at_level("INFO"):
        train(config(data_dir, corpus, f"trainer.resume={tmp_path / 'a' / 'ckpt' / 'last.pt'}",
                     "trainer.max_iters=21"), tmp_path / "b", on_step=spoil)
    assert not (tmp_path / "b" / "ckpt" / "best.pt").exists()
    assert f"sampling 16 tokens from {tmp_path / 'a' / 'ckpt' / 'best.pt'}" in caplog.text


@pytest.mark.slow
def test_an_explicit_new_decay_end_continues_from_the_current_lr(tmp_path, data_dir, corpus, caplog):
    extended = ("trainer.max_iters=40", "optim.lr_decay_iters=60", "trainer.resume=auto")
    train(config(data_dir, corpus), tmp_path / "a", on_step=signal_at(10, signal.SIGINT))
    with caplog.at_level("INFO"):
        train(config(data_dir, corpus, *extended), tmp_path / "a")
    assert "lr schedule changed at iteration 10 by optim.lr_decay_iters=60" in caplog.text
    lrs = {r["iter"]: r["lr"] for r in read_metrics(tmp_path / "a")}
    was = LRSchedule.from_config(OptimConfig(lr=3e-3, warmup_iters=2), 30)  # the run's own schedule
    assert lrs[10] == was(9) and lrs[11] == pytest.approx(was(10), rel=1e-12)  # no jump at the resume point
    assert all(lrs[i] > lrs[i + 1] for i in range(11, 40)) and lrs[40] > 1e-4  # decaying towards 60
    # the moved schedule is in the checkpoint: stopping the extended run and resuming it is exact
    train(config(data_dir, corpus), tmp_path / "b", on_step=signal_at(10, signal.SIGINT))
    train(config(data_dir, corpus, *extended), tmp_path / "b", on_step=signal_at(25, signal.SIGTERM))
    train(config(data_dir, corpus, *extended), tmp_path / "b")
    assert_same_run(tmp_path / "b", tmp_path / "a")


def test_a_wsd_run_extended_never_jumps(tmp_path, data_dir, corpus, caplog):
    """optim.schedule=wsd (warmdown over the last half): stopped in its constant phase and resumed
    with a later end, it holds the LR, then warms down over the new end's last half; stopped in its
    warmdown, it holds the LR it had, then warms down to min_lr at the new end."""
    wsd = ("optim.schedule=wsd", "optim.warmdown_frac=0.5")  # 30 iterations: constant to 15, then down
    extended = (*wsd, "trainer.max_iters=50", "optim.lr_decay_iters=50", "trainer.resume=auto")
    for stop, hold in ((10, 3e-3), (20, None)):
        run_dir = tmp_path / str(stop)
        train(config(data_dir, corpus, *wsd), run_dir, on_step=signal_at(stop, signal.SIGINT))
        with caplog.at_level("INFO"):
            train(config(data_dir, corpus, *extended), run_dir)
        steps = [r["lr"] for r in read_metrics(run_dir)][1:]  # the LR of steps 0..49 (row i+1 logs step i)
        assert all(a >= b for a, b in zip(steps[2:], steps[3:])), steps  # after warmup, never up
        held = steps[stop]
        assert hold is None or held == hold
        assert steps[stop:26] == [held] * (26 - stop) and steps[26] < held  # the new warmdown starts at 25
        assert steps[49] == pytest.approx(held + (1e-4 - held) * 24 / 25)  # a straight line to 1e-4 at 50
        assert f"lr schedule changed at iteration {stop} by optim.lr_decay_iters=50" in caplog.text


def test_a_checkpoint_from_before_the_stateful_parts_resumes(tmp_path, data_dir, corpus):
    """tests/fixtures: a format-2 checkpoint at iteration 10 and what its run logged afterwards. The
    training trajectory continues as it did; the logged val loss differs by design: the 44 validation
    windows of this corpus make a batch of 32 and a short one of 12, which format-2 code averaged as
    two equal batch means and today's code averages per token."""
    fixtures = ROOT / "tests" / "fixtures"
    # float32, as the fixture's run (auto is bfloat16 on CPUs with AMX or AVX512-BF16)
    summary = train(config(data_dir, corpus, f"trainer.resume={fixtures / 'v2_checkpoint_iter10.pt'}",
                           "trainer.dtype=float32"), tmp_path)
    assert summary["iters"] == 30
    reference = [json.loads(line) for line in (fixtures / "v2_reference_metrics.jsonl").read_text().splitlines()]
    rows = read_metrics(tmp_path)
    assert [r["iter"] for r in rows] == [r["iter"] for r in reference] == list(range(11, 31))
    # on the machines that made the fixture these are bit-identical; the tolerance is for other CPUs
    for got, want in zip(rows, reference):
        assert ("val_loss" in got) == ("val_loss" in want)  # its value is a mean over tokens now (below)
        for key in ("train_loss", "grad_norm", "lr"):
            assert got[key] == pytest.approx(want[key], rel=1e-5), (got["iter"], key)


def test_mismatched_or_missing_checkpoints_are_refused(tmp_path, data_dir, corpus, reference):
    last = reference / "ckpt" / "last.pt"
    with pytest.raises(CheckpointError, match=r"last.pt does not match this config: model.n_embd was 32"):
        train(config(data_dir, corpus, "model.n_embd=64", f"trainer.resume={last}"), tmp_path / "a")
    with pytest.raises(CheckpointError, match=r"tokenizer 'char', the config has 'gpt2'"):
        train(config(data_dir, corpus, "data.tokenizer=gpt2", "data.min_val_frac=0",  # 19 val tokens in gpt2's
                     f"trainer.resume={last}"), tmp_path / "b")
    with pytest.raises(CheckpointError, match=r"trainer.resume=.*nowhere.pt: there is no checkpoint"):
        train(config(data_dir, corpus, f"trainer.resume={tmp_path / 'nowhere.pt'}"), tmp_path / "c")
    (tmp_path / "cut.pt").write_bytes(last.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r"cut.pt is not a readable checkpoint"):
        train(config(data_dir, corpus, f"trainer.resume={tmp_path / 'cut.pt'}"), tmp_path / "d")
    assert not (tmp_path / "c" / "metrics.jsonl").exists()  # no silent fresh start


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, data_dir, corpus):
    def poison(trainer):
        if trainer.progress.iters == 8:
            with torch.no_grad():
                trainer.parts.model.transformer.wpe.weight.fill_(float("nan"))

    with pytest.raises(NonFiniteLossError, match=r"NaN/inf at iteration 9; stopped \(the last good "
                                                 r"checkpoint, .*last.pt \(iteration 5\), is untouched"):
        train(config(data_dir, corpus), tmp_path, on_step=poison)
    good = load_checkpoint(tmp_path / "ckpt" / "last.pt")
    assert good["iter"] == 5 and all(torch.isfinite(t).all() for t in good["model"].values())
    assert [r["iter"] for r in read_metrics(tmp_path)][-1] == 8  # the NaN row was never logged


@pytest.mark.slow
def test_wandb_run_is_resumed_not_duplicated(tmp_path, data_dir, corpus):
    train(config(data_dir, corpus, "logger=wandb", "logger.mode=offline"), tmp_path,
          on_step=signal_at(12, signal.SIGINT))
    time.sleep(1.1)  # W&B names run folders by start second + id: two segments in one second would share one
    train(config(data_dir, corpus, "logger=wandb", "logger.mode=offline", "trainer.resume=auto"), tmp_path)
    runs = sorted((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and len({r.name.rsplit("-", 1)[1] for r in runs}) == 1  # one run id
    steps = []
    for run in runs:
        records = read_wandb_records(tmp_path, run)
        steps.append([r["history"]["step"].get("num", 0) for r in records if r["type"] == "history"])
    assert steps[0] == list(range(13)) and steps[1] == list(range(13, 31))


# ------------------------------------------------------------------- real processes, real signals
def reference_run(run_dir, data_dir, corpus, *extra) -> tuple:
    """(run dir, overrides) of an uninterrupted 150-step run in a real process, to compare others with."""
    overrides = [*TINY, f"data.data_dir={data_dir}", f"data.path={corpus}", *RESUMABLE, *extra, "logger=none",
                 "trainer.max_iters=150"]
    proc = start_train(run_dir, *overrides)
    assert proc.wait(timeout=300) == 0, proc.communicate()[1]
    return run_dir, overrides


def killed_at(run_dir, overrides, iteration: int) -> None:
    """Start the run and SIGKILL it once its metrics reach `iteration`."""
    proc = start_train(run_dir, *overrides)
    wait_for_iter(proc, run_dir, iteration)
    proc.kill()
    proc.communicate()


def resumed_to_the_end(run_dir, overrides) -> None:
    resumed = start_train(run_dir, *overrides, "trainer.resume=auto")
    assert resumed.wait(timeout=300) == 0, resumed.communicate()[1]


@pytest.fixture(scope="module")
def cli_reference(tmp_path_factory, data_dir, corpus):
    return reference_run(tmp_path_factory.mktemp("cli_reference"), data_dir, corpus)


@pytest.mark.slow
def test_sigterm_saves_exits_nonzero_and_says_how_to_resume(tmp_path, cli_reference):
    reference_dir, overrides = cli_reference
    proc = start_train(tmp_path, *overrides)
    wait_for_iter(proc, tmp_path, 30)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1
    message = stderr.strip().splitlines()[-1]
    assert message.startswith("stopped by SIGTERM at iteration ")
    assert f"checkpoint saved to {tmp_path / 'ckpt' / 'last.pt'}" in message
    command = shlex.split(message.split("Resume with: ", 1)[1])
    assert command[:2] == ["python", "train.py"] and "trainer.resume=auto" in command
    resumed = subprocess.run([sys.executable, *command[1:]], cwd=ROOT, stdin=subprocess.DEVNULL,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(tmp_path, reference_dir)


@pytest.mark.slow
def test_sigkill_resumes_from_the_last_periodic_checkpoint(tmp_path, cli_reference):
    reference_dir, overrides = cli_reference
    killed_at(tmp_path, overrides, 42)
    last_row = read_metrics(tmp_path)[-1]["iter"]
    saved = load_checkpoint(tmp_path / "ckpt" / "last.pt")["iter"]
    assert saved % 5 == 0 and saved <= last_row < 150
    resumed_to_the_end(tmp_path, overrides)
    assert_same_run(tmp_path, reference_dir)


MUON = ["model=modern", "optim=muon", "optim.schedule=wsd", "optim.muon_momentum_warmup=50"]


@pytest.fixture(scope="module")
def cli_reference_muon(tmp_path_factory, data_dir, corpus):
    return reference_run(tmp_path_factory.mktemp("cli_reference_muon"), data_dir, corpus, *MUON)


@pytest.mark.slow
def test_a_muon_run_killed_resumes_bit_exactly(tmp_path, cli_reference_muon):
    """Today's recipe (Muon's momentum and its warmup, AdamW, the WSD schedule, rotary positions):
    SIGKILL during the momentum warmup, resume=auto, the same losses and weights to the bit."""
    reference_dir, overrides = cli_reference_muon
    killed_at(tmp_path, overrides, 32)
    saved = load_checkpoint(tmp_path / "ckpt" / "last.pt")
    assert saved["iter"] < 50 and set(saved["optimizer"]) == {"muon", "adamw"}
    resumed_to_the_end(tmp_path, overrides)
    assert_same_run(tmp_path, reference_dir)


@pytest.mark.slow
def test_sigkill_during_saves_never_leaves_a_broken_checkpoint(tmp_path):
    script = (
        "import sys, torch\n"
        "from gpt2.train.checkpoint import FORMAT_VERSION, save_checkpoint\n"
        "state = {'format_version': FORMAT_VERSION, 'w': torch.randn(4_000_000)}\n"
        "print('ready', flush=True)\n"
        "i = 0\n"
        "while True:\n"
        "    state['iter'] = i; save_checkpoint(sys.argv[1], state); i += 1\n"
    )
    target = tmp_path / "last.pt"
    save_checkpoint(target, {"format_version": FORMAT_VERSION, "iter": -1})
    for delay in (0.05, 0.21, 0.47):
        proc = subprocess.Popen([sys.executable, "-c", script, str(target)], cwd=ROOT,
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert isinstance(read_torch_file(target)["iter"], int)  # the old or the new file, whole
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "last.pt"]
    assert all(name.endswith(".tmp") for name in leftovers)  # only temporaries of killed saves


def test_fresh_start_never_overwrites_a_run(tmp_path, data_dir, corpus, reference):
    import shutil

    shutil.copytree(reference, tmp_path / "run")
    with pytest.raises(CheckpointError, match=r"already holds a run .*continue it with trainer.resume=auto"):
        train(config(data_dir, corpus), tmp_path / "run")
    # a run killed before its first checkpoint left rows only: a fresh start replaces them
    (tmp_path / "early").mkdir()
    (tmp_path / "early" / "metrics.jsonl").write_text('{"iter": 0, "val_loss": 9.0}\n{"iter": 3, "tr')
    train(config(data_dir, corpus, "trainer.resume=auto"), tmp_path / "early")
    assert_same_run(tmp_path / "early", reference)


def test_resume_checks_the_text_not_its_path(tmp_path, data_dir, corpus, reference):
    import shutil

    moved = tmp_path / "moved.txt"
    shutil.copy(corpus, moved)
    stopped = tmp_path / "run"
    train(config(data_dir, corpus), stopped, on_step=signal_at(9, signal.SIGTERM))
    train(config(data_dir, corpus, f"data.path={moved}", "trainer.resume=auto"), stopped)
    assert_same_run(stopped, reference)  # the same text from another path continues the same run
    moved.write_text(corpus.read_text().replace("Citizen", "Citizan"))
    with pytest.raises(CheckpointError, match="trained on other data"):
        train(config(data_dir, corpus, f"data.path={moved}", f"trainer.resume={stopped / 'ckpt' / 'last.pt'}"),
              tmp_path / "other")


# ----------------------------------------------------------------------------- the resume plan
def count_loads(monkeypatch) -> dict:
    """Count the torch.load calls of checkpoints (files in a ckpt/ folder) by name, for the rest of the test."""
    counts, real_load = {}, torch.load

    def counting_load(path, *args, **kwargs):
        if Path(path).parent.name == "ckpt":
            counts[Path(path).name] = counts.get(Path(path).name, 0) + 1
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counting_load)
    return counts


def test_a_resume_opens_its_checkpoint_once(tmp_path, data_dir, corpus, reference, monkeypatch):
    train(config(data_dir, corpus), tmp_path, on_step=signal_at(17, signal.SIGTERM))  # best.pt at 10, last at 17
    counts = count_loads(monkeypatch)
    train(config(data_dir, corpus, "trainer.resume=auto", "trainer.sample_tokens=0"), tmp_path)
    # last.pt (iteration 17) is continued, best.pt (10) only compared: each opened once, the
    # numbered copies not at all (their names say their iterations)
    assert counts == {"last.pt": 1, "best.pt": 1}
    assert_same_run(tmp_path, reference)
    counts.clear()
    train(config(data_dir, corpus, f"trainer.resume={tmp_path / 'ckpt' / 'iter_0000030.pt'}",
                 "trainer.sample_tokens=0"), tmp_path / "elsewhere")
    assert counts == {"iter_0000030.pt": 1}


def test_the_plan_says_what_a_start_means(tmp_path, data_dir, corpus, reference):
    from gpt2.errors import RunDirError
    from gpt2.train.resume import plan_start

    assert plan_start(config(data_dir, corpus), tmp_path / "new").kind == "fresh"
    assert plan_start(config(data_dir, corpus, "trainer.resume=auto"), tmp_path / "new").kind == "fresh"
    finished = plan_start(config(data_dir, corpus, "trainer.resume=auto"), reference)
    assert (finished.kind, finished.path.name, finished.summary["iters"]) == ("finished", "last.pt", 30)
    longer = plan_start(config(data_dir, corpus, "trainer.resume=auto", "trainer.max_iters=40"), reference)
    assert longer.kind == "resume" and longer.state["iter"] == 30
    assert longer.changes.allowed == {"trainer.max_iters": (30, 40), "trainer.resume": (None, "auto"),
                                      "optim.lr_decay_iters": (30, 40)}  # resolved; the schedule is kept
    assert longer.changes.refused == {}
    other = plan_start(config(data_dir, corpus, "trainer.resume=auto", "optim.lr=0.01"), reference)
    assert other.kind == "resume" and other.changes.refused == {"optim.lr": (0.003, 0.01)}  # refused on restore
    with pytest.raises(RunDirError, match="already holds a run"):
        plan_start(config(data_dir, corpus), reference)
    with pytest.raises(RunDirError, match="is at iteration 25, but .* holds later checkpoints"):
        plan_start(config(data_dir, corpus, f"trainer.resume={reference / 'ckpt' / 'iter_0000025.pt'}"), reference)


def test_one_rule_says_which_keys_may_change():
    """The same rule decides a resume and whether a finished run is kept: with token files on both
    sides their split and tokenizer keys are theirs, not the config's."""
    from gpt2.train.resume import config_changes

    bin_run = {"data": {"source": "bin", "train_frac": 0.9, "tokenizer": "gpt2"}, "trainer": {"max_iters": 10}}
    changes = config_changes(bin_run, {**bin_run, "data": {"source": "bin", "train_frac": 0.5, "tokenizer": "char"},
                                       "trainer": {"max_iters": 20}})
    assert changes.refused == {} and set(changes.allowed) == {"data.train_frac", "data.tokenizer", "trainer.max_iters"}
    text_run = {**bin_run, "data": {"source": "text", "train_frac": 0.9}}
    assert set(config_changes(text_run, {**text_run, "data": {"source": "text", "train_frac": 0.5}}).refused) == {
        "data.train_frac"}


def test_hellaswag_keys_may_change_on_resume():
    """trainer.hellaswag_* say how often and on how much a run is scored, as eval_interval does; a checkpoint
    that predates them counts as their defaults (off)."""
    from gpt2.train.resume import config_changes

    run = {"trainer": {"max_iters": 10, "hellaswag_interval": 0, "hellaswag_examples": 500}}
    now = {"trainer": {"max_iters": 10, "hellaswag_interval": 250, "hellaswag_examples": 0}}
    changes = config_changes(run, now)
    assert changes.refused == {} and changes.allowed == {"trainer.hellaswag_interval": (0, 250),
                                                         "trainer.hellaswag_examples": (500, 0)}
    older = config_changes({"trainer": {"max_iters": 10}}, now)
    assert older.refused == {} and older.allowed == {"trainer.hellaswag_interval": (0, 250),
                                                     "trainer.hellaswag_examples": (500, 0)}
