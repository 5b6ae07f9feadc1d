import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from gpt2.model.gpt import GPT, GPTConfig


def small(vocab_size=65, block_size=16, **kw) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(**{"n_layer": 2, "n_head": 2, "n_embd": 32, "bias": False, "vocab_size": vocab_size,
                            "block_size": block_size, **kw}))


@pytest.mark.slow
def test_model_module_stands_alone():
    """gpt2.model.gpt imports torch only: no Hydra, no OmegaConf, no other module of the harness."""
    code = ("import sys, gpt2.model.gpt; print(' '.join(sorted(m for m in sys.modules "
            "if m.split('.')[0] in ('gpt2', 'hydra', 'omegaconf', 'tiktoken', 'wandb'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["gpt2", "gpt2.model", "gpt2.model.gpt"]  # the packages, docstrings only


def test_gpt_config_defaults_are_gpt2_small_and_checked():
    config = GPTConfig()
    assert (config.n_layer, config.n_head, config.n_embd, config.vocab_size, config.block_size, config.bias) == (
        12, 12, 768, 50257, 1024, True)
    assert config.padded_vocab_size == 50304
    with pytest.raises(ValueError, match=r"n_embd \(768\) must be divisible by n_head \(5\)"):
        GPTConfig(n_head=5)
    with pytest.raises(ValueError, match="block_size must be >= 1"):
        GPTConfig(block_size=0)


def test_crop_block_size_keeps_the_first_positions():
    model = small(block_size=32).eval()
    x = torch.randint(0, 65, (2, 8))
    before, _ = model(x, x)
    wpe = model.transformer.wpe.weight[:8].detach().clone()
    model.crop_block_size(8)
    assert model.block_size == model.config.block_size == 8
    assert model.transformer.wpe.weight.shape == (8, 32) and torch.equal(model.transformer.wpe.weight, wpe)
    after, _ = model(x, x)
    assert torch.equal(before, after)  # the same function on sequences that fit
    with pytest.raises(ValueError, match="longer than block_size 8"):
        model(torch.zeros((1, 9), dtype=torch.long))
    with pytest.raises(ValueError, match="between 1 and the model's block_size 8"):
        model.crop_block_size(16)


def test_cropping_one_model_leaves_another_with_the_same_config():
    config = GPTConfig(n_layer=1, n_head=2, n_embd=32, vocab_size=50, block_size=32)
    a, b = GPT(config), GPT(config)
    a.crop_block_size(8)
    assert (a.block_size, b.block_size, config.block_size) == (8, 32, 32)
    b(torch.zeros((1, 16), dtype=torch.long))


def test_gpt2_small_parameter_count():
    with torch.device("meta"):
        model = GPT(GPTConfig())
    assert model.padded_vocab_size == 50304
    assert model.num_params(non_embedding=False) == 124_475_904  # 124,439,808 + 47 padded rows
    assert model.num_params() == 124_475_904 - 1024 * 768


def test_gpt2_parameter_names():
    names = set(small(bias=True).state_dict())
    for name in ["transformer.wte.weight", "transformer.wpe.weight", "transformer.ln_f.weight",
                 "transformer.h.0.ln_1.weight", "transformer.h.0.attn.c_attn.weight",
                 "transformer.h.0.attn.c_attn.bias", "transformer.h.0.attn.c_proj.weight",
                 "transformer.h.1.ln_2.bias", "transformer.h.1.mlp.c_fc.weight",
                 "transformer.h.1.mlp.c_proj.weight", "lm_head.weight"]:
        assert name in names


def test_tied_embeddings_and_padded_vocab():
    model = small(vocab_size=65)
    assert model.lm_head.weight is model.transformer.wte.weight
    assert model.transformer.wte.weight.shape == (128, 32)


def test_residual_projections_use_scaled_init():
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=8, n_head=4, n_embd=256, vocab_size=100, block_size=8))
    c_proj = model.transformer.h[0].mlp.c_proj.weight
    c_fc = model.transformer.h[0].mlp.c_fc.weight
    assert c_proj.std().item() == pytest.approx(0.02 / math.sqrt(16), rel=0.05)
    assert c_fc.std().item() == pytest.approx(0.02, rel=0.05)


