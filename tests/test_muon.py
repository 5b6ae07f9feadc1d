"""Muon: its update is orthogonal, it is torch.optim.Muon's to the bit, the model's parameters are
split between Muon and AdamW as nanochat splits them, and its state round-trips."""

import copy

import pytest
import torch

from gpt2.config import OptimConfig
from gpt2.model.gpt import GPT, GPTConfig
from gpt2.train.muon import Muon, MuonWithAdamW, muon_split, orthogonalise, scaled_lr
from gpt2.train.optim import build_optimizer, set_step

NS = ((3.4445, -4.7750, 2.0315), 5, 1e-7)


@pytest.mark.parametrize("shape", [(64, 128), (192, 64), (64, 256)])
def test_the_update_of_a_random_matrix_is_orthogonal(shape):
    """One step from a zero momentum: the update is the gradient orthogonalised, U V^T of its SVD up
    to the quintic iteration's spread of singular values (about 0.7 to 1.2; a square random matrix
    has singular values near 0, which five iterations do not lift, so the shapes are rectangular)."""
    torch.manual_seed(0)
    weight = torch.nn.Parameter(torch.zeros(shape))
    grad = torch.randn(shape)
    weight.grad = grad.clone()
    Muon([weight], lr=1.0, momentum=0.0, nesterov=False, weight_decay=0.0).step()
    update = -weight.detach() / scaled_lr(1.0, "original", torch.Size(shape))
    singular = torch.linalg.svdvals(update)
    assert singular.min() > 0.6 and singular.max() < 1.25, singular
    u, _, vt = torch.linalg.svd(grad, full_matrices=False)
    cosine = (update * (u @ vt)).sum() / (update.norm() * (u @ vt).norm())
    assert cosine > 0.95


def test_the_batched_step_is_torchs_muon_to_the_bit():
    torch.manual_seed(0)
    shapes = [(96, 32), (96, 32), (32, 32), (128, 32), (32, 128), (128, 32)]
    ours = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    a = Muon(ours, lr=0.02, weight_decay=0.01)
    b = torch.optim.Muon(theirs, lr=0.02, weight_decay=0.01)
    for _ in range(3):
        for p, q in zip(ours, theirs):
            p.grad = torch.randn_like(p)
            q.grad = p.grad.clone()
        a.step()
        b.step()
    for p, q in zip(ours, theirs):
        assert torch.equal(p, q)
    assert torch.equal(a.state[ours[0]]["momentum_buffer"], b.state[theirs[0]]["momentum_buffer"])


def test_orthogonalise_batches_and_keeps_the_shape():
    g = torch.randn(3, 40, 16)
    out = orthogonalise(g, *NS)
    assert out.shape == g.shape and out.dtype == torch.bfloat16
    for i in range(3):
        assert torch.equal(out[i], orthogonalise(g[i], *NS))  # one matrix alone: the same


@pytest.mark.parametrize("tied", [True, False])
def test_matrices_go_to_muon_and_everything_else_to_adamw(tied):
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=16, vocab_size=50, block_size=8, bias=True,
                          tie_embeddings=tied))
    matrices, embeddings, head, vectors = muon_split(model)
    names = {id(p): n for n, p in model.named_parameters()}
    assert sorted(names[id(p)] for p in matrices) == sorted(
        f"transformer.h.{i}.{m}.weight" for i in range(2) for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc",
                                                                     "mlp.c_proj"))
    assert sorted(names[id(p)] for p in embeddings) == ["transformer.wpe.weight", "transformer.wte.weight"]
    assert [names[id(p)] for p in head] == ([] if tied else ["lm_head.weight"])
    assert all(p.dim() == 1 for p in vectors) and len(vectors) == 2 * 8 + 2  # biases and LayerNorm gains
    opt = build_optimizer(model, OptimConfig(name="muon", lr=1e-3, muon_lr=0.02, embedding_lr=0.01, head_lr=0.004),
                          torch.device("cpu"))
    assert isinstance(opt, MuonWithAdamW) and isinstance(opt.muon, torch.optim.Muon)
    assert {id(p) for g in opt.muon.param_groups for p in g["params"]} == {id(p) for p in matrices}
    set_step(opt, 0, 2e-3)  # the schedule's LR for optim.lr; every group in proportion
    lrs = sorted(round(g["lr"], 9) for g in opt.param_groups)
    assert lrs == sorted([0.04, 0.02, 2e-3] + ([] if tied else [0.008]))


def test_the_momentum_warms_up_linearly():
    model = GPT(GPTConfig(n_layer=1, n_head=1, n_embd=8, vocab_size=20, block_size=4))
    opt = build_optimizer(model, OptimConfig(name="muon", muon_momentum_start=0.85, muon_momentum=0.95,
                                             muon_momentum_warmup=100), torch.device("cpu"))
    momentum = []
    for step in (0, 50, 100, 500):
        set_step(opt, step, 1e-3)
        momentum.append(opt.muon.param_groups[0]["momentum"])
    assert momentum == pytest.approx([0.85, 0.90, 0.95, 0.95])


def test_the_state_round_trips():
    """A second optimizer loaded from the first's state_dict steps to the same weights."""
    def model():
        torch.manual_seed(0)
        return GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, vocab_size=30, block_size=8, tie_embeddings=False))

    cfg = OptimConfig(name="muon")
    a, b = model(), model()
    opt_a, opt_b = build_optimizer(a, cfg, torch.device("cpu")), build_optimizer(b, cfg, torch.device("cpu"))
    x = torch.randint(0, 30, (2, 8))
    for step in range(3):
        set_step(opt_a, step, 1e-3)
        a(x, x)[1].backward()
        opt_a.step()
        opt_a.zero_grad()
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))  # as from a file: not the same tensors
    b.load_state_dict(a.state_dict())
    for m, opt in ((a, opt_a), (b, opt_b)):
        set_step(opt, 3, 1e-3)
        m(x, x)[1].backward()
        opt.step()
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), name
