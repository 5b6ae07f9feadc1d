"""GPT-2 weights in and out of Hugging Face's format.

`load_pretrained(name_or_dir)` builds our GPT from a Hugging Face GPT-2 folder (config.json and
model.safetensors or pytorch_model.bin): a local folder, or OpenAI's gpt2 / gpt2-medium / gpt2-large /
gpt2-xl fetched with huggingface_hub where there is network. `export_pretrained(model, out)` writes
such a folder, which transformers' `GPT2LMHeadModel.from_pretrained` loads. The parameter names are the
same on both sides (ours are GPT-2's); Hugging Face keeps the attention and MLP projections as Conv1D
(weights transposed), does not pad the token table, and always has biases.

A folder is checked before any model is built (`read_config`): config.json's sizes must be whole
numbers >= 1 that make at most MAX_PARAMS parameters and agree with the shapes of the weights (read
from model.safetensors' header); a pytorch_model.bin is read as plain tensor data only (a pickle that
would run code is refused). Each refusal is one DataError naming the file and the field.
"""

from __future__ import annotations

import json
import re
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import Iterator, Optional

import torch

from gpt2.errors import CheckpointError, ConfigError, DataError
from gpt2.files import atomic_file, shown
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
SIZES = ("n_layer", "n_head", "n_embd", "vocab_size", "n_positions")
MAX_PARAMS = 10**10
"""The most parameters a config.json may describe: 40 GB in float32, six times GPT-2 XL (1.56e9)."""
LAYER = re.compile(r"^h\.(\d+)\.")


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
    """Our GPTConfig from a Hugging Face GPT-2 config.json, refused in one line before any model is
    built where its sizes are not whole numbers >= 1, describe more than MAX_PARAMS parameters, or
    disagree with the shapes of the folder's weights (`check_weight_shapes`)."""
    where = f"{directory}/config.json"
    hf = read_config_json(directory)
    for key in SIZES:
        if key not in hf:
            raise DataError(f"{where}: {key} is missing")
        if type(hf[key]) is not int or hf[key] < 1:  # not a bool, a float or a string
            raise DataError(f"{where}: {key} must be a whole number >= 1, got {shown(hf[key])}")
    if hf["n_embd"] % hf["n_head"]:
        raise DataError(f"{where}: n_embd={hf['n_embd']} is not a multiple of n_head={hf['n_head']}")
    activation = hf.get("activation_function", "gelu_new")
    gelu = GELU.get(activation) if isinstance(activation, str) else None
    if gelu is None:
        raise DataError(f"{where}: activation_function {shown(activation)} is not a GELU")
    unsupported = {key: hf[key] for key, ours in UNSUPPORTED.items() if key in hf and hf[key] not in ours}
    if hf.get("n_inner") not in (None, 4 * hf["n_embd"]):
        unsupported["n_inner"] = hf["n_inner"]
    if unsupported:
        raise DataError(f"{where}: {unsupported} is not the GPT-2 this model implements")
    config = GPTConfig(n_layer=hf["n_layer"], n_head=hf["n_head"], n_embd=hf["n_embd"], vocab_size=hf["vocab_size"],
                       block_size=hf["n_positions"], bias=True, gelu_approximate=gelu)
    if hf_parameter_count(config) > MAX_PARAMS:
        raise DataError(f"{where}: n_layer={config.n_layer}, n_embd={config.n_embd}, vocab_size={config.vocab_size} "
                        f"and n_positions={config.block_size} make {hf_parameter_count(config):.3g} parameters, "
                        f"more than the {MAX_PARAMS:.0e} this harness builds (GPT-2 XL has 1.56e9)")
    check_weight_shapes(directory, config, weight_shapes(directory))
    return config


def read_config_json(directory: Path) -> dict:
    """config.json's object, of a GPT-2 (model_type gpt2); else one DataError."""
    try:
        hf = json.loads((directory / "config.json").read_text())
    except (OSError, ValueError, RecursionError) as exc:  # UnicodeDecodeError, JSONDecodeError: ValueErrors
        raise DataError(f"{directory}/config.json cannot be read as a GPT-2 config "
                        f"({getattr(exc, 'strerror', None) or str(exc)[:100] or type(exc).__name__})") from None
    if not isinstance(hf, dict):
        raise DataError(f"{directory}/config.json holds a JSON {type(hf).__name__}, not a GPT-2 config (an object)")
    if hf.get("model_type") != "gpt2":
        raise DataError(f"{directory}/config.json is a {hf.get('model_type')!r} model, not GPT-2")
    return hf


def hf_parameter_count(c: GPTConfig) -> int:
    """The parameters of Hugging Face's GPT-2 of this shape (the token table unpadded), computed
    without building it: per layer 12 n^2 + 13 n, the two tables, the final LayerNorm."""
    n = c.n_embd
    return c.n_layer * (12 * n * n + 13 * n) + (c.vocab_size + c.block_size + 2) * n