def test_padded_logits_are_never_scored():
    model = small(vocab_size=65)
    x, y = torch.randint(0, 65, (3, 16)), torch.randint(0, 65, (3, 16))
    logits, loss = model(x, y)
    assert logits.shape == (3, 16, 65)
    assert loss.item() == pytest.approx(F.cross_entropy(logits.reshape(-1, 65), y.reshape(-1)).item())
    with torch.no_grad():
        model.lm_head.weight[65:] = 100.0  # padded rows: would dominate the softmax if scored
    _, loss_after = model(x, y)
    assert loss_after.item() == pytest.approx(loss.item())


def test_generate_never_samples_padded_ids():
    model = small(vocab_size=65).eval()
    with torch.no_grad():
        model.lm_head.weight[65:] = 100.0
    out = model.generate(torch.zeros((2, 1), dtype=torch.long), 30, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 31) and int(out.max()) < 65


def test_attention_is_causal():
    model = small().eval()
    x = torch.randint(0, 65, (1, 16))
    x2 = x.clone()
    x2[0, 10] = (x[0, 10] + 1) % 65
    a, _ = model(x, x)
    b, _ = model(x2, x2)
    assert torch.allclose(a[0, :10], b[0, :10], atol=1e-6)
    assert not torch.allclose(a[0, 10:], b[0, 10:])


def test_initial_loss_is_near_uniform():
    model = small(vocab_size=65)
    _, loss = model(torch.randint(0, 65, (4, 16)), torch.randint(0, 65, (4, 16)))
    assert loss.item() == pytest.approx(math.log(65), abs=0.1)


def test_dropout_only_in_training():
    model = small(dropout=0.5)
    x = torch.randint(0, 65, (2, 16))
    model.eval()
    assert torch.equal(model(x, x)[0], model(x, x)[0])
    model.train()
    assert not torch.equal(model(x, x)[0], model(x, x)[0])


def test_too_long_sequence():
    with pytest.raises(ValueError, match="longer than block_size 16"):
        small()(torch.zeros((1, 17), dtype=torch.long))


def small_model(block_size=16, vocab=65, **options):
    torch.manual_seed(0)
    return GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, vocab_size=vocab, block_size=block_size, bias=False,
                         **options)).eval()


# the modern block without zero_init (a zero-initialised model's logits are all equal: greedy ties)
MODERN = dict(rotary=True, norm="rmsnorm", qk_norm=True, activation="relu2", tie_embeddings=False,
              logit_softcap=15.0)


