"""GPT-2 weights in and out of Hugging Face's format (gpt2/model/pretrained.py, scripts/export_hf.py), checked
against transformers' own GPT-2 (a test-only dependency) on randomly initialised models."""

from __future__ import annotations

import json
from pathlib import Path
import os

import pytest
import torch

from gpt2.errors import CheckpointError, ConfigError, DataError
from gpt2.model.gpt import GPT, GPTConfig
from gpt2.model.pretrained import export_pretrained, load_pretrained

from conftest import MIRROR, TINY, one_line, run_train
from test_scripts import run_script

transformers = pytest.importorskip("transformers")
RUN = [arg for arg in TINY if not arg.startswith("model.")]  # the architecture comes from the folder


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    """A random transformers GPT-2 (2 layers, 32 wide, the GPT-2 vocabulary, context 64), saved."""
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=64, vocab_size=50257)
    model = transformers.GPT2LMHeadModel(config).eval()
    path = tmp_path_factory.mktemp("hf")
    model.save_pretrained(path)
    return path


def hf_logits(path, x):
    with torch.no_grad():
        return transformers.GPT2LMHeadModel.from_pretrained(path).eval()(x).logits


def our_logits(model, x):
    with torch.no_grad():
        return model.eval()(x, x)[0]


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_imported_weights_give_transformers_logits(hf_dir, tmp_path, fmt):
    if fmt == "bin":  # the older format: a pickled state dict with the 'transformer.' prefix
        state = transformers.GPT2LMHeadModel.from_pretrained(hf_dir).state_dict()
        torch.save(state, tmp_path / "pytorch_model.bin")
        (tmp_path / "config.json").write_text((hf_dir / "config.json").read_text())
    path = hf_dir if fmt == "safetensors" else tmp_path
    x = torch.randint(0, 50257, (3, 40))
    model = load_pretrained(str(path))
    assert model.config.gelu_approximate == "tanh" and model.config.bias and model.block_size == 64
    assert torch.allclose(our_logits(model, x), hf_logits(hf_dir, x), atol=1e-4)


@pytest.mark.parametrize("gelu,bias", [("none", False), ("tanh", True)])
def test_export_round_trip(tmp_path, gelu, bias):
    """Ours -> Hugging Face folder -> transformers, and back: the same logits; its tokenizer loads."""
    torch.manual_seed(1)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=64, bias=bias, gelu_approximate=gelu))
    export_pretrained(model, tmp_path / "out", tokenizer_files=MIRROR / "gpt2-bpe")
    x = torch.randint(0, 50257, (2, 30))
    assert torch.allclose(hf_logits(tmp_path / "out", x), our_logits(model, x), atol=1e-4)
    assert torch.allclose(our_logits(load_pretrained(str(tmp_path / "out")), x), our_logits(model, x), atol=1e-5)
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "out")
    assert tokenizer("Hello world, it's me.")["input_ids"] == [15496, 995, 11, 340, 338, 502, 13]


def test_a_local_folder_named_gpt2_is_read_not_fetched(hf_dir, tmp_path, monkeypatch, data_dir):
    """sample.py ./gpt2 reads that folder (str(Path('./gpt2')) is 'gpt2', the Hub's name)."""
    import shutil

    from gpt2.eval.inference import load_for_inference

    shutil.copytree(hf_dir, tmp_path / "gpt2")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("gpt2.model.pretrained.locate", lambda name: pytest.fail(f"{name} resolved as a name"))
    model, _ = load_for_inference(Path("./gpt2"), torch.device("cpu"), str(data_dir), str(MIRROR))
    assert model.block_size == 64


def test_a_char_model_is_not_exported(tmp_path):
    with pytest.raises(Exception, match="only GPT-2 BPE models export"):
        export_pretrained(GPT(GPTConfig(n_layer=1, n_head=1, n_embd=8, vocab_size=65, block_size=8)), tmp_path)


@pytest.mark.parametrize("option,value", [("rotary", True), ("norm", "rmsnorm"), ("qk_norm", True),
                                          ("activation", "relu2"), ("tie_embeddings", False), ("logit_softcap", 30.0)])
def test_a_model_gpt2_has_no_equivalent_for_is_not_exported(tmp_path, option, value):
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=8, **{option: value}))
    with pytest.raises(CheckpointError) as err:
        export_pretrained(model, tmp_path / "out")
    assert str(err.value).startswith(f"model.{option}={value} has no equivalent in Hugging Face's GPT-2 format")
    assert not (tmp_path / "out").exists()
    export_pretrained(GPT(GPTConfig(n_layer=1, n_head=2, n_embd=8, zero_init=True)), tmp_path / "zero")  # init only


