import os
import random

import numpy as np
import pytest
import torch

from gpt2.train.checkpoint import (FORMAT_VERSION, Checkpointer, RNGState, load_checkpoint, load_model, save_checkpoint,
                             save_periodic)
from gpt2.errors import CheckpointError, error_line
from gpt2.model.gpt import GPT, GPTConfig
from gpt2.train.resume import check_resumable
from test_files import enospc_line, full_disks

CONFIG = {"model": {"n_layer": 1, "n_embd": 16}, "trainer": {"max_iters": 10}, "optim": {"lr": 0.1},
          "data": {"path": "same.txt"}}
TOKENIZER = {"name": "char", "vocab_size": 20, "chars": "abcdefghijklmnopqrst"}


MODEL = GPTConfig(n_layer=1, n_head=2, n_embd=16, vocab_size=20, block_size=8, bias=False)


def make_state(iter_num: int = 7) -> dict:
    torch.manual_seed(0)
    model = GPT(MODEL)
    return {"format_version": FORMAT_VERSION, "model": model.state_dict(), "iter": iter_num,
            "model_args": vars(MODEL).copy(), "config": CONFIG, "tokenizer": TOKENIZER,
            "data_fingerprint": "ab" * 32, "best_val_loss": 2.5, "wandb_id": None,
            "optimizer": {"state": {}, "param_groups": []}, "schedule": {}, "train_loader": {},
            "progress": {}, "rng": RNGState().state_dict(), "grad_scaler": None}


def test_roundtrip_leaves_no_temporary_file(tmp_path):
    state = make_state()
    save_checkpoint(tmp_path / "ckpt.pt", state)
    loaded = load_checkpoint(tmp_path / "ckpt.pt")
    assert loaded["iter"] == 7 and loaded["config"] == CONFIG
    assert all(torch.equal(loaded["model"][k], v) for k, v in state["model"].items())
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_periodic_checkpoints_keep_the_newest(tmp_path):
    for step in (5, 10, 15, 20):
        save_periodic(tmp_path, make_state(step), keep_last=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["iter_0000015.pt", "iter_0000020.pt", "last.pt"]
    assert load_checkpoint(tmp_path / "last.pt")["iter"] == 20
    assert load_checkpoint(tmp_path / "iter_0000015.pt")["iter"] == 15
    (tmp_path / "none").mkdir()
    save_periodic(tmp_path / "none", make_state(5), keep_last=0)
    assert [p.name for p in (tmp_path / "none").iterdir()] == ["last.pt"]


def test_numbered_checkpoints_are_pruned_by_iteration_not_name(tmp_path):
    # past 9,999,999 iterations the file names grow a digit: name order would delete the newest
    for step in (9_999_990, 9_999_995, 10_000_000):
        save_periodic(tmp_path, make_state(step), keep_last=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["iter_10000000.pt", "iter_9999995.pt", "last.pt"]
    (tmp_path / "iter_notes.pt").write_text("not ours")  # a file that only looks numbered is left alone
    save_periodic(tmp_path, make_state(10_000_005), keep_last=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["iter_10000005.pt", "iter_notes.pt", "last.pt"]


def test_rng_state_roundtrip_through_a_file(tmp_path):
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    save_checkpoint(tmp_path / "rng.pt", {"rng": RNGState().state_dict()})
    expected = (random.random(), np.random.rand(), torch.rand(2))
    random.seed(2), np.random.seed(2), torch.manual_seed(2)
    RNGState().load_state_dict(torch.load(tmp_path / "rng.pt", weights_only=True)["rng"])
    got = (random.random(), np.random.rand(), torch.rand(2))
    assert got[0] == expected[0] and got[1] == expected[1] and torch.equal(got[2], expected[2])


def test_checkpointer_collects_and_restores_each_part(tmp_path):
    torch.manual_seed(0)
    model, other = GPT(MODEL), GPT(MODEL)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.zeros((1, 4), dtype=torch.long), torch.zeros((1, 4), dtype=torch.long))[1].backward()
    optimizer.step()
    saved = Checkpointer(model=model, optimizer=optimizer, grad_scaler=None).state_dict()
    assert set(saved) == {"model", "optimizer", "grad_scaler"} and saved["grad_scaler"] is None
    save_checkpoint(tmp_path / "c.pt", saved)
    other_optimizer = torch.optim.AdamW(other.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=8.0)
    Checkpointer(model=other, optimizer=other_optimizer, grad_scaler=scaler).load_state_dict(
        torch.load(tmp_path / "c.pt", weights_only=True))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))
    moments = [o.state_dict()["state"][0]["exp_avg"] for o in (optimizer, other_optimizer)]
    assert torch.equal(*moments)
    assert scaler.get_scale() == 8.0  # a part the checkpoint saved as None keeps its own state
    del saved["optimizer"]  # a part missing altogether: never a silent fresh start of that part
    with pytest.raises(CheckpointError, match="it holds no state for optimizer: not a whole checkpoint"):
        Checkpointer(model=other, optimizer=other_optimizer).load_state_dict(saved)