@pytest.mark.parametrize("options", [{}, {"rotary": True}, MODERN], ids=["gpt2", "rotary", "modern"])
def test_cached_logits_equal_the_full_forward(options):
    """Prefill, then token by token, then a chunk of three: every position's logits as the whole
    sequence's forward gives them (the cache's causal mask is aligned to the cached positions, and
    rotary positions start at the cached length)."""
    from gpt2.model.gpt import KVCache

    model, idx = small_model(**options), torch.randint(0, 65, (2, 12))
    full = torch.cat([model(idx[:, : t + 1])[0] for t in range(12)], dim=1)  # last-position logits
    cache, got = KVCache(model.config), []
    for start, end in ((0, 5), (5, 6), (6, 7), (7, 10), (10, 12)):
        got.append(model(idx[:, start:end], cache=cache)[0])
        assert cache.length == end
    assert torch.allclose(torch.cat(got, dim=1), full[:, [4, 5, 6, 9, 11]], atol=1e-5)
    with pytest.raises(ValueError, match="longer than block_size 16"):
        model(torch.zeros((2, 5), dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="reset\\(\\) it before another batch size"):
        model(idx[:1, :1], cache=cache)  # a cache of a batch of 2 never serves a batch of 1 silently
    cache.reset()
    assert torch.allclose(model(idx[:1, :3], cache=cache)[0], full[:1, [2]], atol=1e-5)


@pytest.mark.parametrize("options", [{}, MODERN], ids=["gpt2", "modern"])
@pytest.mark.parametrize("prompt_length", [1, 7, 16, 40])
def test_greedy_decoding_is_identical_with_and_without_the_cache(prompt_length, options):
    """Prompts shorter than, as long as and longer than the 16-token context, 60 new tokens (past
    the context: the window restarts from its last half, with or without the cache)."""
    model, idx = small_model(**options), torch.randint(0, 65, (3, prompt_length))
    cached = model.generate(idx, 60, temperature=0)
    assert torch.equal(cached, model.generate(idx, 60, temperature=0, use_cache=False))
    assert torch.equal(cached[:, :prompt_length], idx) and cached.shape == (3, prompt_length + 60)


def test_greedy_is_the_most_likely_token_and_top_p_keeps_the_likeliest():
    from gpt2.model.gpt import next_token

    logits = torch.tensor([[0.0, 3.0, 2.0, -1.0], [5.0, 0.0, 0.0, 0.0]])
    assert next_token(logits, temperature=0).tolist() == [[1], [0]]
    g = torch.Generator().manual_seed(0)
    # top_p=0.5: token 1 alone holds 0.67 of row 0's probability, token 0 0.98 of row 1's
    draws = torch.cat([next_token(logits, 1.0, top_p=0.5, generator=g) for _ in range(200)], dim=1)
    assert set(draws[0].tolist()) == {1} and set(draws[1].tolist()) == {0}
    draws = torch.cat([next_token(logits, 1.0, top_k=2, generator=g) for _ in range(200)], dim=1)
    assert set(draws[0].tolist()) == {1, 2}


def test_sampling_draws_what_torch_multinomial_draws():
    """next_token's draw is torch.multinomial's (the same ids from the same generator), with top-k
    and temperature applied first; and the frequencies follow the probabilities."""
    from gpt2.model.gpt import next_token

    logits = torch.randn(4, 65, generator=torch.Generator().manual_seed(1))
    for top_k in (None, 5, 65, 200):
        mine, ref = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
        scaled = logits / 0.8
        if top_k and top_k < 65:
            scaled = scaled.masked_fill(scaled < torch.topk(scaled, top_k).values[:, -1:], float("-inf"))
        for _ in range(20):
            expected = torch.multinomial(F.softmax(scaled, dim=-1), 1, generator=ref)
            assert torch.equal(next_token(logits, 0.8, top_k, generator=mine), expected)
    g = torch.Generator().manual_seed(0)
    draws = torch.cat([next_token(torch.log(torch.tensor([[0.7, 0.2, 0.1]])), generator=g) for _ in range(4000)])
    assert torch.bincount(draws.flatten(), minlength=3).div(4000).tolist() == pytest.approx([0.7, 0.2, 0.1], abs=0.03)


@pytest.mark.parametrize("enabled", [True, False])
def test_generate_restores_the_onednn_setting(enabled):
    """Decoding on a CPU runs without oneDNN (its per-call cost dominates a token's GELU), and leaves
    the setting as it found it."""
    model, before = small_model(), torch.backends.mkldnn.enabled
    try:
        torch.backends.mkldnn.enabled = enabled
        model.generate(torch.zeros((1, 1), dtype=torch.long), 3)
        assert torch.backends.mkldnn.enabled is enabled
    finally:
        torch.backends.mkldnn.enabled = before


def test_bfloat16_attention_on_a_cpu_runs_in_float32():
    """Under bfloat16 autocast on a CPU, attention is computed in float32 (CPU flash attention is 4x
    slower in bfloat16) and handed back in bfloat16; gradients flow to q, k and v."""
    from gpt2.model.gpt import attention

    q, k, v = (torch.randn(2, 2, 8, 16, requires_grad=True) for _ in range(3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), is_causal=True)
    want = F.scaled_dot_product_attention(q.bfloat16().float(), k.bfloat16().float(), v.bfloat16().float(),
                                          is_causal=True)
    assert got.dtype == torch.bfloat16 and torch.equal(got, want.bfloat16())
    got.float().sum().backward()
    assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in (q, k, v))


