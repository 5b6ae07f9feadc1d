"""GPT-2 weights in and out of Hugging Face's format (gpt2/model/pretrained.py, scripts/export_hf.py), checked
against transformers' own GPT-2 (a test-only dependency) on randomly initialised models."""

from __future__ import annotations

import errno
import json
from pathlib import Path
import os

import pytest
import torch

from gpt2.errors import CheckpointError, ConfigError, DataError, error_line
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
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 1, "n_head": 1, "n_embd": 8,
                                                      "vocab_size": 50257, "n_positions": 8}))
    with pytest.raises(DataError, match="holds neither model.safetensors nor pytorch_model.bin"):
        load_pretrained(str(tmp_path))
    with pytest.raises(ConfigError):
        load_pretrained("gpt3")


GONE = "(removed)"
"""A config change's value that removes the key."""
HF_CONFIG_REFUSALS = [  # (config.json's changes, or its whole text; the line after the folder)
    ({"n_layer": 100000}, ": config.json has n_layer=100000, its weights n_layer=2 (layers h.0 to h.1)"),
    ({"n_layer": 1}, ": config.json has n_layer=1, its weights n_layer=2 (layers h.0 to h.1)"),  # was accepted
    ({"n_embd": 64, "n_head": 4}, ": config.json has n_embd=64, its weights n_embd=32 (wte.weight is (50257, 32))"),
    ({"vocab_size": 50304}, ": config.json has vocab_size=50304, its weights vocab_size=50257 (wte.weight is "
                            "(50257, 32))"),
    ({"n_positions": 128}, ": config.json has n_positions=128, its weights n_positions=64 (wpe.weight is (64, 32))"),
    ({"n_embd": -1}, "/config.json: n_embd must be a whole number >= 1, got -1"),
    ({"n_head": 0}, "/config.json: n_head must be a whole number >= 1, got 0"),
    ({"vocab_size": 0}, "/config.json: vocab_size must be a whole number >= 1, got 0"),
    ({"n_layer": "2"}, '/config.json: n_layer must be a whole number >= 1, got "2"'),
    ({"n_layer": 2.0}, "/config.json: n_layer must be a whole number >= 1, got 2.0"),
    ({"n_layer": True}, "/config.json: n_layer must be a whole number >= 1, got true"),
    ({"n_embd": None}, "/config.json: n_embd must be a whole number >= 1, got null"),
    ({"n_positions": GONE}, "/config.json: n_positions is missing"),
    ({"n_head": 3}, "/config.json: n_embd=32 is not a multiple of n_head=3"),
    ({"n_positions": 10**12}, "/config.json: n_layer=2, n_embd=32, vocab_size=50257 and n_positions=1000000000000 "
                              "make 3.2e+13 parameters, more than the 1e+10 this harness builds (GPT-2 XL has 1.56e9)"),
    ({"n_layer": 10**6, "n_embd": 4096, "n_head": 32}, "/config.json: n_layer=1000000, n_embd=4096, vocab_size=50257 "
     "and n_positions=64 make 2.01e+14 parameters, more than the 1e+10 this harness builds (GPT-2 XL has 1.56e9)"),
    ({"activation_function": ["gelu"]}, '/config.json: activation_function ["gelu"] is not a GELU'),
    ({"model_type": "llama"}, "/config.json is a 'llama' model, not GPT-2"),
    ({"tie_word_embeddings": False}, "/config.json: {'tie_word_embeddings': False} is not the GPT-2 this model "
                                     "implements"),
    ({"n_inner": 7}, "/config.json: {'n_inner': 7} is not the GPT-2 this model implements"),
    ("[1, 2]", "/config.json holds a JSON list, not a GPT-2 config (an object)"),
    ('{"n_layer": ', "/config.json cannot be read as a GPT-2 config (Expecting value: line 1 column 13 (char 12))"),
]


@pytest.mark.parametrize("change,line", HF_CONFIG_REFUSALS, ids=[str(c)[:40] for c, _ in HF_CONFIG_REFUSALS])
def test_a_config_json_out_of_range_or_unlike_its_weights_is_refused_before_a_model_is_built(
        hf_dir, tmp_path, monkeypatch, change, line):
    """Sizes that are not whole numbers >= 1, make too large a model, or disagree with the weights'
    shapes: one line naming the folder, the field and both values, and no model built."""
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "model.safetensors").symlink_to(hf_dir / "model.safetensors")
    config = json.loads((hf_dir / "config.json").read_text())
    text = change if isinstance(change, str) else json.dumps(
        {k: v for k, v in {**config, **change}.items() if v != GONE})
    (folder / "config.json").write_text(text)
    monkeypatch.setattr("gpt2.model.pretrained.GPT", lambda config: pytest.fail(f"built {config}"))
    with pytest.raises(DataError) as err:
        load_pretrained(str(folder))
    assert str(err.value) == f"{folder}{line}"


class RunsCode:
    """Pickled, it would run `touch` (torch.load(weights_only=True) must refuse it unrun)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class Bytes:
    """A change of the saved file's bytes (a change that is a plain function is of the state dict)."""

    def __init__(self, change, name):
        self.change, self.__name__ = change, name