def hf_shapes(c: GPTConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor of Hugging Face's GPT-2 of this shape, named without 'transformer.', with its
    shape there (the projections as Conv1D: (in, out))."""
    n = c.n_embd
    layer = {"ln_1.weight": (n,), "ln_1.bias": (n,), "attn.c_attn.weight": (n, 3 * n), "attn.c_attn.bias": (3 * n,),
             "attn.c_proj.weight": (n, n), "attn.c_proj.bias": (n,), "ln_2.weight": (n,), "ln_2.bias": (n,),
             "mlp.c_fc.weight": (n, 4 * n), "mlp.c_fc.bias": (4 * n,), "mlp.c_proj.weight": (4 * n, n),
             "mlp.c_proj.bias": (n,)}
    shapes = {"wte.weight": (c.vocab_size, n), "wpe.weight": (c.block_size, n)}
    shapes.update({f"h.{i}.{name}": shape for i in range(c.n_layer) for name, shape in layer.items()})
    return {**shapes, "ln_f.weight": (n,), "ln_f.bias": (n,)}


def check_weight_shapes(directory: Path, c: GPTConfig, shapes: dict[str, tuple[int, ...]]) -> None:
    """Refuse a config.json that disagrees with its weights, naming the field and both values: the
    layers (h.N) the weights hold, the token and position tables' sizes and width; then every tensor
    the config implies must be there with its shape. (n_head shapes no tensor: it cannot be checked.)"""
    layers = sorted({int(m.group(1)) for name in shapes if (m := LAYER.match(name))})
    span = (f"layers h.{layers[0]} to h.{layers[-1]}" if len(layers) > 1 else f"layer h.{layers[0]}" if layers
            else "no layer h.N")
    found = {"n_layer": (len(layers), span)}
    for table, fields in (("wte.weight", ("vocab_size", "n_embd")), ("wpe.weight", ("n_positions", "n_embd"))):
        if len(shapes.get(table, ())) == 2:
            for field, size in zip(fields, shapes[table]):
                found.setdefault(field, (size, f"{table} is {shapes[table]}"))
    ours = {"n_layer": c.n_layer, "vocab_size": c.vocab_size, "n_positions": c.block_size, "n_embd": c.n_embd}
    for field, (theirs, evidence) in found.items():
        if theirs != ours[field]:
            raise DataError(f"{directory}: config.json has {field}={ours[field]}, its weights {field}={theirs} "
                            f"({evidence})")
    for name, shape in hf_shapes(c).items():
        if name not in shapes:
            raise DataError(f"{directory}: the weights lack {name}, which config.json's n_layer={c.n_layer} implies")
        if shapes[name] != shape:
            raise DataError(f"{directory}: {name} is {shapes[name]} in the weights, config.json's "
                            f"n_embd={c.n_embd} makes it {shape}")


def weights_file(directory: Path) -> Path:
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (directory / name).is_file():
            return directory / name
    raise DataError(f"{directory} holds neither model.safetensors nor pytorch_model.bin")


def weight_shapes(directory: Path) -> dict[str, tuple[int, ...]]:
    """The shape of each of the folder's tensors, from model.safetensors' header (or the memory-
    mapped pytorch_model.bin): no tensor data is read."""
    file = weights_file(directory)
    if file.name == "pytorch_model.bin":
        return {name: tuple(tensor.shape) for name, tensor in read_weights(directory).items()}
    from safetensors import safe_open

    with reading(file), safe_open(file, framework="pt") as f:
        return {name.removeprefix("transformer."): tuple(f.get_slice(name).get_shape()) for name in f.keys()}


def read_weights(directory: Path) -> dict[str, torch.Tensor]:
    """The folder's tensors, named without Hugging Face's optional 'transformer.' prefix (a
    pytorch_model.bin memory-mapped: read as used)."""
    file = weights_file(directory)
    with reading(file):
        if file.name == "model.safetensors":
            from safetensors.torch import load_file

            weights = load_file(file)
        else:
            weights = load_bin(file)
    return {name.removeprefix("transformer."): tensor for name, tensor in weights.items()}


def load_bin(file: Path) -> dict[str, torch.Tensor]:
    """pytorch_model.bin's state dict: plain tensor data only (torch.load's weights_only; a pickle
    that would run code is refused, see `unreadable`)."""
    try:
        weights = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as exc:
        if "mmap" not in str(exc):
            raise
        weights = torch.load(file, map_location="cpu", weights_only=True)  # torch's format before 1.6: no mmap
    if not isinstance(weights, dict) or not all(isinstance(k, str) and isinstance(t, torch.Tensor)
                                                for k, t in weights.items()):
        raise DataError(f"{file} holds a {type(weights).__name__}, not a state dict of tensors (names to tensors)")
    return weights


@contextmanager
def reading(file: Path) -> Iterator[None]:
    """Whatever reading the weights file raises is one DataError naming it (see `unreadable`)."""
    try:
        yield
    except DataError:
        raise
    except Exception as exc:  # safetensors, torch and pickle raise errors of their own by damage
        raise DataError(f"{file}: {unreadable(exc, file)}") from None


def unreadable(exc: Exception, file: Path) -> str:
    """Why the weights file cannot be read, in a clause: a pickle that would run code (torch.load
    refused it), damage (the first sentence of the library's message), or the OS's reason."""
    message = str(exc)
    code = re.search(r"GLOBAL ([\w.]+)", message)
    if "Weights only load failed" in message and code:
        return (f"refused: it is not plain tensor data but a pickle that would run code ({code.group(1)}): "
                f"get the model as model.safetensors, which holds tensors only")
    if isinstance(exc, OSError) and exc.strerror:
        return f"cannot be read ({exc.strerror})"
    if "Weights only load failed" in message:
        reason = "torch.load(weights_only=True) finds no tensor data"
    else:
        reason = message.splitlines()[0].removeprefix("Error while deserializing header: ").split(". ")[0][:120]
    kind = "safetensors" if file.suffix == ".safetensors" else "torch"
    return f"cannot be read: truncated, damaged or not a {kind} file ({reason or type(exc).__name__})"


def load_pretrained(name_or_dir: str | Path, dropout: float = 0.0, vocab_multiple: int = 64) -> GPT:
    """Our GPT with the weights of a Hugging Face GPT-2, in float32 on the CPU: a Path is the folder
    itself, a str a name or a folder (see `locate`). The config and the weights are checked against
    each other before the model is built (`read_config`)."""
    directory = name_or_dir if isinstance(name_or_dir, Path) else locate(name_or_dir)
    config = replace(read_config(directory), dropout=dropout, vocab_multiple=vocab_multiple)
    weights = read_weights(directory)
    check_values(directory, config, weights)
    model = GPT(config)
    with torch.no_grad():
        for key, param in model.state_dict().items():
            if key == "lm_head.weight":  # tied to the token table
                continue
            name = key.removeprefix("transformer.")
            tensor = weights[name].t() if key.endswith(CONV1D) else weights[name]
            target = param[:config.vocab_size] if key == "transformer.wte.weight" else param  # our table is padded
            target.copy_(tensor)
    return model


def check_values(directory: Path, c: GPTConfig, weights: dict[str, torch.Tensor]) -> None:
    """Refuse weights the model takes that are not floating point (other tensors, such as old
    files' attention-mask buffers, are not read), and a head (lm_head.weight) that is not the token
    table, which config.json ties to it (the head here is the token table: another would be dropped)."""
    for name in hf_shapes(c):
        tensor = weights[name]
        if not tensor.is_floating_point():
            raise DataError(f"{directory}: {name} holds {str(tensor.dtype).removeprefix('torch.')} values, "
                            f"not floating-point weights")
    head = weights.get("lm_head.weight")
    if head is not None and not torch.equal(head, weights["wte.weight"]):
        raise DataError(f"{directory}: lm_head.weight differs from wte.weight, but config.json ties them "
                        f"(tie_word_embeddings): this GPT-2 scores with its token table")


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
    files = {"model.safetensors": save(state, metadata={"format": "pt"}),
             "config.json": (json.dumps(hf_config(c), indent=2) + "\n").encode()}
    if tokenizer_files is not None:
        for ours, theirs in (("encoder.json", "vocab.json"), ("vocab.bpe", "merges.txt")):
            files[theirs] = (Path(tokenizer_files) / ours).read_bytes()
    write_together(Path(out), files)


def write_together(out: Path, files: dict[str, bytes]) -> None:
    """Write the files into the folder `out` all or none: each goes to a temporary file beside its
    place (gpt2.files.atomic_file) and is synced; only when every one is on disk are they renamed
    over what `out` held. A full disk, a missing source or Ctrl-C while writing leaves an earlier
    export in `out` as it was (only a kill between the renames, microseconds apart, could mix them)."""
    with ExitStack() as stack:
        for name, data in files.items():
            f = stack.enter_context(atomic_file(out / name))
            f.write(data)
            f.sync()  # every file on disk before any is renamed (an error names the file)


def hf_biases(c: GPTConfig) -> dict[str, int]:
    """Every bias Hugging Face's GPT-2 has, with its size (as the state dict names it)."""
    return {f"transformer.{name}": shape[0] for name, shape in hf_shapes(c).items() if name.endswith(".bias")}


def hf_config(c: GPTConfig) -> dict:
    return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": c.vocab_size,
            "n_positions": c.block_size, "n_ctx": c.block_size, "n_embd": c.n_embd, "n_layer": c.n_layer,
            "n_head": c.n_head, "n_inner": None,
            "activation_function": "gelu_new" if c.gelu_approximate == "tanh" else "gelu",
            "layer_norm_epsilon": 1e-5, "resid_pdrop": c.dropout, "embd_pdrop": c.dropout, "attn_pdrop": c.dropout,
            "initializer_range": 0.02, "bos_token_id": GPT2_VOCAB - 1, "eos_token_id": GPT2_VOCAB - 1,
            "tie_word_embeddings": True, "torch_dtype": "float32", "gpt2_harness": asdict(c)}