# ------------------------------------------------------------------- today's options, one by one
OPTIONS = [{"rotary": True}, {"norm": "rmsnorm"}, {"qk_norm": True}, {"activation": "relu2"},
           {"tie_embeddings": False}, {"zero_init": True}, {"logit_softcap": 10.0}, {**MODERN, "zero_init": True}]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "+".join(o) if len(o) < 3 else "all")
def test_each_option_trains_with_a_finite_loss_and_gpt2s_shapes(options):
    model = small(bias=True, **options)
    x = torch.randint(0, 65, (3, 16))
    logits, loss = model(x, x)
    assert logits.shape == (3, 16, 65) and torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    names = dict(model.named_parameters())
    assert ("transformer.wpe.weight" in names) != bool(options.get("rotary"))  # rotary: no position table
    assert (model.lm_head.weight is model.transformer.wte.weight) == options.get("tie_embeddings", True)
    if options.get("norm") == "rmsnorm":
        assert not any(".ln_" in n for n in names)  # RMSNorm without parameters
    gpt2 = small(bias=True)
    if options.get("zero_init"):  # each block starts as the identity; an untied head at uniform logits
        assert all(p.abs().sum() == 0 for n, p in names.items() if n.endswith("c_proj.weight"))
    elif options in ({"qk_norm": True}, {"activation": "relu2"}, {"logit_softcap": 10.0}):
        assert torch.equal(names["transformer.h.0.mlp.c_fc.weight"], dict(gpt2.named_parameters())[
            "transformer.h.0.mlp.c_fc.weight"])  # an option that adds no parameter draws the same init
    assert model.config.not_gpt2() == [f"{k}={v}" for k, v in options.items() if k != "zero_init"]


def test_relu2_qk_norm_and_softcap_compute_what_they_say():
    from gpt2.model.gpt import ReLU2

    x = torch.tensor([-2.0, -0.5, 0.0, 0.5, 3.0])
    assert torch.equal(ReLU2()(x), torch.tensor([0.0, 0.0, 0.0, 0.25, 9.0]))
    capped = small(logit_softcap=2.0).eval()
    logits, _ = capped(torch.randint(0, 65, (2, 8)), torch.randint(0, 65, (2, 8)))
    assert logits.abs().max() < 2.0  # every logit inside the cap
    plain = small()
    capped.load_state_dict(plain.state_dict())
    idx = torch.randint(0, 65, (1, 8))
    torch.testing.assert_close(capped(idx)[0], 2.0 * torch.tanh(plain(idx)[0] / 2.0))


def test_rotary_positions_are_relative():
    """With rotary positions the attention scores depend on the distance only: shifting every
    position (a cache that starts later) leaves the logits of a sequence unchanged."""
    from gpt2.model.gpt import rotary_table, rotate

    table = rotary_table(GPTConfig(n_embd=32, n_head=2, block_size=64))
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)
    score = lambda i, j: (rotate(q, table[i:i + 1]) * rotate(k, table[j:j + 1])).sum()  # noqa: E731
    torch.testing.assert_close(score(5, 2), score(40, 37))
    assert not torch.allclose(score(5, 2), score(5, 3))
    model = small(rotary=True, block_size=32)
    model.crop_block_size(8)
    assert model.rope.shape[0] == 8 and model(torch.randint(0, 65, (1, 8)))[0].shape == (1, 1, 65)


def test_the_options_are_checked():
    with pytest.raises(ValueError, match="norm must be one of layernorm, rmsnorm"):
        GPTConfig(norm="batchnorm")
    with pytest.raises(ValueError, match="activation must be one of gelu, relu2"):
        GPTConfig(activation="swish")
    with pytest.raises(ValueError, match="even head size"):
        GPTConfig(n_embd=6, n_head=2, rotary=True)


def test_an_untied_head_counts_the_token_table_as_an_embedding():
    tied, untied = small(), small(tie_embeddings=False)
    table = 128 * 32  # the token table, padded to 128 rows
    assert untied.num_params(non_embedding=False) == tied.num_params(non_embedding=False) + table
    assert untied.num_params() == tied.num_params()  # the head's matmul counts, the lookup does not
