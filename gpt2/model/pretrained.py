"""GPT-2 weights in and out of Hugging Face's format.

`load_pretrained(name_or_dir)` builds our GPT from a Hugging Face GPT-2 folder (config.json and
model.safetensors or pytorch_model.bin): a local folder, or OpenAI's gpt2 / gpt2-medium / gpt2-large /
gpt2-xl fetched with huggingface_hub where there is network. `export_pretrained(model, out)` writes
such a folder, which transformers' `GPT2LMHeadModel.from_pretrained` loads. The parameter names are the
same on both sides (ours are GPT-2's); Hugging Face keeps the attention and MLP projections as Conv1D
(weights transposed), does not pad the token table, and always has biases.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, replace
from pathlib import Path
from typing import Optional

import torch

from gpt2.errors import CheckpointError, ConfigError, DataError
from gpt2.files import atomic_file, atomic_write_text
from gpt2.model.gpt import GPT, GPTConfig

HF_NAMES = {"gpt2": "openai-community/gpt2", "gpt2-medium": "openai-community/gpt2-medium",
            "gpt2-large": "openai-community/gpt2-large", "gpt2-xl": "openai-community/gpt2-xl"}
CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
GELU = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu_fast": "tanh", "gelu": "none"}
GPT2_VOCAB = 50257
UNSUPPORTED = {"tie_word_embeddings": (True,), "layer_norm_epsilon": (1e-5,),
               "scale_attn_by_inverse_layer_idx": (False,), "reorder_and_upcast_attn": (False,),
               "scale_attn_weights": (True,)}
"""Hugging Face GPT-2 settings our model implements only with these values."""


def locate(name_or_dir: str) -> Path:
    """The local folder of a pretrained model: a known name fetched from the Hub (a local folder of
    the same name is ./gpt2), else the path itself."""
    path = Path(name_or_dir).expanduser()
    if name_or_dir not in HF_NAMES and path.is_dir():
        return path
    if name_or_dir not in HF_NAMES:
        raise ConfigError(f"model.init_from={name_or_dir!r}: neither a folder nor one of {', '.join(HF_NAMES)}")
    repo = HF_NAMES[name_or_dir]
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo, allow_patterns=["config.json", "model.safetensors"]))
    except Exception as exc:  # offline, a proxy, a full disk: all end the same way
        raise DataError(f"model.init_from={name_or_dir}: {repo} cannot be fetched from the Hugging Face Hub "
                        f"({type(exc).__name__}). Offline? Where there is network, download it with "
                        f"huggingface_hub's CLI (hf download {repo} config.json model.safetensors --local-dir "
                        f"{name_or_dir}), bring that folder here and set model.init_from=./{name_or_dir} "
                        f"(or the folder's path)") from None


def read_config(directory: Path) -> GPTConfig:
    """Our GPTConfig from a Hugging Face GPT-2 config.json."""
    try:
        hf = json.loads((directory / "config.json").read_text())
        if hf.get("model_type") != "gpt2":
            raise DataError(f"{directory}/config.json is a {hf.get('model_type')!r} model, not GPT-2")
        gelu = GELU.get(hf.get("activation_function", "gelu_new"))
        if gelu is None:
            raise DataError(f"{directory}/config.json: activation_function {hf['activation_function']!r} is not a GELU")
        unsupported = {key: hf[key] for key, ours in UNSUPPORTED.items() if key in hf and hf[key] not in ours}
        if hf.get("n_inner") not in (None, 4 * hf["n_embd"]):
            unsupported["n_inner"] = hf["n_inner"]
        if unsupported:
            raise DataError(f"{directory}/config.json: {unsupported} is not the GPT-2 this model implements")
        return GPTConfig(n_layer=hf["n_layer"], n_head=hf["n_head"], n_embd=hf["n_embd"], vocab_size=hf["vocab_size"],
                         block_size=hf["n_positions"], bias=True, gelu_approximate=gelu)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{directory}/config.json cannot be read as a GPT-2 config "
                        f"({type(exc).__name__}: {exc})") from None


def read_weights(directory: Path) -> dict[str, torch.Tensor]:
    """The folder's tensors, named without Hugging Face's optional 'transformer.' prefix."""
    try:
        if (directory / "model.safetensors").is_file():
            from safetensors.torch import load_file

            weights = load_file(directory / "model.safetensors")
        elif (directory / "pytorch_model.bin").is_file():
            weights = torch.load(directory / "pytorch_model.bin", map_location="cpu", weights_only=True)
        else:
            raise DataError(f"{directory} holds neither model.safetensors nor pytorch_model.bin")
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{directory}: the weights cannot be read ({type(exc).__name__}: {exc})") from None
    return {name.removeprefix("transformer."): tensor for name, tensor in weights.items()}


def load_pretrained(name_or_dir: str | Path, dropout: float = 0.0, vocab_multiple: int = 64) -> GPT:
    """Our GPT with the weights of a Hugging Face GPT-2, in float32 on the CPU: a Path is the folder
    itself, a str a name or a folder (see `locate`)."""
    directory = name_or_dir if isinstance(name_or_dir, Path) else locate(name_or_dir)
    model = GPT(replace(read_config(directory), dropout=dropout, vocab_multiple=vocab_multiple))
    weights, vocab = read_weights(directory), model.config.vocab_size
    with torch.no_grad():
        for key, param in model.state_dict().items():
            if key == "lm_head.weight":  # tied to the token table
                continue
            name = key.removeprefix("transformer.")
            if name not in weights:
                raise DataError(f"{directory}: the weights lack {name}")
            tensor = weights[name].t() if key.endswith(CONV1D) else weights[name]
            target = param[:vocab] if key == "transformer.wte.weight" else param  # our table is padded
            if tensor.shape != target.shape:
                raise DataError(f"{directory}: {name} is {tuple(tensor.shape)}, its config implies "
                                f"{tuple(target.shape)}")
            target.copy_(tensor)
    return model


def export_pretrained(model: GPT, out: Path, tokenizer_files: Optional[Path] = None) -> None:
    """Write `model` as a Hugging Face GPT-2 folder: config.json, model.safetensors and, given the
    GPT-2 BPE files, vocab.json and merges.txt (so transformers' tokenizer loads from it too)."""
    from safetensors.torch import save

    c = model.config
    if c.vocab_size != GPT2_VOCAB:
        raise CheckpointError(f"only GPT-2 BPE models export to Hugging Face's GPT-2 format; this one has a vocabulary "
                              f"of {c.vocab_size} (a char-level model has no tokenizer transformers could load)")
    if c.not_gpt2():
        raise CheckpointError(f"model.{c.not_gpt2()[0]} has no equivalent in Hugging Face's GPT-2 format: only "
                              f"GPT-2-shaped models export (this one has {', '.join(c.not_gpt2())})")
    state = {}
    for key, value in model.state_dict().items():
        if key == "lm_head.weight":  # tied: transformers ties it to wte again
            continue
        tensor = value.detach().float().cpu()
        tensor = tensor.t() if key.endswith(CONV1D) else tensor[:GPT2_VOCAB] if key.endswith("wte.weight") else tensor
        state[key] = tensor.contiguous()
    for key, size in hf_biases(c).items():  # a model without biases: zeros, the same function
        state.setdefault(key, torch.zeros(size))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_file(out / "model.safetensors") as f:
        f.write(save(state, metadata={"format": "pt"}))
    atomic_write_text(out / "config.json", json.dumps(hf_config(c), indent=2) + "\n")
    if tokenizer_files is not None:
        for ours, theirs in (("encoder.json", "vocab.json"), ("vocab.bpe", "merges.txt")):
            shutil.copyfile(tokenizer_files / ours, out / theirs)


def hf_biases(c: GPTConfig) -> dict[str, int]:
    """Every bias Hugging Face's GPT-2 has, with its size."""
    sizes = {"ln_1.bias": c.n_embd, "attn.c_attn.bias": 3 * c.n_embd, "attn.c_proj.bias": c.n_embd,
             "ln_2.bias": c.n_embd, "mlp.c_fc.bias": 4 * c.n_embd, "mlp.c_proj.bias": c.n_embd}
    biases = {f"transformer.h.{i}.{name}": size for i in range(c.n_layer) for name, size in sizes.items()}
    return {**biases, "transformer.ln_f.bias": c.n_embd}


def hf_config(c: GPTConfig) -> dict:
    return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": c.vocab_size,
            "n_positions": c.block_size, "n_ctx": c.block_size, "n_embd": c.n_embd, "n_layer": c.n_layer,
            "n_head": c.n_head, "n_inner": None,
            "activation_function": "gelu_new" if c.gelu_approximate == "tanh" else "gelu",
            "layer_norm_epsilon": 1e-5, "resid_pdrop": c.dropout, "embd_pdrop": c.dropout, "attn_pdrop": c.dropout,
            "initializer_range": 0.02, "bos_token_id": GPT2_VOCAB - 1, "eos_token_id": GPT2_VOCAB - 1,
            "tie_word_embeddings": True, "torch_dtype": "float32", "gpt2_harness": asdict(c)}
