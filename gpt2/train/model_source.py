"""Where a model's weights come from, for `model.init_from`, scripts/evaluate.py and scripts/sample.py:
OpenAI's GPT-2 by name or a Hugging Face GPT-2 folder, a run directory of ours (its ckpt/best.pt, else
ckpt/last.pt), one of our checkpoints, or a nanoGPT ckpt.pt. `open_model` reads what it is (the
architecture, the tokenizer, the training config), `make_model` builds it with its weights, and
`check_tokenizer` refuses data in other tokens in one line.

Only the weights are taken: a run started from a checkpoint has a fresh optimizer, schedule and data
position (trainer.resume continues a run; model.init_from starts a new one).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

import torch

from gpt2.errors import CheckpointError, ConfigError
from gpt2.model.gpt import GPT, GPTConfig
from gpt2.model.nanogpt import is_nanogpt, nanogpt_config, nanogpt_fault, nanogpt_tokenizer, nanogpt_weights
from gpt2.model.pretrained import GPT2_VOCAB, HF_NAMES, load_pretrained, locate, read_config
from gpt2.train.checkpoint import check_weights, checkpoint_of, harness_checkpoint, model_config, read_torch_file

log = logging.getLogger(__name__)

GPT2_TOKENS = {"name": "gpt2", "vocab_size": GPT2_VOCAB}


@dataclass
class ModelSource:
    name: str
    """What the user wrote (model.init_from's value, a script's argument)."""
    kind: str
    """'huggingface', 'gpt2-harness' or 'nanogpt'."""
    path: Path
    """The folder (huggingface) or the checkpoint file."""
    config: GPTConfig
    tokenizer: Optional[dict]
    """The tokenizer's state (see gpt2/data/tokenizer.py); None: unrecorded (a nanoGPT char model)."""
    weights: Optional[dict] = None
    """A checkpoint's state dict (a Hugging Face folder's weights are read by load_pretrained)."""
    train_config: Optional[dict] = None
    """Our checkpoint's config (to_dict), e.g. for evaluating on the data it was trained on."""
    iteration: Optional[int] = None


def open_model(name: str | Path) -> ModelSource:
    """What `name` holds. A known Hub name (a str: gpt2, gpt2-medium, ...) is fetched; a folder with a
    config.json is a Hugging Face folder; a run directory gives its best.pt, else last.pt."""
    path, hub = Path(name).expanduser(), isinstance(name, str) and name in HF_NAMES
    if hub or (path.is_dir() and (path / "config.json").is_file()):
        folder = locate(name) if hub else path
        return ModelSource(str(name), "huggingface", folder, read_config(folder), GPT2_TOKENS)
    name = str(name)
    if not path.exists():
        raise ConfigError(f"{name}: no such file or folder (a run directory, a .pt checkpoint, a Hugging Face "
                          f"GPT-2 folder, or one of {', '.join(HF_NAMES)})")
    file = checkpoint_of(path)
    state = read_torch_file(file)
    if isinstance(state, dict) and "model" in state and "format_version" not in state:
        return nanogpt_source(name, file, state)
    state = harness_checkpoint(file, state)  # checked: its weights fit the architecture it records
    return ModelSource(name, "gpt2-harness", file, GPTConfig(**state["model_args"]), state["tokenizer"],
                       state["model"], state["config"], state["iter"])


def nanogpt_source(name: str, file: Path, state: dict) -> ModelSource:
    """A nanoGPT ckpt.pt (its weights are checked against its model_args by `make_model`)."""
    if not is_nanogpt(state):
        raise CheckpointError(f"{file} is neither a gpt2-harness checkpoint nor a whole nanoGPT ckpt.pt "
                              f"({nanogpt_fault(state)})")
    args, iteration = state["model_args"], state.get("iter_num")
    return ModelSource(name, "nanogpt", file, model_config(file, args, nanogpt_config), nanogpt_tokenizer(args),
                       nanogpt_weights(state), iteration=iteration if isinstance(iteration, int) else None)


def make_model(source: ModelSource, dropout: float = 0.0, vocab_multiple: Optional[int] = None) -> GPT:
    """The model with the source's weights, in float32 on the CPU, in training mode; vocab_multiple
    applies to a Hugging Face folder (a checkpoint's table keeps its padding)."""
    if source.kind == "huggingface":
        return load_pretrained(source.path, dropout=dropout, vocab_multiple=vocab_multiple or 64)
    model = GPT(replace(source.config, dropout=dropout))
    load_weights(model, source.weights, source.path)
    return model


def load_weights(model: GPT, weights: dict, path: Path) -> None:
    """Copy a checkpoint's tensors into the model: every parameter must be there with its shape; a
    token table may be padded to another multiple (the rows past the vocabulary are never scored)."""
    check_weights(path, weights, model, exact=False)
    vocab = model.config.vocab_size
    with torch.no_grad():
        for key, param in model.state_dict().items():
            if key not in weights:
                continue
            tensor = weights[key]
            if tensor.shape != param.shape:  # a token table padded to another multiple
                param, tensor = param[:vocab], tensor[:vocab]
            param.copy_(tensor)


def check_tokenizer(source: ModelSource, encoder, option: Optional[str] = None) -> None:
    """Refuse data in other tokens than the model's in one line (`option`: the setting that named the
    model, e.g. model.init_from)."""
    data, who = encoder.state(), f"{option}={source.name}" if option else source.name
    theirs = source.tokenizer
    if theirs is None:  # nanoGPT's char model: its characters are not in the checkpoint
        if data["name"] != "char" or data["vocab_size"] != source.config.vocab_size:
            raise ConfigError(f"{who} is a nanoGPT model of {source.config.vocab_size} characters; "
                              f"the data has {data['vocab_size']} {data['name']} tokens: use its text with "
                              f"data.tokenizer=char")
        log.info("%s: nanoGPT records no characters; taking the data's %d sorted characters (nanoGPT's "
                 "prepare.py makes the same vocabulary from the same text)", source.name, data["vocab_size"])
        return
    if theirs["name"] != data["name"]:
        raise ConfigError(f"{who} scores {theirs['name']} tokens, the data is in {data['name']} "
                          f"tokens: use data.tokenizer={theirs['name']}")
    if theirs["name"] == "char" and theirs["chars"] != data["chars"]:
        raise ConfigError(f"{who} knows {len(theirs['chars'])} characters, the data has "
                          f"{len(data['chars'])}{char_difference(theirs['chars'], data['chars'])}: a char model "
                          f"takes text over exactly its vocabulary")


def char_difference(model_chars: str, data_chars: str) -> str:
    """', not in the model: 'xyz'; only in the model: 'ab'' (repr'd, at most 10 of each)."""
    new = "".join(sorted(set(data_chars) - set(model_chars)))
    gone = "".join(sorted(set(model_chars) - set(data_chars)))
    return ((f" (not in the model: {new[:10]!r})" if new else "") + (f" (unused by the data: {gone[:10]!r})"
                                                                       if gone else ""))