@pytest.mark.slow
def test_init_from_trains_exports_and_samples(hf_dir, tmp_path, data_dir):
    """train.py model.init_from=<folder> starts from its weights, resumes without the folder (the
    checkpoint holds them), then scripts/export_hf.py and scripts/sample.py take the run."""
    import shutil

    shutil.copytree(hf_dir, tmp_path / "weights")
    args = [*RUN, f"data.data_dir={data_dir}", "logger=none", f"model.init_from={tmp_path / 'weights'}",
            "model.block_size=32", "optim.lr_decay_iters=30"]
    result = run_train(tmp_path / "run", *args)
    assert result.returncode == 0, result.stderr
    shutil.rmtree(tmp_path / "weights")  # gone, or offline: the resume needs only its checkpoint
    result = run_train(tmp_path / "run", *args, "trainer.resume=auto", "trainer.max_iters=30")
    assert result.returncode == 0, result.stderr
    model_args = torch.load(tmp_path / "run" / "ckpt" / "last.pt", weights_only=True)["model_args"]
    assert (model_args["n_layer"], model_args["n_embd"], model_args["block_size"], model_args["bias"],
            model_args["gelu_approximate"]) == (2, 32, 32, True, "tanh")
    exported = run_script("export_hf.py", str(tmp_path / "run"), "--out", str(tmp_path / "hf"),
                          "--data-dir", str(data_dir))
    assert exported.returncode == 0, exported.stderr
    before = (tmp_path / "hf" / "model.safetensors").read_bytes()
    again = run_script("export_hf.py", str(tmp_path / "run"), "--out", str(tmp_path / "hf"), "--data-dir", str(data_dir))
    assert (again.returncode, again.stderr) == (1, f"error: --out {tmp_path / 'hf'} holds an earlier result: choose "
                                                   f"another path, or add --force to replace it\n")
    assert (tmp_path / "hf" / "model.safetensors").read_bytes() == before  # the first export is kept
    x = torch.randint(0, 50257, (2, 20))
    trained = load_pretrained(str(tmp_path / "hf"))
    assert torch.allclose(hf_logits(tmp_path / "hf", x), our_logits(trained, x), atol=1e-4)
    sampled = run_script("sample.py", str(tmp_path / "hf"), "--prompt", "Hello", "--max-new-tokens", "5",
                         "--num-samples", "1", "--device", "cpu", "--data-dir", str(data_dir))
    assert sampled.returncode == 0 and sampled.stdout.startswith("Hello"), sampled.stderr


@pytest.mark.slow
def test_init_from_mistakes_are_one_line(hf_dir, tmp_path, data_dir):
    """The first through train.py (the one line it ends in), the others where they are raised."""
    from gpt2.config import from_hydra
    from gpt2.train.parts import build
    from gpt2.train.trainer import train
    from conftest import compose_config

    base = [*RUN, f"data.data_dir={data_dir}", "logger=none"]
    assert one_line(run_train(tmp_path / "a", *base, f"model.init_from={hf_dir}", "model.n_layer=3")) == (
        f"model.n_layer=3 conflicts with model.init_from={hf_dir} (n_layer=2): the architecture is the "
        f"checkpoint's; drop the override")
    refused = {
        "data.tokenizer=char": f"model.init_from={hf_dir} scores gpt2 tokens, the data is in char tokens: use "
                               f"data.tokenizer=gpt2",
        "data.block_size=128": f"data.block_size=128 is longer than the context of model.init_from={hf_dir} (64)",
        "model.block_size=128": f"model.block_size=128 is longer than the context of model.init_from={hf_dir} (64)",
    }
    for override, line in refused.items():
        with pytest.raises(ConfigError) as err:
            build(from_hydra(compose_config(*base, f"model.init_from={hf_dir}", override)))
        assert str(err.value) == line
    with pytest.raises(DataError, match="openai-community/gpt2 cannot be fetched from the Hugging Face Hub"):
        build(from_hydra(compose_config(*base, "model.init_from=gpt2")))  # HF_HUB_OFFLINE=1 in the tests
    with pytest.raises(ConfigError, match="nope: no such file or folder"):
        build(from_hydra(compose_config(*base, "model.init_from=nope")))
    train(from_hydra(compose_config(*base, "data.tokenizer=char", "trainer.max_iters=2")), tmp_path / "char")
    refused = run_script("export_hf.py", str(tmp_path / "char"), "--out", str(tmp_path / "x"))
    assert refused.returncode == 1 and "char-level model" in refused.stderr and "Traceback" not in refused.stderr
    assert not os.path.exists(tmp_path / "x")


