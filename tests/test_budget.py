"""The memory estimate (gpt2/train/budget.py): exact parameter and optimizer-state counts, and the one
line that refuses a run which cannot fit (or explains running out of memory), naming the largest part
and the setting that makes it. Nothing large is ever allocated here: the estimate is arithmetic."""

import itertools
import logging

import pytest
import torch

from gpt2.config import Config, DataConfig, ModelConfig, OptimConfig, TrainerConfig
from gpt2.errors import HarnessError
from gpt2.model.gpt import GPT, GPTConfig
from gpt2.train import budget
from gpt2.train.optim import build_optimizer
from gpt2.train.parts import gpt_config

GiB = 2 ** 30
CPU = torch.device("cpu")


def config(data=(), model=(), optim=(), trainer=()) -> Config:
    return Config(data=DataConfig(**dict(data)), model=ModelConfig(**dict(model)), optim=OptimConfig(**dict(optim)),
                  trainer=TrainerConfig(**dict(trainer)))


def footprint(cfg: Config, vocab: int = 50257, dtype=torch.float32) -> budget.Footprint:
    return budget.estimate(gpt_config(cfg, vocab), cfg, CPU, dtype)


SHAPES = [dict(zip(("bias", "rotary", "norm", "tie_embeddings", "activation", "qk_norm"), values)) for values in
          itertools.product((True, False), (True, False), ("layernorm", "rmsnorm"), (True, False), ("gelu",), (False,))]
SHAPES += [dict(activation="relu2", qk_norm=True, norm="rmsnorm", rotary=True, tie_embeddings=False)]


