"""model.init_from from any checkpoint: a run directory or .pt of ours, a nanoGPT ckpt.pt; the fine-tune
starts at that model's loss, with a fresh optimizer and schedule; data in other tokens is one line."""

import pytest
import torch

from gpt2.data.tokenizer import CharTokenizer
from gpt2.errors import CheckpointError, ConfigError
from gpt2.run.logger import read_metrics
from gpt2.train.checkpoint import load_checkpoint
from gpt2.train.model_source import check_tokenizer, make_model, open_model
from gpt2.train.parts import build
from gpt2.train.trainer import train

from conftest import tiny_config
from test_nanogpt import nanogpt_checkpoint

CHAR = ("data=shakespeare_char", "trainer.sample_tokens=0")


@pytest.fixture(scope="module")
def char_run(data_dir, tmp_path_factory):
    """A finished 4-iteration char-level run (best.pt at iteration 4)."""
    run = tmp_path_factory.mktemp("source") / "run"
    train(tiny_config(data_dir, *CHAR, "trainer.max_iters=4", "trainer.eval_interval=2"), run)
    return run


def val_loss_at(run, iteration):
    return next(r["val_loss"] for r in read_metrics(run) if r["iter"] == iteration and "val_loss" in r)


def nanogpt_file(run, path):
    state = load_checkpoint(run / "ckpt" / "best.pt")
    model = make_model(open_model(str(run)))
    args = {k: state["model_args"][k] for k in ("n_layer", "n_head", "n_embd", "block_size", "bias", "vocab_size")}
    torch.save(nanogpt_checkpoint(model, {**args, "dropout": 0.0}), path)
    return path


@pytest.mark.parametrize("given", ["run_dir", "best.pt", "nanogpt"])
def test_a_fine_tune_starts_at_the_loss_of_its_checkpoint(char_run, data_dir, tmp_path, given):
    source = {"run_dir": char_run, "best.pt": char_run / "ckpt" / "best.pt"}.get(given) or nanogpt_file(
        char_run, tmp_path / "ckpt.pt")
    best = load_checkpoint(char_run / "ckpt" / "best.pt")["iter"]
    tuned = tmp_path / "tuned"
    summary = train(tiny_config(data_dir, *CHAR, f"model.init_from={source}", "trainer.max_iters=2",
                                "trainer.eval_interval=2", "model.dropout=0.1"), tuned)
    rows = read_metrics(tuned)
    assert [r["iter"] for r in rows] == [0, 2]  # a fresh run: its own iterations, schedule and optimizer
    assert rows[0]["val_loss"] == pytest.approx(val_loss_at(char_run, best), abs=1e-6)
    assert rows[0]["lr"] < rows[1]["lr"] or rows[0]["lr"] == tiny_config(data_dir).optim.lr  # warming up anew
    state = load_checkpoint(tuned / "ckpt" / "last.pt")
    assert state["iter"] == 2 and state["model_args"]["dropout"] == 0.1 and summary["iters"] == 2
    assert state["tokenizer"] == load_checkpoint(char_run / "ckpt" / "best.pt")["tokenizer"]


def test_data_in_other_tokens_or_characters_is_one_line(char_run, data_dir, tmp_path):
    with pytest.raises(ConfigError) as err:
        build(tiny_config(data_dir, f"model.init_from={char_run}"))  # GPT-2 tokens
    assert str(err.value) == f"model.init_from={char_run} scores char tokens, the data is in gpt2 tokens: use data.tokenizer=char"
    source = open_model(str(char_run))
    with pytest.raises(ConfigError) as err:
        check_tokenizer(source, CharTokenizer("".join(sorted(set(source.tokenizer["chars"]) - {"Z"} | {"é"}))),
                        "model.init_from")
    assert str(err.value) == (f"model.init_from={char_run} knows 65 characters, the data has 65 (not in the "
                              f"model: 'é') (unused by the data: 'Z'): a char model takes text over exactly its "
                              f"vocabulary")
    nano = open_model(str(nanogpt_file(char_run, tmp_path / "ckpt.pt")))
    with pytest.raises(ConfigError, match="is a nanoGPT model of 65 characters; the data has 50257 gpt2 tokens"):
        check_tokenizer(nano, type("Enc", (), {"state": lambda self: {"name": "gpt2", "vocab_size": 50257}})(), None)


