"""GPT-2: pre-LayerNorm blocks, GELU MLP, learned positions, tied embeddings, causal SDPA attention;
and, each off by default, today's options (nanochat's and modded-nanogpt's block): rotary positions,
RMSNorm, QK-norm, a ReLU² MLP, an untied head, zero-initialised output projections, logit soft-capping.

This module stands alone, as nanoGPT's model.py: it imports torch and nothing of the harness, so a
script or a notebook can build a model from `GPTConfig` (or from a checkpoint's `model_args`) without
Hydra. Parameter names are GPT-2's own (transformer.wte, transformer.h.0.attn.c_attn, ..., lm_head), so
pretrained weights map key for key (Hugging Face stores c_attn/c_fc/c_proj transposed, as Conv1D).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class GPTConfig:
    """The model's shape; the defaults are GPT-2 small (124M)."""

    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    vocab_size: int = 50257
    """Tokens the model scores and samples (the tokenizer's vocabulary)."""
    block_size: int = 1024
    """Context length: the longest sequence the model takes (rows of the position table)."""
    dropout: float = 0.0
    bias: bool = True
    vocab_multiple: int = 64
    """The embedding table is padded to a multiple of this; padded ids are never scored or sampled."""
    gelu_approximate: str = "none"
    """The MLP's GELU: 'none' (exact, erf; nanoGPT's) or 'tanh' (OpenAI's GPT-2 weights were trained
    with it: Hugging Face's 'gelu_new')."""

    rotary: bool = False
    """Rotary position embeddings on queries and keys (RoPE) instead of a learned position table."""
    rope_base: float = 10000.0
    """RoPE's base: the rotation of dimension pair i is position * rope_base ** (-2i / head_size)."""
    norm: str = "layernorm"
    """'layernorm' (GPT-2's, with a gain and optional bias) or 'rmsnorm' (no parameters, as nanochat)."""
    qk_norm: bool = False
    """RMS-normalise each head's queries and keys before attention (QK-norm)."""
    activation: str = "gelu"
    """The MLP's nonlinearity: 'gelu' (GPT-2's) or 'relu2' (ReLU squared, as modded-nanogpt)."""
    tie_embeddings: bool = True
    """The output layer is the token table (GPT-2); false gives the head its own matrix."""
    zero_init: bool = False
    """Start every residual branch's output projection (and an untied head) at zero."""
    logit_softcap: float = 0.0
    """Cap the logits smoothly at +-this (softcap * tanh(logits / softcap)); 0: no cap."""

    def __post_init__(self) -> None:
        if self.gelu_approximate not in ("none", "tanh"):
            raise ValueError(f"GPTConfig.gelu_approximate must be 'none' or 'tanh', got {self.gelu_approximate!r}")
        if self.norm not in NORMS:
            raise ValueError(f"GPTConfig.norm must be one of {', '.join(NORMS)}, got {self.norm!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"GPTConfig.activation must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}")
        if self.logit_softcap < 0 or self.rope_base <= 0:
            raise ValueError("GPTConfig.logit_softcap must be >= 0 and rope_base > 0")
        if self.rotary and (self.n_embd // self.n_head) % 2:
            raise ValueError(f"GPTConfig.rotary needs an even head size, got {self.n_embd // self.n_head}")
        for name in ("n_layer", "n_head", "n_embd", "vocab_size", "block_size", "vocab_multiple"):
            if getattr(self, name) < 1:
                raise ValueError(f"GPTConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.n_embd % self.n_head:
            raise ValueError(f"GPTConfig.n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")

    @property
    def padded_vocab_size(self) -> int:
        return -(-self.vocab_size // self.vocab_multiple) * self.vocab_multiple

    def not_gpt2(self) -> list[str]:
        """The options set here that GPT-2's architecture does not have ([] for a GPT-2 shape)."""
        gpt2 = GPTConfig()
        return [f"{name}={getattr(self, name)}" for name in GPT2_SHAPE if getattr(self, name) != getattr(gpt2, name)]


NORMS = ("layernorm", "rmsnorm")
ACTIVATIONS = ("gelu", "relu2")
GPT2_SHAPE = ("rotary", "norm", "qk_norm", "activation", "tie_embeddings", "logit_softcap")
"""The options that change what a model computes away from GPT-2's (zero_init only changes its start)."""


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """F.dropout where it does something: no op at all where it is the identity (p = 0, or evaluation),
    as decoding a token on a CPU costs per op, not per FLOP. The same random draws as nn.Dropout."""
    return F.dropout(x, p, True) if training and p > 0 else x


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kwargs) -> torch.Tensor:
    """F.scaled_dot_product_attention; in float32 for bfloat16 inputs on a CPU, whose flash-attention
    kernel is 4x slower in bfloat16 than in float32 (its backward 9x), while the matmuls around it
    gain 4x from bfloat16 (AMX)."""
    if q.dtype == torch.bfloat16 and q.device.type == "cpu":
        with torch.autocast("cpu", enabled=False):  # else autocast casts them back to bfloat16
            return F.scaled_dot_product_attention(q.float(), k.float(), v.float(), **kwargs).to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, **kwargs)


def make_norm(config: GPTConfig) -> nn.Module:
    if config.norm == "rmsnorm":
        return nn.RMSNorm(config.n_embd, elementwise_affine=False)
    return nn.LayerNorm(config.n_embd, bias=config.bias)


def rotary_table(config: GPTConfig) -> torch.Tensor:
    """(block_size, head_size // 2, 2): cos and sin of each position's angle for each dimension pair."""
    half = config.n_embd // config.n_head // 2
    inv_freq = config.rope_base ** (-torch.arange(half, dtype=torch.float32) / half)
    angles = torch.outer(torch.arange(config.block_size, dtype=torch.float32), inv_freq)
    return torch.stack((angles.cos(), angles.sin()), dim=-1)


def rotate(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """x (B, nh, T, hs) rotated by the positions' angles in `table` (T, hs // 2, 2): the pairs are
    (first half, second half) of each head, as nanochat and Hugging Face's Llama pair them."""
    cos, sin = table[..., 0].to(x.dtype), table[..., 1].to(x.dtype)
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.dropout = config.dropout
        self.qk_norm = config.qk_norm
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v for all heads
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)

    def forward(self, x: torch.Tensor, kv: Optional["LayerKV"] = None,
                rope: Optional[torch.Tensor] = None) -> torch.Tensor:
        B, T, C = x.shape
        # (B, T, 3C) -> q, k, v: (B, nh, T, hs) views (few ops: decoding one token is overhead-bound)
        q, k, v = self.c_attn(x).view(B, T, 3, self.n_head, C // self.n_head).permute(2, 0, 3, 1, 4).unbind(0)
        if self.qk_norm:
            q, k = F.rms_norm(q, (q.size(-1),)), F.rms_norm(k, (k.size(-1),))
        if rope is not None:  # this window's positions (start.. with a cache)
            q, k = rotate(q, rope), rotate(k, rope)
        if kv is None:
            y = attention(q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
        else:  # the new tokens attend to the cached ones and causally among themselves
            k, v, start = kv.update(k, v)
            # is_causal aligns the mask top-left (query i sees keys <= i), right only without a cache
            # before them; a single new token sees every key; otherwise an explicit mask
            mask = None if T == 1 or start == 0 else torch.ones(T, start + T, dtype=torch.bool,
                                                                  device=x.device).tril(diagonal=start)
            y = attention(q, k, v, attn_mask=mask, is_causal=start == 0 and T > 1)
        y = y.transpose(1, 2).reshape(B, T, C)  # re-assemble heads: (B, T, C)
        return dropout(self.c_proj(y), self.dropout, self.training)


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        # exact (erf) GELU by default, as nanoGPT (3x faster than the tanh form on CPU); tanh for OpenAI's weights
        self.gelu = nn.GELU(approximate=config.gelu_approximate) if config.activation == "gelu" else ReLU2()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = config.dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(self.c_proj(self.gelu(self.c_fc(x))), self.dropout, self.training)


class ReLU2(nn.Module):
    """ReLU squared (modded-nanogpt's, nanochat's MLP nonlinearity)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x).square()


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = make_norm(config)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = make_norm(config)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, kv: Optional["LayerKV"] = None,
                rope: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), kv, rope)
        return x + self.mlp(self.ln_2(x))


class LayerKV:
    """One layer's cached keys and values, (B, n_head, block_size, head_size) each, allocated at the
    first update in the dtype and device of what is cached (bf16 under autocast)."""

    def __init__(self, cache: "KVCache"):
        self.cache = cache
        self.k: Optional[torch.Tensor] = None
        self.v: Optional[torch.Tensor] = None

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Store the new tokens' keys and values after the cached ones; returns (every key, every
        value, the position of the first new token)."""
        start = self.cache.length
        if start == 0:  # (re)allocated where the batch size, dtype or device changed
            if self.k is None or (self.k.shape[0], self.k.dtype, self.k.device) != (k.shape[0], k.dtype, k.device):
                shape = (*k.shape[:2], self.cache.block_size, k.shape[3])
                self.k, self.v = k.new_empty(shape), v.new_empty(shape)
        elif self.k.shape[0] != k.shape[0] or self.k.dtype != k.dtype:
            raise ValueError(f"this KV cache holds {start} tokens of a batch of {self.k.shape[0]} "
                             f"({self.k.dtype}): reset() it before another batch size or dtype")
        end = start + k.shape[2]
        self.k[:, :, start:end], self.v[:, :, start:end] = k, v
        return self.k[:, :, :end], self.v[:, :, :end], start


class KVCache:
    """Keys and values of every layer for the tokens a model has seen, so that each new token costs
    one position's work instead of the whole context's (`GPT.forward(idx, cache=cache)` appends)."""

    def __init__(self, config: GPTConfig):
        self.block_size = config.block_size
        self.length = 0
        """Tokens cached (the position of the next one)."""
        self.layers = [LayerKV(self) for _ in range(config.n_layer)]

    def reset(self) -> None:
        self.length = 0


class GPT(nn.Module):
    """GPT-2 language model over `config.vocab_size` tokens with a context of `config.block_size`.

    The embedding table has padded_vocab_size rows (a multiple of config.vocab_multiple, for faster
    matmuls); logits are cut back to vocab_size, so padded ids are never scored or sampled."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        padded = config.padded_vocab_size
        positions = {} if config.rotary else {"wpe": nn.Embedding(config.block_size, config.n_embd)}
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(padded, config.n_embd),
            **positions,
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=make_norm(config),
        ))
        self.lm_head = nn.Linear(config.n_embd, padded, bias=False)
        if config.tie_embeddings:
            self.transformer.wte.weight = self.lm_head.weight  # tied input/output embeddings
        self.register_buffer("rope", rotary_table(config) if config.rotary else None, persistent=False)
        # -inf on the padded logits, added inside the lm_head matmul: they get zero probability, so
        # they are never scored or sampled, and no (B, T, vocab) tensor is sliced or copied for it
        mask = torch.zeros(padded)
        mask[config.vocab_size:] = float("-inf")
        self.register_buffer("logit_mask", mask if padded > config.vocab_size else None, persistent=False)
        self.apply(self._init_weights)
        # GPT-2: residual projections scaled by 1/sqrt(2 * n_layer) (two per block)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))
        if config.zero_init:  # each block starts as the identity, and an untied head at uniform logits
            for name, p in self.named_parameters():
                if name.endswith("c_proj.weight") or (name == "lm_head.weight" and not config.tie_embeddings):
                    nn.init.zeros_(p)

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @property
    def block_size(self) -> int:
        return self.config.block_size

    @property
    def padded_vocab_size(self) -> int:
        return self.config.padded_vocab_size

    def crop_block_size(self, block_size: int) -> None:
        """Shrink the context to block_size (e.g. a 1024-token pretrained model for 256-token
        windows): keeps the first block_size rows of the position table. Crop before an optimizer is
        built over the parameters: the position table becomes a new parameter."""
        if not 1 <= block_size <= self.config.block_size:
            raise ValueError(f"cannot crop the context to {block_size}: it must be between 1 and the "
                             f"model's block_size {self.config.block_size}")
        self.config = replace(self.config, block_size=block_size)  # a copy: other models may share it
        if self.config.rotary:
            self.rope = self.rope[:block_size]
        else:
            self.transformer.wpe.weight = nn.Parameter(self.transformer.wpe.weight[:block_size].detach().clone())

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameters, counting tied weights once; non_embedding leaves out the tables only looked up:
        the position table, and the token table when the head is not it (tied, it is also the output
        layer's matmul)."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            looked_up = [] if self.config.rotary else [self.transformer.wpe.weight]
            if not self.config.tie_embeddings:
                looked_up.append(self.transformer.wte.weight)
            n -= sum(p.numel() for p in looked_up)
        return n

    def forward(self, idx: torch.Tensor, targets: Optional[torch.Tensor] = None,
                cache: Optional[KVCache] = None) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """idx (B, T) -> logits (B, T, vocab_size) and the mean cross-entropy against targets (B, T);
        without targets, logits for the last position only: (B, 1, vocab_size). With a cache, idx
        continues the tokens cached (positions from cache.length on), and is cached in turn."""
        B, T = idx.shape
        start = cache.length if cache is not None else 0
        if start + T > self.block_size:
            raise ValueError(f"sequence of length {start + T} is longer than block_size {self.block_size}")
        x = self.transformer.wte(idx)  # (B, T, C)
        rope = None if self.rope is None else self.rope[start:start + T]  # positions start..
        if rope is None:
            x = x + self.transformer.wpe.weight[start:start + T]
        x = dropout(x, self.config.dropout, self.training)
        for i, block in enumerate(self.transformer.h):
            x = block(x, cache.layers[i] if cache is not None else None, rope)
        if cache is not None:
            cache.length += T
        x = self.transformer.ln_f(x)
        if targets is None:  # inference: only the last position's logits
            return self._logits(x[:, -1:, :])[..., : self.vocab_size], None
        logits = self._logits(x)  # (B, T, padded_vocab_size), contiguous
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))
        return logits[..., : self.vocab_size], loss

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        cap = self.config.logit_softcap
        if not cap:
            return F.linear(x, self.lm_head.weight, self.logit_mask)
        logits = cap * torch.tanh(F.linear(x, self.lm_head.weight).float() / cap)  # capped before the mask
        return logits if self.logit_mask is None else logits + self.logit_mask

    @torch.inference_mode()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: Optional[int] = None, top_p: Optional[float] = None,
                 generator: Optional[torch.Generator] = None, use_cache: bool = True) -> torch.Tensor:
        """Append max_new_tokens tokens to idx (B, T): sampled at `temperature` (0: greedy) from the
        top_k most likely and/or the smallest set holding top_p of the probability; ids are always
        < vocab_size. With use_cache, a KVCache makes each token cost one position's work.

        Past the context, the model sees a window of the last tokens: when the window would exceed
        block_size it restarts from the last block_size // 2 tokens (so a cache is refilled once per
        block_size // 2 tokens, not at every token). The same windows with and without the cache:
        greedy outputs are identical."""
        # oneDNN's exact GELU pays ~8 us per call to look up its primitive, 8x ATen's own kernel on a
        # token's activations: decoding on a CPU is bound by such per-op costs, so it goes without oneDNN
        onednn = torch.backends.mkldnn.enabled
        torch.backends.mkldnn.enabled = onednn and idx.device.type != "cpu"
        try:
            return self._generate(idx, max_new_tokens, temperature, top_k, top_p, generator, use_cache)
        finally:
            torch.backends.mkldnn.enabled = onednn

    def _generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float, top_k: Optional[int],
                  top_p: Optional[float], generator: Optional[torch.Generator], use_cache: bool) -> torch.Tensor:
        cache = KVCache(self.config) if use_cache else None
        start = max(0, idx.size(1) - self.block_size)  # where the window begins in idx
        for _ in range(max_new_tokens):  # the cache holds idx[:, start:start + cache.length]
            if idx.size(1) - start > self.block_size:
                start = idx.size(1) - max(1, self.block_size // 2)
                if cache is not None:  # the window moved: fill the cache again
                    cache.reset()
            if cache is None:
                logits, _ = self(idx[:, start:])
            else:
                logits, _ = self(idx[:, start + cache.length:], cache=cache)
            idx = torch.cat([idx, next_token(logits[:, -1, :], temperature, top_k, top_p, generator)], dim=1)
        return idx


def next_token(logits: torch.Tensor, temperature: float = 1.0, top_k: Optional[int] = None,
               top_p: Optional[float] = None, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """(B, vocab) logits -> (B, 1) token ids: the argmax at temperature 0, else a sample."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits.float() / temperature
    if top_k and top_k < logits.size(-1):  # None or 0 (or the whole vocabulary): no top-k
        kth = torch.topk(logits, top_k).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = F.softmax(logits, dim=-1)
    if top_p is not None and top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        # keep each token whose more likely tokens hold less than top_p (the most likely always)
        drop = sorted_probs.cumsum(dim=-1) - sorted_probs >= top_p
        probs = probs.scatter(-1, order, sorted_probs.masked_fill(drop, 0.0))
    # torch.multinomial's own draw for one sample (the same ids for the same generator), without its
    # checks and normalisation: the argmax of p / q for q ~ Exp(1) picks id i with probability p_i
    return (probs / torch.empty_like(probs).exponential_(generator=generator)).argmax(dim=-1, keepdim=True)
