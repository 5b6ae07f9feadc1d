"""nanoGPT's ckpt.pt format: recognised, its model_args as our GPTConfig, its state dict under our names."""

import torch

from gpt2.model.gpt import GPT, GPTConfig
from gpt2.model.nanogpt import is_nanogpt, nanogpt_config, nanogpt_tokenizer, nanogpt_weights

ARGS = {"n_layer": 1, "n_head": 2, "n_embd": 8, "block_size": 16, "bias": False, "vocab_size": 65, "dropout": 0.1}


def nanogpt_checkpoint(model: GPT, args: dict) -> dict:
    """What nanoGPT's train.py saves for this model: compiled (`_orig_mod.` names), the slow attention's
    mask buffers, its own vocabulary rows only."""
    state = {}
    for name, tensor in model.state_dict().items():
        rows = args["vocab_size"] if name in ("transformer.wte.weight", "lm_head.weight") else None
        state["_orig_mod." + name] = tensor[:rows] if rows else tensor
    for layer in range(args["n_layer"]):
        mask = torch.tril(torch.ones(args["block_size"], args["block_size"])).view(1, 1, args["block_size"], -1)
        state[f"_orig_mod.transformer.h.{layer}.attn.bias"] = mask
    return {"model": state, "model_args": dict(args), "optimizer": {}, "iter_num": 5000,
            "best_val_loss": torch.tensor(1.47), "config": {"dataset": "shakespeare_char"}}


def test_a_nanogpt_checkpoint_is_told_from_ours():
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=8, vocab_size=65, block_size=16, bias=False))
    ckpt = nanogpt_checkpoint(model, ARGS)
    assert is_nanogpt(ckpt)
    assert not is_nanogpt({**ckpt, "format_version": 3})  # ours
    assert not is_nanogpt({"model": {}, "model_args": {"n_layer": 1}})  # not its arguments
    assert not is_nanogpt(torch.zeros(3))


def test_its_arguments_and_weights_are_ours():
    assert nanogpt_config(ARGS) == GPTConfig(n_layer=1, n_head=2, n_embd=8, block_size=16, bias=False, vocab_size=65,
                                             dropout=0.0, gelu_approximate="none")
    assert nanogpt_config({**ARGS, "vocab_size": 50304}).vocab_size == 50257  # GPT-2's, padded by nanoGPT
    assert nanogpt_tokenizer({**ARGS, "vocab_size": 50304}) == {"name": "gpt2", "vocab_size": 50257}
    assert nanogpt_tokenizer(ARGS) is None  # a char model: its characters are in meta.pkl, not here
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=8, vocab_size=65, block_size=16, bias=False))
    weights = nanogpt_weights(nanogpt_checkpoint(model, ARGS))
    assert set(weights) == set(model.state_dict())  # prefixes stripped, masks dropped
    assert torch.equal(weights["transformer.wte.weight"], model.state_dict()["transformer.wte.weight"][:65])