def test_the_checkpoints_architecture_wins_and_a_conflict_is_one_line(char_run, data_dir):
    with pytest.raises(ConfigError) as err:
        build(tiny_config(data_dir, *CHAR, f"model.init_from={char_run}", "model.n_layer=3"))
    assert str(err.value) == (f"model.n_layer=3 conflicts with model.init_from={char_run} (n_layer=1): the "
                              f"architecture is the checkpoint's; drop the override")
    with pytest.raises(ConfigError, match="data.block_size=32 is longer than the context of model.init_from"):
        build(tiny_config(data_dir, *CHAR, f"model.init_from={char_run}", "data.block_size=32"))


def test_what_is_not_a_model_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="no such file or folder"):
        open_model(str(tmp_path / "nope"))
    (tmp_path / "junk.pt").write_bytes(b"not torch")
    with pytest.raises(CheckpointError, match="is not a readable checkpoint"):
        open_model(str(tmp_path / "junk.pt"))
    torch.save({"model": {}, "model_args": {**{k: 1 for k in ("n_layer", "n_head", "n_embd", "block_size")},
                                            "bias": False, "vocab_size": 65}}, tmp_path / "empty.pt")
    with pytest.raises(CheckpointError, match="its weights do not fit the architecture it records"):
        make_model(open_model(str(tmp_path / "empty.pt")))


C_FC = "_orig_mod.transformer.h.0.mlp.c_fc.weight"
# (what is damaged, the mutation of a nanoGPT ckpt.pt, the fragment of the line model.init_from/evaluate give)
NANOGPT_DAMAGE = [
    ("no model_args", lambda s: s.pop("model_args"),
     "is neither a gpt2-harness checkpoint nor a whole nanoGPT ckpt.pt (it has no model_args)"),
    ("model_args without n_head", lambda s: s["model_args"].pop("n_head"), "(its model_args lack n_head)"),
    ("model is a list", lambda s: s.update(model=[1]), "(its model is a list, not a dict of tensors)"),
    ("n_layer is a float", lambda s: s["model_args"].update(n_layer=1.5),
     "is a damaged checkpoint: its model_args do not describe a model (n_layer=1.5 is not a whole number)"),
    ("truncated weight", lambda s: s["model"].update({C_FC: s["model"][C_FC][:10]}),
     "transformer.h.0.mlp.c_fc.weight is (10, 8), the architecture it records implies (32, 8)"),
    ("weight is a list", lambda s: s["model"].update({C_FC: [0.5]}),
     "its weight transformer.h.0.mlp.c_fc.weight is of type list, not a tensor"),
    ("missing weight", lambda s: s["model"].pop("_orig_mod.transformer.ln_f.weight"),
     "its weights do not fit the architecture it records (missing: transformer.ln_f.weight; unexpected: none)"),
]


@pytest.mark.parametrize("mutate, fragment", [r[1:] for r in NANOGPT_DAMAGE], ids=[r[0] for r in NANOGPT_DAMAGE])
def test_a_damaged_nanogpt_checkpoint_is_one_line_naming_it(tmp_path, mutate, fragment):
    from gpt2.errors import error_line
    from gpt2.model.gpt import GPT, GPTConfig
    from test_nanogpt import ARGS

    state = nanogpt_checkpoint(GPT(GPTConfig(n_layer=1, n_head=2, n_embd=8, vocab_size=65, block_size=16, bias=False)),
                               ARGS)
    mutate(state)
    torch.save(state, tmp_path / "ckpt.pt")
    with pytest.raises(CheckpointError) as err:
        make_model(open_model(str(tmp_path / "ckpt.pt")))
    line = error_line(err.value)
    assert line.startswith(str(tmp_path / "ckpt.pt")) and fragment in line and "\n" not in line, line
