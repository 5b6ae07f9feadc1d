
import pytest
import torch

from gpt2.config import ModelConfig, OptimConfig
from gpt2.model import GPT
from gpt2.optim import build_optimizer, get_lr, param_groups


def test_lr_schedule_warmup_cosine_floor():
    cfg = OptimConfig(lr=1e-3, min_lr=1e-4, warmup_iters=100, lr_decay_iters=2000)
    assert get_lr(0, cfg) == pytest.approx(1e-3 / 101)
    assert get_lr(99, cfg) == pytest.approx(1e-3 * 100 / 101)
    assert get_lr(100, cfg) == pytest.approx(1e-3)
    assert get_lr(1050, cfg) == pytest.approx((1e-3 + 1e-4) / 2)  # half way down the cosine
    assert get_lr(2000, cfg) == pytest.approx(1e-4)
    assert get_lr(5000, cfg) == pytest.approx(1e-4)
    lrs = [get_lr(i, cfg) for i in range(100, 2001)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))  # monotone decay


def test_constant_lr():
    assert get_lr(7, OptimConfig(decay_lr=False, lr=0.3, min_lr=0.1)) == 0.3


def test_weight_decay_only_on_2d_weights():
    model = GPT(ModelConfig(n_layer=2, n_head=2, n_embd=16, bias=True), vocab_size=50, block_size=8)
    decay, no_decay = param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() == 2 for p in decay["params"]) and all(p.dim() == 1 for p in no_decay["params"])
    assert sum(p.numel() for g in (decay, no_decay) for p in g["params"]) == model.num_params(False)
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)] for p in no_decay["params"]} >= {"transformer.ln_f.weight", "transformer.h.0.attn.c_attn.bias"}


def test_optimizer_uses_the_config():
    model = GPT(ModelConfig(n_layer=1, n_head=1, n_embd=8), vocab_size=10, block_size=4)
    opt = build_optimizer(model, OptimConfig(lr=0.01, beta1=0.8, beta2=0.95), torch.device("cpu"))
    assert isinstance(opt, torch.optim.AdamW)
    assert opt.param_groups[0]["betas"] == (0.8, 0.95) and opt.param_groups[0]["lr"] == 0.01
