"""gpt2/train/step.py: `train_step` (gradient accumulation over micro-batches, clipping, the LR it
sets, the mean loss and pre-clip norm it returns), `FiniteGuard` (the first NaN/inf iteration) and
`grad_sync` outside torchrun. Models of one layer, width 16, on the CPU in float32."""

from __future__ import annotations

import copy
import math
from contextlib import nullcontext

import pytest
import torch
import torch.nn as nn

from gpt2.model.gpt import GPT, GPTConfig
from gpt2.train.runtime import Runtime
from gpt2.train.step import FiniteGuard, grad_sync, train_step

VOCAB, T, B = 32, 8, 4


@pytest.fixture(scope="module")
def rt() -> Runtime:
    return Runtime.create("cpu", "float32")


def tiny_gpt(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, vocab_size=VOCAB, block_size=T, bias=True))


def batch(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, VOCAB, (B, T + 1), generator=g)
    return tokens[:, :-1], tokens[:, 1:]


def params(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def full_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(loss, gradient of every parameter) of one whole-batch backward on a copy of the model."""
    twin = copy.deepcopy(model)
    _, loss = twin(x, y)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in twin.parameters()]


def test_two_half_batches_accumulated_update_as_the_whole_batch(rt):
    x, y = batch()
    whole, halves = tiny_gpt(), tiny_gpt()
    opt_whole = torch.optim.AdamW(whole.parameters(), lr=1e-2, weight_decay=0.1)
    opt_halves = torch.optim.AdamW(halves.parameters(), lr=1e-2, weight_decay=0.1)
    before = params(whole)
    loss1, norm1 = train_step(whole, opt_whole, iter([(x, y)]), rt, lr=1e-2, grad_accum=1, grad_clip=0.0)
    loss2, norm2 = train_step(halves, opt_halves, iter([(x[:2], y[:2]), (x[2:], y[2:])]), rt,
                              lr=1e-2, grad_accum=2, grad_clip=0.0)
    assert torch.allclose(loss1, loss2, atol=1e-6) and torch.allclose(norm1, norm2, rtol=1e-5)
    for a, b, old in zip(whole.parameters(), halves.parameters(), before):
        assert torch.allclose(a, b, atol=1e-6)
        assert not torch.equal(a, old)  # the step did move every parameter


def test_the_step_returns_the_mean_loss_before_the_update_and_clears_the_gradients(rt):
    model, (x, y) = tiny_gpt(), batch()
    expected_loss, grads = full_gradient(model, x, y)
    expected_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    loss, norm = train_step(model, opt, iter([(x[:2], y[:2]), (x[2:], y[2:])]), rt, lr=0.1, grad_accum=2,
                            grad_clip=0.0)
    assert loss.shape == () and torch.allclose(loss, expected_loss, atol=1e-6)
    assert torch.allclose(norm, expected_norm, rtol=1e-5)
    assert opt.param_groups[0]["lr"] == 0.1  # the step's LR, not the optimizer's initial one
    assert all(p.grad is None for p in model.parameters())


def test_the_step_reads_exactly_grad_accum_batches(rt):
    model, (x, y) = tiny_gpt(), batch()
    batches = iter([(x, y)] * 5)
    train_step(model, torch.optim.SGD(model.parameters(), lr=0.1), batches, rt, lr=0.1, grad_accum=3, grad_clip=1.0)
    assert len(list(batches)) == 2


@pytest.mark.parametrize("grad_clip", [1e-3, 0.05])
def test_clipping_bounds_the_update_and_returns_the_pre_clip_norm(rt, grad_clip):
    model, (x, y) = tiny_gpt(), batch()
    _, grads = full_gradient(model, x, y)
    pre_clip = math.sqrt(sum(float(g.pow(2).sum()) for g in grads))
    assert pre_clip > 10 * grad_clip  # the clip does bind
    before, lr = params(model), 2.0
    _, norm = train_step(model, torch.optim.SGD(model.parameters(), lr=lr), iter([(x, y)]), rt, lr=lr,
                         grad_accum=1, grad_clip=grad_clip)
    assert float(norm) == pytest.approx(pre_clip, rel=1e-5)
    steps = [(old - new.detach()) / lr for old, new in zip(before, model.parameters())]
    assert math.sqrt(sum(float(s.pow(2).sum()) for s in steps)) == pytest.approx(grad_clip, rel=1e-3)
    for s, g in zip(steps, grads):  # the same direction: every gradient scaled by grad_clip / norm
        assert torch.allclose(s, g * grad_clip / pre_clip, atol=1e-7)


def test_without_clipping_the_update_is_the_whole_gradient(rt):
    model, (x, y) = tiny_gpt(), batch()
    _, grads = full_gradient(model, x, y)
    before = params(model)
    train_step(model, torch.optim.SGD(model.parameters(), lr=1.0), iter([(x, y)]), rt, lr=1.0, grad_accum=1,
               grad_clip=0.0)
    for old, new, g in zip(before, model.parameters(), grads):
        assert torch.allclose(old - new.detach(), g, atol=1e-6)


@pytest.mark.parametrize("losses, first", [
    ([1.0, 2.0, 0.5], None),
    ([1.0, math.nan, 2.0], 1),
    ([math.inf, 1.0], 0),
    ([1.0, 2.0, -math.inf, math.nan], 2),
    ([1.0, math.nan, 1.0, math.nan, math.inf], 1),
    ([], None),
], ids=["all finite", "nan", "inf first", "-inf then nan", "later nan kept out", "no step"])
def test_finite_guard_keeps_the_first_bad_iteration(losses, first):
    guard = FiniteGuard(torch.device("cpu"))
    for iteration, loss in enumerate(losses):
        guard.update(torch.tensor(loss), iteration)
    assert guard.first() == first
    assert guard.first() == first  # asking does not reset it


def test_finite_guard_counts_the_iteration_numbers_given_not_calls():
    guard = FiniteGuard(torch.device("cpu"))
    guard.update(torch.tensor(3.0), 100)
    guard.update(torch.tensor(math.nan, dtype=torch.bfloat16), 250)
    guard.update(torch.tensor(math.nan), 300)
    assert guard.first() == 250


def test_grad_sync_on_a_plain_module_is_a_null_context_and_gradients_accumulate():
    model = nn.Linear(2, 1, bias=False)
    for sync in (False, True):
        context = grad_sync(model, sync)
        assert isinstance(context, nullcontext)
        with context:
            model(torch.ones(1, 2)).sum().backward()
    assert model.weight.grad.tolist() == [[2.0, 2.0]]  # both backwards counted, nothing synced away


class FakeDDP(nn.Linear):
    """A module with DDP's no_sync(), whose context says whether it is active."""

    def __init__(self):
        super().__init__(2, 1)
        self.syncing = True

    def no_sync(self):
        outer = self

        class NoSync:
            def __enter__(self):
                outer.syncing = False

            def __exit__(self, *exc):
                outer.syncing = True
        return NoSync()


def test_grad_sync_skips_the_reduction_on_every_micro_step_but_the_last():
    model = FakeDDP()
    seen = []
    for sync in (False, False, True):
        with grad_sync(model, sync):
            seen.append(model.syncing)
    assert seen == [False, False, True] and model.syncing


COMPILE_FIX = "install a working C/C++ compiler (gcc/g++) or set trainer.compile=false"


def compile_errors():
    """torch.compile's own errors as the first compiled step raises them: (error, its one line or None)."""
    from torch._dynamo.exc import BackendCompilerFailed
    from torch._inductor.exc import CppCompileError, InductorError, InvalidCxxCompiler

    no_header = CppCompileError(["g++", "k.cpp"], "k.cpp:1:10: fatal error: Python.h: No such file or directory\n"
                                                  "compilation terminated.")
    return [
        (InductorError(InvalidCxxCompiler("c++"), None),
         f"trainer.compile: torch.compile could not build its kernels (InvalidCxxCompiler: "
         f"{InvalidCxxCompiler('c++')}): {COMPILE_FIX}"),
        (BackendCompilerFailed(lambda: None, no_header, None),
         "trainer.compile: torch.compile could not build its kernels (CppCompileError: k.cpp:1:10: fatal error: "
         f"Python.h: No such file or directory): {COMPILE_FIX}"),
        (InductorError(torch.OutOfMemoryError("CUDA out of memory"), None), None),  # told as running out of memory
        (RuntimeError("shape mismatch"), None),  # any other error: its own traceback
    ]


@pytest.mark.parametrize("case", range(4), ids=["no C++ compiler", "a failed C++ compile", "out of memory",
                                              "another error"])
def test_a_compile_failure_at_the_first_step_is_one_line(rt, monkeypatch, case):
    from gpt2.errors import ConfigError
    from gpt2.train.runtime import is_out_of_memory

    error, line = compile_errors()[case]
    model = tiny_gpt()

    def compile_and_fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(model, "forward", compile_and_fail)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ConfigError if line else type(error)) as failed:
        train_step(model, optimizer, iter([batch()]), rt, 0.1, 1, 0.0)
    if line:
        assert str(failed.value) == line and failed.value.__cause__ is None
    else:
        assert failed.value is error and is_out_of_memory(error) == (case == 2)
