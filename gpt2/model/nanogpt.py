"""nanoGPT's checkpoint format (karpathy/nanoGPT's train.py writes out/ckpt.pt) read as our GPT.

A nanoGPT ckpt.pt holds `model_args` (n_layer, n_head, n_embd, block_size, bias, vocab_size, dropout)
and `model`, a state dict with GPT-2's parameter names, which are ours: only torch.compile's
`_orig_mod.` prefixes and the causal-mask buffers of its slow attention path (`attn.bias`) differ.
GPT-2 runs pad the vocabulary to 50304 there; our table pads 50257 to the same size.
"""

from __future__ import annotations

from typing import Optional

import torch

from gpt2.model.gpt import GPTConfig
from gpt2.model.pretrained import GPT2_VOCAB

GPT2_PADDED = 50304
"""nanoGPT's vocab_size for GPT-2 tokens (GPT2_VOCAB rounded up to a multiple of 64)."""
ARGS = ("n_layer", "n_head", "n_embd", "block_size", "bias", "vocab_size")


def is_nanogpt(state: object) -> bool:
    """Whether a loaded .pt file is a nanoGPT checkpoint (and not one of ours, which has format_version)."""
    return isinstance(state, dict) and "format_version" not in state and not nanogpt_fault(state)


def nanogpt_fault(state: dict) -> str:
    """What keeps a dict with a `model` from being a whole nanoGPT checkpoint ('' for one that is)."""
    if not isinstance(state.get("model"), dict):
        return f"its model is a {type(state.get('model')).__name__}, not a dict of tensors"
    args = state.get("model_args")
    if not isinstance(args, dict):
        return "it has no model_args" if args is None else f"its model_args is a {type(args).__name__}, not a dict"
    missing = [k for k in ARGS if k not in args]
    return f"its model_args lack {', '.join(missing)}" if missing else ""


def nanogpt_config(model_args: dict) -> GPTConfig:
    """Our GPTConfig of a nanoGPT model (exact GELU, GPT-2's block, tied head)."""
    vocab = model_args["vocab_size"]
    return GPTConfig(n_layer=model_args["n_layer"], n_head=model_args["n_head"], n_embd=model_args["n_embd"],
                     block_size=model_args["block_size"], bias=bool(model_args["bias"]),
                     vocab_size=GPT2_VOCAB if vocab == GPT2_PADDED else vocab, dropout=0.0)


def nanogpt_tokenizer(model_args: dict) -> Optional[dict]:
    """The tokenizer a nanoGPT model was trained with, as far as its checkpoint says: GPT-2's for a
    50304 or 50257 vocabulary; None otherwise (a char model: its characters live in the data's
    meta.pkl, not in the checkpoint)."""
    if model_args["vocab_size"] in (GPT2_PADDED, GPT2_VOCAB):
        return {"name": "gpt2", "vocab_size": GPT2_VOCAB}
    return None


def nanogpt_weights(state: dict) -> dict[str, torch.Tensor]:
    """The state dict under our names: `_orig_mod.` stripped, the causal-mask buffers dropped (anything
    else is kept as it is, for the caller to check against the architecture)."""
    weights = {}
    for name, tensor in state["model"].items():
        name = str(name).replace("_orig_mod.", "")
        if name.endswith(".attn.bias") and isinstance(tensor, torch.Tensor) and tensor.dim() == 4:  # nanoGPT's
            continue  # mask buffer without flash attention
        weights[name] = tensor
    return weights
