"""gpt2/eval/inference.py: `checkpoint_of` (which file a path names) and `load_for_inference` from a
run directory, a checkpoint file and a Hugging Face GPT-2 folder: the model in eval mode with the
saved weights, its tokenizer, refusals in one line, and the global RNG left as it was. One tiny run
(2 iterations, char-level) is trained once for the module."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from gpt2.errors import CheckpointError, DataError
from gpt2.eval.inference import load_for_inference
from gpt2.train.checkpoint import checkpoint_of
from gpt2.model.gpt import GPT, GPTConfig
from gpt2.model.pretrained import export_pretrained
from gpt2.train.trainer import train

from conftest import tiny_config

CPU = torch.device("cpu")
SHAKESPEARE_LINE = "First Citizen:\nBefore we proceed any further, hear me speak.\n"


@pytest.fixture(scope="module")
def run_dir(data_dir, tmp_path_factory):
    """A finished 2-iteration char-level run: ckpt/best.pt and ckpt/last.pt."""
    run = tmp_path_factory.mktemp("inference") / "run"
    train(tiny_config(data_dir, "data=shakespeare_char", "trainer.max_iters=2", "trainer.eval_interval=1",
                      "trainer.sample_tokens=0"), run)
    return run


@pytest.fixture(scope="module")
def hf_model() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=16)).eval()  # GPT-2's 50257 tokens


@pytest.fixture(scope="module")
def hf_dir(hf_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf") / "tiny-gpt2"
    export_pretrained(hf_model, folder)
    return folder


# ---------------------------------------------------------------------------------- checkpoint_of
def make_run(tmp_path, *names: str):
    (tmp_path / "ckpt").mkdir()
    for name in names:
        (tmp_path / "ckpt" / name).write_bytes(name.encode())
    return tmp_path


@pytest.mark.parametrize("names, chosen", [
    (("best.pt", "last.pt", "iter_0000002.pt"), "best.pt"),
    (("best.pt",), "best.pt"),
    (("last.pt", "iter_0000002.pt"), "last.pt"),
], ids=["best and last", "best only", "last only"])
def test_a_run_directory_names_its_best_checkpoint_else_its_last(tmp_path, names, chosen):
    assert checkpoint_of(make_run(tmp_path, *names)) == tmp_path / "ckpt" / chosen


def test_a_file_names_itself(tmp_path):
    path = tmp_path / "any.pt"
    path.write_bytes(b"x")
    assert checkpoint_of(path) == path


@pytest.mark.parametrize("layout", ["empty ckpt", "numbered only", "no ckpt", "missing"])
def test_a_path_without_a_checkpoint_is_one_error_listing_what_was_looked_for(tmp_path, layout):
    path = {"empty ckpt": lambda: make_run(tmp_path), "numbered only": lambda: make_run(tmp_path, "iter_0000002.pt"),
            "no ckpt": lambda: tmp_path, "missing": lambda: tmp_path / "nowhere"}[layout]()
    with pytest.raises(CheckpointError) as err:
        checkpoint_of(path)
    assert str(err.value) == (f"{path} is neither a checkpoint, a run directory with ckpt/best.pt or ckpt/last.pt, "
                              f"nor a Hugging Face GPT-2 folder (config.json)")


# ----------------------------------------------------------------------------- from a checkpoint
@pytest.mark.parametrize("where", ["run dir", "best.pt", "last.pt"])
def test_a_checkpoint_loads_its_weights_in_eval_mode_with_its_char_tokenizer(run_dir, data_dir, where):
    path = run_dir if where == "run dir" else run_dir / "ckpt" / where
    saved = torch.load(run_dir / "ckpt" / ("best.pt" if where == "run dir" else where), weights_only=True)
    model, tokenizer = load_for_inference(path, CPU, data_dir=str(data_dir))
    assert not model.training and all(not m.training for m in model.modules())
    assert model.config == GPTConfig(**saved["model_args"])
    weights = model.state_dict()
    assert weights.keys() == saved["model"].keys()
    assert all(torch.equal(weights[k], saved["model"][k]) for k in weights)
    assert (tokenizer.name, tokenizer.vocab_size) == ("char", 65) == (tokenizer.name, model.vocab_size)
    assert tokenizer.decode(tokenizer.encode(SHAKESPEARE_LINE)) == SHAKESPEARE_LINE
    assert tokenizer.state() == saved["tokenizer"]


def test_a_tilde_path_is_expanded(run_dir, data_dir, monkeypatch):
    monkeypatch.setenv("HOME", str(run_dir))
    model, _ = load_for_inference("~/ckpt/last.pt", CPU, data_dir=str(data_dir))
    saved = torch.load(run_dir / "ckpt" / "last.pt", weights_only=True)
    assert torch.equal(model.lm_head.weight, saved["model"]["lm_head.weight"])


def test_a_damaged_checkpoint_is_one_checkpoint_error(tmp_path, data_dir):
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "last.pt").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match=r"last.pt is not a readable checkpoint \(truncated or not a torch"):
        load_for_inference(tmp_path, CPU, data_dir=str(data_dir))


# -------------------------------------------------------------------------- from a Hugging Face folder
def test_a_hugging_face_folder_loads_the_same_model_with_the_gpt2_tokenizer(hf_model, hf_dir, data_dir):
    model, tokenizer = load_for_inference(hf_dir, CPU, data_dir=str(data_dir))
    assert not model.training and model.vocab_size == 50257
    idx = torch.tensor([[464, 2068, 7586, 21831, 18045, 625, 262, 16931, 3290, 13]])
    with torch.no_grad():
        assert torch.allclose(model(idx, idx)[0], hf_model(idx, idx)[0], atol=1e-6)
    assert torch.equal(model.transformer.wte.weight[:50257], hf_model.transformer.wte.weight[:50257])
    assert tokenizer.name == "gpt2" and tokenizer.encode("Hello world") == [15496, 995]
    assert tokenizer.decode(tokenizer.encode(SHAKESPEARE_LINE)) == SHAKESPEARE_LINE


def test_a_hugging_face_folder_of_another_vocabulary_is_refused(hf_dir, tmp_path, data_dir):
    """A GPT-2 folder whose token table is not GPT-2's 50257 tokens: the GPT-2 tokenizer cannot read it."""
    folder = tmp_path / "small-vocab"
    folder.mkdir()
    weights = load_file(hf_dir / "model.safetensors")
    weights["transformer.wte.weight"] = weights["transformer.wte.weight"][:100].contiguous()
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((hf_dir / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "vocab_size": 100}))
    with pytest.raises(CheckpointError) as err:
        load_for_inference(folder, CPU, data_dir=str(data_dir))
    assert str(err.value) == (f"{folder} scores 100 tokens: a Hugging Face folder is read with the GPT-2 "
                              f"tokenizer (50257 tokens)")