@pytest.mark.parametrize("options", SHAPES, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_the_parameter_count_is_the_built_models(options):
    shape = GPTConfig(n_layer=2, n_head=2, n_embd=16, vocab_size=70, block_size=8, **options)
    assert sum(budget.parameter_counts(shape).values()) == GPT(shape).num_params(non_embedding=False)


@pytest.mark.parametrize("name", ["adamw", "muon"])
def test_the_state_is_the_weights_gradients_and_optimizer_state_after_a_step(name):
    torch.manual_seed(0)
    shape = GPTConfig(n_layer=2, n_head=2, n_embd=16, vocab_size=70, block_size=8, bias=False, tie_embeddings=False)
    model = GPT(shape)
    optimizer = build_optimizer(model, OptimConfig(name=name), CPU)
    x = torch.randint(0, 70, (2, 8))
    model(x, x)[1].backward()
    optimizer.step()
    tensors = [t for p in model.parameters() for t in (p, p.grad)]
    optimizers = {id(o): o for o in (getattr(optimizer, "muon", optimizer), getattr(optimizer, "adamw", optimizer))}
    states = [state for opt in optimizers.values() for state in opt.state.values()]
    tensors += [t for state in states for t in state.values() if torch.is_tensor(t) and t.numel() > 1]  # not `step`
    expected = sum(t.numel() * t.element_size() for t in {id(t): t for t in tensors}.values())
    assert budget.state_bytes(shape, budget.parameter_counts(shape), name) == expected


TO_BATCH = "data.batch_size (raise trainer.grad_accum to keep the batch)"
REFUSED = [  # (settings, the line with 16 GiB available: float32 on the cpu)
    ({"model": {"n_layer": 10000}},
     f"model.n_layer=10000 needs ~92.0 GiB to train (block activations of one micro-batch: 62.3 GiB), but cpu has "
     f"16.0 GiB available: lower model.n_layer, data.block_size, {TO_BATCH} or model.n_embd"),
    ({"data": {"block_size": 1_000_000}},
     f"data.block_size=1000000 needs ~4,889 GiB to train (logits of one micro-batch over 50304 tokens: 4,498 GiB), "
     f"but cpu has 16.0 GiB available: lower data.block_size or {TO_BATCH}"),
    ({"data": {"batch_size": 4096, "block_size": 1024}},
     f"data.batch_size=4096 x data.block_size=1024 needs ~1,708 GiB to train (logits of one micro-batch over 50304 "
     f"tokens: 1,572 GiB), but cpu has 16.0 GiB available: lower {TO_BATCH} or data.block_size"),
    ({"model": {"n_embd": 65536, "n_head": 2, "n_layer": 1}},
     "model.n_embd=65536 needs ~821 GiB to train (weights, gradients and AdamW state of 54.84B parameters, most in "
     "the blocks: 817 GiB), but cpu has 16.0 GiB available: lower model.n_embd or model.n_layer"),
    ({"model": {"block_size": 100_000_000}},
     "model.block_size=100000000 needs ~191 GiB to train (weights, gradients and AdamW state of 12.81B parameters, "
     "most in the position table: 191 GiB), but cpu has 16.0 GiB available: set model.rotary=true (no position "
     "table), or lower model.block_size"),
    ({"data": {"block_size": 8192}, "trainer": {"attention": "math"}},
     f"data.block_size=8192 needs ~136 GiB to train (attention scores of one micro-batch: 96.0 GiB), but cpu has "
     f"16.0 GiB available: use trainer.attention=auto (a fused kernel keeps no scores), or lower data.block_size or "
     f"{TO_BATCH}"),
    ({"data": {"block_size": 8192}, "model": {"dropout": 0.1}},
     f"data.block_size=8192 needs ~136 GiB to train (attention scores of one micro-batch: 96.0 GiB), but cpu has "
     f"16.0 GiB available: set model.dropout=0 (the cpu's flash kernel has no dropout), or lower data.block_size or "
     f"{TO_BATCH}"),
]


@pytest.mark.parametrize("settings, line", REFUSED, ids=[str(case[0]) for case in REFUSED])
def test_a_run_that_cannot_fit_is_refused_naming_its_largest_part_and_setting(settings, line):
    cfg = config(**settings)
    with pytest.raises(HarnessError) as refused:
        budget.plan(footprint(cfg), cfg, CPU, 16 * GiB)
    assert str(refused.value) == line


def test_a_run_that_fits_passes_and_one_near_the_limit_is_a_warning(caplog):
    cfg = config()
    fp = footprint(cfg)
    with caplog.at_level(logging.INFO, logger="gpt2.train.budget"):
        budget.plan(fp, cfg, CPU, 100 * fp.total)
        budget.plan(fp, cfg, CPU, None)  # unknown (MPS): nothing checked
        assert caplog.records == []
        budget.plan(fp, cfg, CPU, int(1.5 * fp.total))
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert caplog.records[0].getMessage() == (
        "data.block_size=64 needs ~431 MiB to train (logits of one micro-batch over 50304 tokens: 295 MiB), 67% of the "
        f"646 MiB available on cpu: it may run out of memory (the estimate is a lower bound); if it does, lower "
        f"data.block_size or {TO_BATCH}")


def test_a_large_model_says_what_it_builds(caplog):
    cfg = config(model={"n_layer": 24, "n_embd": 1024, "n_head": 16})
    with caplog.at_level(logging.INFO, logger="gpt2.train.budget"):
        budget.plan(footprint(cfg), cfg, CPU, 10 ** 15)
    assert caplog.records[-1].getMessage() == "building a 353.6M-parameter model on cpu (~6.8 GiB to train by estimate)"


@pytest.mark.parametrize("settings, dtype, part", [
    ({}, torch.float32, "logits of one micro-batch over 50304 tokens: 295 MiB"),  # the default run: logits lead
    ({}, torch.bfloat16, "logits of one micro-batch over 50304 tokens: 221 MiB"),  # 2 bytes + fp32 log-softmax
    ({"data": {"tokenizer": "char", "block_size": 1024, "batch_size": 8}}, torch.float32,
     "block activations of one micro-batch: 272 MiB"),  # 17 values x 8 x 1024 x 128 x 4 layers x 4 bytes
])
def test_out_of_memory_names_the_largest_part_of_the_same_estimate(settings, dtype, part):
    cfg = config(**settings)
    fp = budget.estimate(gpt_config(cfg, 65 if settings else 50257), cfg, CPU, dtype)
    line = str(budget.out_of_memory(fp, cfg, CPU, "in iteration 3"))
    assert line.startswith("out of memory on cpu in iteration 3 (") and f"({part})" in line


def test_fsdp_shares_the_state_and_the_batch_over_the_processes():
    cfg = config(data={"batch_size": 8}, trainer={"parallel": "fsdp"})
    one, four = footprint(cfg), budget.estimate(gpt_config(cfg, 50257), cfg, CPU, torch.float32, world_size=4)
    assert four.state == one.state // 4 and four.batch == 2
    assert four.activations["logits"] == one.activations["logits"] // 4


def test_the_available_memory_of_the_cpu_is_what_linux_says():
    available = budget.available_bytes(CPU)
    total = int(open("/proc/meminfo").read().split("MemTotal:")[1].split()[0]) * 1024
    assert 0 < available <= total
    assert budget.available_bytes(torch.device("mps")) is None