HALF, GARBAGE, EMPTY = (Bytes(lambda b: b[:len(b) // 2], "half"), Bytes(lambda b: b"not weights", "garbage"),
                        Bytes(lambda b: b"", "empty"))


def runs_code(weights, marker):
    return {**weights, "transformer.wte.weight": RunsCode(marker)}


def named(change, name):
    change.__name__ = name
    return change


def with_tensor(name, tensor):
    return named(lambda weights: {**weights, name: tensor}, f"{name}={tuple(tensor.shape)}")


def without(name):
    return named(lambda weights: {k: v for k, v in weights.items() if k != name}, f"without {name}")


def extra_layer(weights):
    return {**weights, **{k.replace("h.1.", "h.2."): v.clone() for k, v in weights.items() if "h.1." in k}}


SAFE = "model.safetensors: cannot be read: truncated, damaged or not a safetensors file"
BIN = "pytorch_model.bin: cannot be read: truncated, damaged or not a torch file"
HF_WEIGHTS_REFUSALS = [  # (the file written, what it holds: a state dict change or bytes; the line after the folder)
    ("model.safetensors", HALF, f"/{SAFE} (incomplete metadata, file not fully covered)"),
    ("model.safetensors", GARBAGE, f"/{SAFE} (header too large)"),
    ("model.safetensors", EMPTY, f"/{SAFE} (header too small)"),
    ("model.safetensors", without("transformer.h.1.mlp.c_fc.bias"),
     ": the weights lack h.1.mlp.c_fc.bias, which config.json's n_layer=2 implies"),
    ("model.safetensors", with_tensor("transformer.h.0.mlp.c_fc.weight", torch.zeros(32, 64)),
     ": h.0.mlp.c_fc.weight is (32, 64) in the weights, config.json's n_embd=32 makes it (32, 128)"),
    ("model.safetensors", extra_layer, ": config.json has n_layer=2, its weights n_layer=3 (layers h.0 to h.2)"),
    ("model.safetensors", with_tensor("lm_head.weight", torch.ones(50257, 32)), ": lm_head.weight differs from "
     "wte.weight, but config.json ties them (tie_word_embeddings): this GPT-2 scores with its token table"),
    ("model.safetensors", with_tensor("transformer.ln_f.weight", torch.ones(32, dtype=torch.long)),
     ": ln_f.weight holds int64 values, not floating-point weights"),
    ("pytorch_model.bin", runs_code, "/pytorch_model.bin: refused: it is not plain tensor data but a "
     "pickle that would run code (posix.system): get the model as model.safetensors, which holds tensors only"),
    ("pytorch_model.bin", HALF, f"/{BIN} (PytorchStreamReader failed reading zip archive: "
     f"failed finding central directory)"),
    ("pytorch_model.bin", GARBAGE, f"/{BIN} (torch.load(weights_only=True) finds no tensor data)"),
    ("pytorch_model.bin", named(lambda weights: list(weights), "a list"),
     "/pytorch_model.bin holds a list, not a state dict of tensors (names to tensors)"),
]


@pytest.mark.parametrize("file,change,line", HF_WEIGHTS_REFUSALS,
                         ids=[f"{i}-{f}-{c.__name__}" for i, (f, c, _) in enumerate(HF_WEIGHTS_REFUSALS)])
def test_weights_damaged_unsafe_or_unlike_config_json_are_one_line(hf_dir, tmp_path, file, change, line):
    """A changed state dict is saved in the file's format; a change of Bytes damages the saved file.
    A pickle that would run code is refused unrun."""
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text((hf_dir / "config.json").read_text())
    weights = load_file(hf_dir / "model.safetensors")
    if change is runs_code:
        weights = runs_code(weights, tmp_path / "ran")
    elif not isinstance(change, Bytes):
        weights = change(weights)
    if file == "model.safetensors":
        save_file(weights, folder / file)
    else:
        torch.save(weights, folder / file)
    if isinstance(change, Bytes):
        (folder / file).write_bytes(change.change((folder / file).read_bytes()))
    with pytest.raises(DataError) as err:
        load_pretrained(str(folder))
    assert str(err.value) == f"{folder}{line}"
    assert not (tmp_path / "ran").exists()


def enospc_at_call(n: int):
    """An os.fsync whose n-th call finds the disk full."""
    calls, fsync = [], os.fsync

    def full(fd):
        calls.append(fd)
        if len(calls) == n:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        fsync(fd)
    return full


@pytest.mark.parametrize("failure", ["a tokenizer file is missing", "the disk is full at the third file"])
def test_an_export_failing_midway_leaves_the_earlier_export_as_it_was(tmp_path, monkeypatch, failure):
    """export_pretrained writes its files all or none (a --force export over an earlier one that
    fails keeps the earlier one whole, and leaves no temporary file)."""
    out = tmp_path / "out"
    torch.manual_seed(0)
    export_pretrained(GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=16)), out, MIRROR / "gpt2-bpe")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    tokenizer = MIRROR / "gpt2-bpe"
    if failure == "a tokenizer file is missing":
        tokenizer = tmp_path / "bpe"
        tokenizer.mkdir()
        (tokenizer / "encoder.json").write_bytes((MIRROR / "gpt2-bpe" / "encoder.json").read_bytes())
    else:
        monkeypatch.setattr(os, "fsync", enospc_at_call(3))
    with pytest.raises(OSError) as err:
        export_pretrained(GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16)), out, tokenizer)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert load_pretrained(out).config.n_layer == 1
    where = {"a tokenizer file is missing": f"No such file or directory: {tokenizer / 'vocab.bpe'}",
             "the disk is full at the third file": f"No space left on device: {out / 'vocab.json'} (free some space, "
                                                   f"or write somewhere else)"}
    assert error_line(err.value) == where[failure]


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