@pytest.mark.parametrize("change,line", [
    ({"n_layer": 2}, "config.json has n_layer=2, its weights n_layer=1 (layer h.0)"),
    ({"n_embd": 32}, "config.json has n_embd=32, its weights n_embd=16 (wte.weight is (50257, 16))"),
])
def test_a_hugging_face_folder_unlike_its_weights_is_refused_as_it_is_opened(hf_dir, tmp_path, data_dir,
                                                                             change, line):
    """sample.py, evaluate.py and eval_hellaswag.py open a folder through its config.json, checked
    against the weights' shapes there, before anything is built."""
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "model.safetensors").symlink_to(hf_dir / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({**json.loads((hf_dir / "config.json").read_text()), **change}))
    with pytest.raises(DataError) as err:
        load_for_inference(folder, CPU, data_dir=str(data_dir))
    assert str(err.value) == f"{folder}: {line}"


# ------------------------------------------------------------------------------------ the global RNG
def rng_unchanged_by(load) -> bool:
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    load()
    return torch.equal(before, torch.get_rng_state())


def test_loading_a_checkpoint_leaves_the_global_rng_as_it_was(run_dir, data_dir):
    assert rng_unchanged_by(lambda: load_for_inference(run_dir, CPU, data_dir=str(data_dir)))
    assert rng_unchanged_by(lambda: load_for_inference(run_dir / "ckpt" / "last.pt", CPU, data_dir=str(data_dir)))


def test_loading_a_hugging_face_folder_leaves_the_global_rng_as_it_was(hf_dir, data_dir):
    assert rng_unchanged_by(lambda: load_for_inference(hf_dir, CPU, data_dir=str(data_dir)))
