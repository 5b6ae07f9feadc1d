import pytest
import torch

from gpt2.checkpoint import checkpoint_state, load_checkpoint, save_checkpoint
from gpt2.config import ModelConfig, OptimConfig
from gpt2.errors import CheckpointError
from gpt2.model import GPT
from gpt2.optim import build_optimizer


def make_state():
    torch.manual_seed(0)
    model = GPT(ModelConfig(n_layer=1, n_head=2, n_embd=16), vocab_size=20, block_size=8)
    opt = build_optimizer(model, OptimConfig(), torch.device("cpu"))
    _, loss = model(torch.randint(0, 20, (2, 8)), torch.randint(0, 20, (2, 8)))
    loss.backward()
    opt.step()
    return model, checkpoint_state(model, opt, {"model": {"n_layer": 1}}, 7, 2.5, {"name": "char", "chars": "ab"})


def test_roundtrip(tmp_path):
    model, state = make_state()
    save_checkpoint(tmp_path / "ckpt.pt", state)
    loaded = load_checkpoint(tmp_path / "ckpt.pt")
    assert loaded["iter"] == 7 and loaded["best_val_loss"] == 2.5 and loaded["config"] == {"model": {"n_layer": 1}}
    assert loaded["model_args"] == {"vocab_size": 20, "block_size": 8}
    assert loaded["optimizer"]["state"]  # AdamW moments are saved
    fresh = GPT(ModelConfig(n_layer=1, n_head=2, n_embd=16), vocab_size=20, block_size=8)
    fresh.load_state_dict(loaded["model"])
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values()))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # no temporary file left behind


def test_compiled_model_saves_plain_names(tmp_path):
    model, _ = make_state()

    class Wrapped(torch.nn.Module):  # what torch.compile returns: the module under _orig_mod
        def __init__(self, inner):
            super().__init__()
            self._orig_mod = inner

    opt = build_optimizer(model, OptimConfig(), torch.device("cpu"))
    state = checkpoint_state(Wrapped(model), opt, {}, 0, 1.0, {})
    assert all(not k.startswith("_orig_mod") for k in state["model"])


def test_truncated_checkpoint(tmp_path):
    _, state = make_state()
    save_checkpoint(tmp_path / "ckpt.pt", state)
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