def test_damaged_folders_are_one_line(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(DataError, match="is a 'llama' model, not GPT-2"):
        load_pretrained(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 1, "n_head": 1, "n_embd": 8,
                                                      "vocab_size": 50257, "n_positions": 8}))
    with pytest.raises(DataError, match="holds neither model.safetensors nor pytorch_model.bin"):
        load_pretrained(str(tmp_path))
    with pytest.raises(ConfigError):
        load_pretrained("gpt3")
    for setting in ({"tie_word_embeddings": False}, {"layer_norm_epsilon": 1e-6},
                    {"scale_attn_by_inverse_layer_idx": True}, {"n_inner": 7}):
        (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 1, "n_head": 1, "n_embd": 8,
                                                          "vocab_size": 50257, "n_positions": 8, **setting}))
        with pytest.raises(DataError, match="is not the GPT-2 this model implements"):
            load_pretrained(str(tmp_path))


def lm_eval_loglikelihood(folder: Path, context: str, continuation: str) -> float:
    """What EleutherAI's lm-eval (`lm_eval --model hf --model_args pretrained=FOLDER`) computes for a
    multiple-choice request, as its HFLM does it: AutoTokenizer and AutoModelForCausalLM from the
    folder; the continuation's tokens are the pair's encoding past the context's; their summed
    log-probability. (lm-eval itself would fetch its task data from the Hub: offline, its scoring
    rule is what can be checked.)"""
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    whole, start = tokenizer(context + continuation)["input_ids"], len(tokenizer(context)["input_ids"])
    with torch.no_grad():
        logits = model(torch.tensor([whole[:-1]])).logits[0]
    logprobs = torch.log_softmax(logits.float(), -1)
    return sum(logprobs[i - 1, whole[i]].item() for i in range(start, len(whole)))


def test_an_export_scores_in_lm_eval_as_in_our_hellaswag(tmp_path, data_dir):
    """export_hf's folder loads as lm-eval's hf model does, and its log-likelihood of each HellaSwag
    ending is minus our summed ending loss: lm-eval's acc on an export is our script's acc."""
    from gpt2.data.tokenizer import GPT2Tokenizer
    from gpt2.train.hellaswag import encode_example, ending_losses

    torch.manual_seed(2)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=64)).eval()
    export_pretrained(model, tmp_path / "out", tokenizer_files=MIRROR / "gpt2-bpe")
    example = {"ctx": "A man is sitting on a roof. he", "label": 3, "endings": [
        "is using wrap to wrap a pair of skis.", "is ripping level tiles off.", "is holding a rubik's cube.",
        "starts pulling up roofing on a roof."]}
    summed, _ = ending_losses(model, encode_example(GPT2Tokenizer(data_dir, MIRROR), example, 64), "cpu")
    theirs = [lm_eval_loglikelihood(tmp_path / "out", example["ctx"], " " + e) for e in example["endings"]]
    assert torch.allclose(-summed, torch.tensor(theirs), atol=1e-4)


def test_offline_a_hub_name_says_the_hf_command_that_fetches_it(tmp_path):
    """The offline line gives the download command of huggingface_hub's current CLI, `hf`
    (`huggingface-cli` is gone from it), and that command line is one the installed `hf` accepts:
    offline it fails for the network (exit 1), not for its arguments (exit 2)."""
    import re
    import shlex
    import subprocess
    import sys

    from gpt2.model.pretrained import locate

    with pytest.raises(DataError) as offline:
        locate("gpt2")
    message = str(offline.value)
    assert message.startswith("model.init_from=gpt2: openai-community/gpt2 cannot be fetched from the Hugging Face Hub")
    assert message.endswith("Offline? Where there is network, download it with huggingface_hub's CLI (hf download "
                            "openai-community/gpt2 config.json model.safetensors --local-dir gpt2), bring that folder "
                            "here and set model.init_from=./gpt2 (or the folder's path)")
    command = shlex.split(re.search(r"\((hf download [^)]*)\)", message).group(1))
    hf = Path(sys.executable).parent / "hf"
    result = subprocess.run([str(hf), *command[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                            stdin=subprocess.DEVNULL, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 1 and "offline" in result.stdout + result.stderr, result.stdout + result.stderr
