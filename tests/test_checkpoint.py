import random

import numpy as np
import pytest
import torch

from gpt2.checkpoint import (FORMAT_VERSION, capture_rng_state, check_resumable, load_checkpoint,
                             restore_rng_state, save_checkpoint, save_periodic, unwrap)
from gpt2.config import ModelConfig
from gpt2.errors import CheckpointError
from gpt2.model import GPT

CONFIG = {"model": {"n_layer": 1, "n_embd": 16}, "trainer": {"max_iters": 10}, "optim": {"lr": 0.1}}
TOKENIZER = {"name": "char", "vocab_size": 2, "chars": "ab"}


def make_state(iter_num: int = 7) -> dict:
    torch.manual_seed(0)
    model = GPT(ModelConfig(n_layer=1, n_head=2, n_embd=16), vocab_size=20, block_size=8)
    return {"format_version": FORMAT_VERSION, "model": model.state_dict(), "iter": iter_num,
            "config": CONFIG, "tokenizer": TOKENIZER, "rng": capture_rng_state(), "text_sha256": "ab" * 32}


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


def test_rng_state_roundtrip_through_a_file(tmp_path):
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    save_checkpoint(tmp_path / "rng.pt", {"rng": capture_rng_state()})
    expected = (random.random(), np.random.rand(), torch.rand(2))
    random.seed(2), np.random.seed(2), torch.manual_seed(2)
    restore_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True)["rng"])
    got = (random.random(), np.random.rand(), torch.rand(2))
    assert got[0] == expected[0] and got[1] == expected[1] and torch.equal(got[2], expected[2])


def test_compiled_model_unwraps_to_plain_names():
    model = GPT(ModelConfig(n_layer=1, n_head=2, n_embd=16), vocab_size=20, block_size=8)

    class Compiled(torch.nn.Module):  # what torch.compile returns: the module under _orig_mod
        def __init__(self, inner):
            super().__init__()
            self._orig_mod = inner

    assert unwrap(Compiled(model)) is model
    assert all(not k.startswith("_orig_mod") for k in unwrap(Compiled(model)).state_dict())


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
    with pytest.raises(CheckpointError, match=r"model.n_embd was 16 when it was saved, the config says 32"):
        check_resumable(tmp_path, state, {**CONFIG, "model": {"n_layer": 1, "n_embd": 32}}, TOKENIZER, "ab" * 32)
    with pytest.raises(CheckpointError, match=r"optim.lr was 0.1"):
        check_resumable(tmp_path, state, {**CONFIG, "optim": {"lr": 0.2}}, TOKENIZER, "ab" * 32)
    with pytest.raises(CheckpointError, match=r"tokenizer 'char', the config has 'gpt2'"):
        check_resumable(tmp_path, state, CONFIG, {"name": "gpt2", "vocab_size": 50257}, "ab" * 32)
    with pytest.raises(CheckpointError, match="trained with the vocabulary"):
        check_resumable(tmp_path, state, CONFIG, {"name": "char", "vocab_size": 3, "chars": "abc"}, "ab" * 32)
    with pytest.raises(CheckpointError, match=r"trained on another text \(sha256 abababababab"):
        check_resumable(tmp_path, state, CONFIG, TOKENIZER, "cd" * 32)
    check_resumable(tmp_path, state, {**CONFIG, "data": {"path": "/elsewhere/same.txt"}}, TOKENIZER, "ab" * 32)