def test_a_model_builds_from_its_checkpoint_alone(tmp_path):
    state = make_state()
    save_checkpoint(tmp_path / "ckpt.pt", state)
    torch.manual_seed(5)
    before = torch.rand(2)
    torch.manual_seed(5)
    model, loaded = load_model(tmp_path / "ckpt.pt")
    assert torch.equal(torch.rand(2), before)  # building it did not consume the global RNG
    assert model.config == MODEL and not model.training and loaded["iter"] == 7
    x = torch.randint(0, 20, (2, 8))
    torch.manual_seed(0)
    reference = GPT(MODEL).eval()
    assert torch.equal(model(x, x)[0], reference(x, x)[0])


def test_truncated_checkpoint(tmp_path):
    save_checkpoint(tmp_path / "ckpt.pt", make_state())
    data = (tmp_path / "ckpt.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.pt is not a readable checkpoint"):
        load_checkpoint(tmp_path / "cut.pt")


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "notes.pt").write_text("hello")
    with pytest.raises(CheckpointError, match="notes.pt is not a readable checkpoint"):
        load_checkpoint(tmp_path / "notes.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="other.pt is not a gpt2-harness checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="missing.pt does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_resume_allows_run_length_changes_only(tmp_path):
    state = make_state()
    check_resumable(tmp_path, state, {**CONFIG, "trainer": {"max_iters": 50}}, TOKENIZER, "ab" * 32)
    check_resumable(tmp_path, state, {**CONFIG, "trainer": {"max_iters": 10, "num_threads": 1}}, TOKENIZER,
                    "ab" * 32)  # threads do not change the run
    with pytest.raises(CheckpointError, match=r"model.n_embd was 16 when it was saved, the config says 32"):
        check_resumable(tmp_path, state, {**CONFIG, "model": {"n_layer": 1, "n_embd": 32}}, TOKENIZER, "ab" * 32)
    with pytest.raises(CheckpointError, match=r"optim.lr was 0.1"):
        check_resumable(tmp_path, state, {**CONFIG, "optim": {"lr": 0.2}}, TOKENIZER, "ab" * 32)
    with pytest.raises(CheckpointError, match=r"tokenizer 'char', the config has 'gpt2'"):
        check_resumable(tmp_path, state, CONFIG, {"name": "gpt2", "vocab_size": 50257}, "ab" * 32)
    with pytest.raises(CheckpointError, match="trained with the vocabulary"):
        check_resumable(tmp_path, state, CONFIG, {"name": "char", "vocab_size": 3, "chars": "abc"}, "ab" * 32)
    with pytest.raises(CheckpointError, match=r"trained on other data \(sha256 abababababab"):
        check_resumable(tmp_path, state, CONFIG, TOKENIZER, "cd" * 32)
    check_resumable(tmp_path, state, {**CONFIG, "data": {"path": "/elsewhere/same.txt"}}, TOKENIZER, "ab" * 32)


def test_a_full_disk_at_any_byte_of_a_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    """torch.save turns a failed write into a RuntimeError of its own ('unexpected pos'): whichever
    write, flush, fsync or rename fails, the save raises the OSError naming the file (one line)."""
    last, state = tmp_path / "last.pt", make_state(5)
    cases = 0
    for disk in full_disks(monkeypatch, lambda: save_checkpoint(last, state)):
        old = last.read_bytes()
        with pytest.raises(OSError) as err:
            save_checkpoint(last, {**state, "iter": 10})
        assert error_line(err.value) == enospc_line(last), disk.at
        assert last.read_bytes() == old and os.listdir(tmp_path) == ["last.pt"], disk.at
        cases += 1
    assert cases > 20
    monkeypatch.undo()
    assert load_checkpoint(last)["iter"] == 5


def without(key):
    return lambda state: state.pop(key)


def setting(key, value, within=None):
    def mutate(state):
        (state[within] if within else state)[key] = value
    return mutate


C_FC = "transformer.h.0.mlp.c_fc.weight"
# (what is damaged, the mutation of a whole checkpoint, the fragment of the one line it gives)
DAMAGE = [
    ("no model", without("model"), "is not a whole gpt2-harness checkpoint: it has no 'model' (damaged, or written "
                                   "by another program)"),
    ("no config", without("config"), "it has no 'config'"),
    ("no optimizer", without("optimizer"), "it has no 'optimizer'"),
    ("model is a list", lambda s: s.update(model=list(s["model"].values())), "its 'model' is of type list, not dict"),
    ("iter is a string", setting("iter", "7"), "its 'iter' is of type str, not int"),
    ("config is a string", setting("config", "lr=0.1"), "its 'config' is of type str, not dict"),
    ("config without optim", lambda s: s.update(config={k: v for k, v in CONFIG.items() if k != "optim"}),
     "its config has no 'optim' section"),
    ("model_args is a list", setting("model_args", [1, 2]), "its 'model_args' is of type list, not dict"),
    ("n_layer is a string", setting("n_layer", "1", "model_args"),
     "its model_args do not describe a model (n_layer='1' is not a whole number)"),
    ("heads do not divide", setting("n_head", 3, "model_args"),
     "its model_args do not describe a model (GPTConfig.n_embd (16) must be divisible by n_head (3))"),
    ("unknown model arg", setting("n_expert", 4, "model_args"), "unexpected keyword argument 'n_expert'"),
    ("tokenizer of another vocabulary", setting("tokenizer", {**TOKENIZER, "vocab_size": 19, "chars": "a" * 19}),
     "its model scores 20 tokens, its tokenizer has 19"),
    ("tokenizer without a name", setting("tokenizer", {"vocab_size": 20}), "is not a tokenizer's"),
    ("format 4", setting("format_version", 4), "is not a gpt2-harness checkpoint (format 3)"),
    ("format 2 without model_args", lambda s: s.update(format_version=2) or s.pop("model_args"),
     "is not a whole gpt2-harness checkpoint (format 2 without 'model_args')"),
    ("truncated weight", lambda s: s["model"].update({C_FC: s["model"][C_FC][:10]}),
     f"{C_FC} is (10, 16), the architecture it records implies (64, 16)"),
    ("missing weight", lambda s: s["model"].pop("transformer.ln_f.weight"),
     "its weights do not fit the architecture it records (missing: transformer.ln_f.weight; unexpected: none)"),
    ("extra weight", lambda s: s["model"].update({"transformer.h.1.ln_1.weight": torch.ones(16)}),
     "(missing: none; unexpected: transformer.h.1.ln_1.weight)"),
    ("weight is a list", lambda s: s["model"].update({"transformer.wpe.weight": [0.5]}),
     "is a damaged checkpoint: its weight transformer.wpe.weight is of type list, not a tensor"),
    ("recorded wider than saved", setting("n_embd", 32, "model_args"),
     "transformer.wte.weight is (64, 16), the architecture it records implies (64, 32)"),
]


@pytest.mark.parametrize("mutate, fragment", [row[1:] for row in DAMAGE], ids=[row[0] for row in DAMAGE])
def test_a_damaged_checkpoint_is_one_line_naming_it_wherever_it_is_read(tmp_path, mutate, fragment):
    from gpt2.train.model_source import make_model, open_model

    state = make_state()
    mutate(state)
    path = tmp_path / "damaged.pt"
    save_checkpoint(path, state)
    for read in (load_model, lambda p: make_model(open_model(p))):  # sampling and export; init_from, evaluation
        with pytest.raises(CheckpointError) as err:
            read(path)
        line = error_line(err.value)
        assert line.startswith(str(path)) and fragment in line and "\n" not in line, line
