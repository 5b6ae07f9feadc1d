"""Dataclass schemas for every config group (gpt2/run/compose.py registers them in Hydra's ConfigStore).

The schemas hold every default: `python train.py` with no overrides is exactly these dataclasses'
defaults, and each YAML under `conf/<group>/` (which extends the schema stored as `schema/<group>`)
holds only what differs, as do the experiments. A misspelled key or a wrong type fails while Hydra
composes. Rules on values and across fields live in `__post_init__`; they run when `from_hydra` turns
the composed DictConfig into these objects (or when code builds them directly), before any work is
done. A value that follows another when left null (`optim.lr_decay_iters`, `model.block_size`,
`trainer.ckpt_interval`) is resolved by one property here, the same way for Hydra and for code.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Dict, List, Optional

from omegaconf import DictConfig, OmegaConf

from gpt2.errors import ConfigError

ATTENTION = ("auto", "flash", "efficient", "cudnn", "math")
DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {message}")


INT64 = 2 ** 63


def _ints_in_range(config: Any) -> None:
    """Every integer setting fits the 64-bit integers torch and numpy take (a seed of 10**23 is one
    line here, not an overflow deep in a generator)."""
    for group in GROUPS:
        part = getattr(config, group)
        for name, value in vars(part).items():
            _check(type(value) is not int or -INT64 <= value < INT64, f"{group}.{name}",
                   f"{value} is out of range (a 64-bit integer: {-INT64:,} to {INT64 - 1:,})")


def _floats_finite(config: Any) -> None:
    """No float setting is NaN or infinite (`optim.lr=inf` would pass `> 0`, and train on NaNs)."""
    for group in GROUPS:
        for name, value in vars(getattr(config, group)).items():
            _check(type(value) is not float or math.isfinite(value), f"{group}.{name}",
                   f"must be a finite number, got {value}")


EMPTY_PATH = "an empty path; is a shell variable unset?"
"""A path setting (or a script's path option) given as '': refused, not read as the current directory."""


def _nonempty(obj: Any, group: str, *names: str) -> None:
    for name in names:
        _check(getattr(obj, name) != "", f"{group}.{name}", EMPTY_PATH)


def _positive(obj: Any, group: str, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if value is None:  # null: follows another key
            continue
        _check(value >= 1, f"{group}.{name}", f"must be >= 1, got {value}")


@dataclass
class DataConfig:
    source: str = "text"
    """'text': a UTF-8 text file (data.path), tokenized in memory; 'bin': token files made by
    scripts/prepare.py (or nanoGPT's prepare scripts) in data.dir, memory-mapped (corpora of billions
    of tokens). `data=bin data.dir=DIR` selects the latter."""
    path: Optional[str] = None
    """A local UTF-8 text file to train on; null means Tiny Shakespeare (downloaded into data_dir)."""
    dir: Optional[str] = None
    """data=bin: the directory holding train.bin, val.bin and manifest.json. Its split is the files'
    (data.train_frac does not apply) and its tokenizer the manifest's (GPT-2 without a manifest)."""
    tokenizer: str = "gpt2"
    """'gpt2' (tiktoken's GPT-2 BPE) or 'char' (one token per character, as nanoGPT's char runs)."""
    block_size: int = 64
    """T: tokens per training window (also the model's context length unless model.block_size)."""
    batch_size: int = 12
    """B: windows per batch (per micro-step when trainer.grad_accum > 1)."""
    seed: int = 1337
    """Seeds the sampler's own torch.Generator: the only source of data-order randomness."""
    shuffle: bool = True
    """Shuffle training windows each epoch; validation is never shuffled."""
    train_frac: float = 0.9
    """Fraction of tokens, from the start, in the training split; the rest is validation."""
    min_val_frac: float = 0.001
    """The smallest validation split a run accepts, as a share of all tokens (text files and token
    files alike): under it, or under one eval batch (batch_size windows: batch_size + block_size
    tokens), the run stops before training with one line. 0 accepts any size (one window at least)."""
    num_workers: int = 0
    """DataLoader worker processes; 0 builds batches in the main process (fastest for in-memory tokens)."""
    prefetch: Optional[bool] = None
    """With num_workers=0: true gathers the next batch on a background thread while the model computes
    on this one, false gathers it when it is due; null: true with CUDA (a GPU step never waits for
    data), false on the CPU (whose cores are all busy computing)."""
    data_dir: str = "data"
    """Where downloads and token caches live."""
    mirror: Optional[str] = None
    """Offline copy of the downloads (tinyshakespeare/input.txt, gpt2-bpe/{vocab.bpe,encoder.json},
    hellaswag/hellaswag_val.jsonl); null falls back to the GPT2_DATA_MIRROR environment variable, then to
    the network."""

    def __post_init__(self) -> None:
        _check(self.source in ("text", "bin"), "data.source", f"must be 'text' or 'bin', got {self.source!r}")
        _check(self.source != "bin" or self.dir is not None, "data.dir",
               "data.source=bin needs the directory of train.bin and val.bin (made by scripts/prepare.py)")
        _check(self.tokenizer in ("gpt2", "char"), "data.tokenizer",
               f"must be 'gpt2' or 'char', got {self.tokenizer!r}")
        _positive(self, "data", "block_size", "batch_size")
        _check(0.0 < self.train_frac < 1.0, "data.train_frac",
               f"must be between 0 and 1 (exclusive), got {self.train_frac}")
        _check(0.0 <= self.min_val_frac < 1.0, "data.min_val_frac",
               f"must be at least 0 and under 1 (0 accepts any validation split), got {self.min_val_frac}")
        _check(self.num_workers >= 0, "data.num_workers", f"must be >= 0, got {self.num_workers}")
        _nonempty(self, "data", "path", "dir", "data_dir", "mirror")


@dataclass
class ModelConfig:
    n_layer: int = 4
    """Transformer blocks."""
    n_head: int = 4
    """Attention heads per block; must divide n_embd."""
    n_embd: int = 128
    """Width of the residual stream."""
    block_size: Optional[int] = None
    """The model's context length (rows of its position table); null: data.block_size. May exceed
    data.block_size (a 1024-context model trains on 256-token windows), never be smaller."""
    dropout: float = 0.0
    """Dropout on embeddings, attention and residual branches (0 disables it)."""
    bias: bool = False
    """Biases in Linear and LayerNorm layers (GPT-2 has them; nanoGPT's small runs drop them)."""
    vocab_multiple: int = 64
    """The embedding table is padded to a multiple of this; padded logits are never scored or sampled."""
    init_from: Optional[str] = None
    """null: random init. gpt2, gpt2-medium, gpt2-large, gpt2-xl (OpenAI's weights from the Hugging Face
    Hub), a local Hugging Face GPT-2 folder, a run directory of ours (its ckpt/best.pt, else last.pt), a
    checkpoint of ours, or a nanoGPT ckpt.pt: a fresh run from those weights (not their optimizer or data
    position). The architecture is the checkpoint's (a different value set here is refused), the data
    must be in its tokens, model.dropout applies, a shorter model.block_size crops the context."""
    # Today's block (nanochat, modded-nanogpt), each option off by default; model=modern turns on the set.
    rotary: bool = False
    """Rotary position embeddings (RoPE) on queries and keys instead of a learned position table."""
    norm: str = "layernorm"
    """layernorm (GPT-2's) or rmsnorm (RMSNorm without parameters, as nanochat)."""
    qk_norm: bool = False
    """RMS-normalise each head's queries and keys before attention (QK-norm)."""
    activation: str = "gelu"
    """The MLP's nonlinearity: gelu (GPT-2's) or relu2 (ReLU squared)."""
    tie_embeddings: bool = True
    """The output layer is the token table (GPT-2's tying); false gives the head its own matrix."""
    zero_init: bool = False
    """Initialise every residual branch's output projection (and an untied head) to zero."""
    logit_softcap: float = 0.0
    """Cap the logits smoothly at +-this (softcap * tanh(logits / softcap)); 0: no cap."""

    def __post_init__(self) -> None:
        _positive(self, "model", "n_layer", "n_head", "n_embd", "vocab_multiple", "block_size")
        _nonempty(self, "model", "init_from")
        _check(self.n_embd % self.n_head == 0, "model.n_head",
               f"model.n_embd ({self.n_embd}) must be divisible by model.n_head ({self.n_head})")
        _check(0.0 <= self.dropout < 1.0, "model.dropout", f"must be in [0, 1), got {self.dropout}")
        _check(self.norm in ("layernorm", "rmsnorm"), "model.norm", f"must be layernorm or rmsnorm, got {self.norm!r}")
        _check(self.activation in ("gelu", "relu2"), "model.activation",
               f"must be gelu or relu2, got {self.activation!r}")
        _check(self.logit_softcap >= 0, "model.logit_softcap", f"must be >= 0 (0: no cap), got {self.logit_softcap}")
        _check(not self.rotary or (self.n_embd // self.n_head) % 2 == 0, "model.rotary",
               f"needs an even head size (n_embd / n_head = {self.n_embd // self.n_head})")


@dataclass
class OptimConfig:
    name: str = "adamw"
    """adamw: AdamW for every parameter (nanoGPT's). muon: Muon for the blocks' 2-D matrices and AdamW
    for the embeddings, the head and every 1-D parameter (nanochat's, modded-nanogpt's); see muon_*."""
    lr: float = 1e-3
    """Peak learning rate (after warmup) of AdamW: of every parameter, or with muon of the 1-D ones
    (and of the embeddings and head unless embedding_lr / head_lr)."""
    min_lr: float = 1e-4
    """Learning rate at the end of the decay (and after it). Every other LR follows the schedule in
    proportion: at min_lr, muon_lr is muon_lr * min_lr / lr."""
    schedule: str = "cosine"
    """cosine: linear warmup, cosine decay to min_lr at lr_decay_iters (nanoGPT's). wsd: linear warmup,
    constant, then linear warmdown to min_lr over the last warmdown_frac of lr_decay_iters."""
    warmdown_frac: float = 0.4
    """optim.schedule=wsd: the fraction of lr_decay_iters spent decaying linearly to min_lr."""
    weight_decay: float = 0.1
    """AdamW weight decay, applied to 2-D weights only (not biases, LayerNorm gains)."""
    beta1: float = 0.9
    beta2: float = 0.99
    muon_lr: float = 0.02
    """optim.name=muon: the peak LR of the blocks' matrices (scaled by sqrt(max(1, rows / cols)) per
    matrix, Keller Jordan's rule, with muon_lr_scaling=original)."""
    muon_momentum: float = 0.95
    """optim.name=muon: Muon's Nesterov momentum, reached after muon_momentum_warmup iterations."""
    muon_momentum_start: float = 0.85
    """optim.name=muon: the momentum at iteration 0, raised linearly to muon_momentum (modded-nanogpt)."""
    muon_momentum_warmup: int = 300
    """optim.name=muon: iterations over which the momentum rises (0: muon_momentum from the start)."""
    muon_weight_decay: float = 0.0
    """optim.name=muon: decoupled weight decay of the matrices (each step multiplies them by 1 - lr * this)."""
    muon_lr_scaling: str = "original"
    """optim.name=muon: original (sqrt(max(1, rows / cols)), Keller Jordan's) or match_rms_adamw
    (0.2 * sqrt(max(rows, cols)), Moonshot's: muon_lr then means an AdamW-like LR)."""
    muon_precision: str = "bfloat16"
    """optim.name=muon: the Newton-Schulz iteration's dtype: bfloat16 (Keller Jordan's, torch's) or
    float32 (slower; its results differ between runs only by float32 rounding, as AdamW's do)."""
    embedding_lr: Optional[float] = None
    """optim.name=muon: the peak LR of the token (and position) table; null: optim.lr."""
    head_lr: Optional[float] = None
    """optim.name=muon with model.tie_embeddings=false: the peak LR of the output layer; null: optim.lr."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this; 0 disables clipping (the norm is still logged)."""
    warmup_iters: int = 30
    """Linear warmup from ~0 to lr over this many iterations."""
    lr_decay_iters: Optional[int] = None
    """Cosine decay from lr to min_lr ends here; null: at trainer.max_iters (nanoGPT's choice). A
    resumed run keeps the schedule it was trained with, even with a longer trainer.max_iters; set
    this explicitly to change it (the LR then decays on from its value at the resume point)."""
    decay_lr: bool = True
    """False keeps lr constant (no warmup, no decay)."""
    fused: Optional[bool] = None
    """AdamW's fused kernel (one kernel for every parameter's update); null: on CPU and CUDA, where
    it exists and is the fastest AdamW; false: torch's default implementation."""

    def __post_init__(self) -> None:
        _check(self.lr > 0, "optim.lr", f"must be > 0, got {self.lr}")
        _check(0 <= self.min_lr <= self.lr, "optim.min_lr",
               f"must be between 0 and optim.lr ({self.lr}), got {self.min_lr}")
        _check(self.weight_decay >= 0, "optim.weight_decay", f"must be >= 0, got {self.weight_decay}")
        for name in ("beta1", "beta2"):
            value = getattr(self, name)
            _check(0 <= value < 1, f"optim.{name}", f"must be in [0, 1), got {value}")
        _check(self.grad_clip >= 0, "optim.grad_clip", f"must be >= 0, got {self.grad_clip}")
        for name in ("warmup_iters", "lr_decay_iters", "muon_momentum_warmup"):
            value = getattr(self, name)
            _check(value is None or value >= 0, f"optim.{name}", f"must be >= 0, got {value}")
        _check(self.name in ("adamw", "muon"), "optim.name", f"must be adamw or muon, got {self.name!r}")
        _check(self.schedule in ("cosine", "wsd"), "optim.schedule", f"must be cosine or wsd, got {self.schedule!r}")
        _check(0 <= self.warmdown_frac <= 1, "optim.warmdown_frac", f"must be in [0, 1], got {self.warmdown_frac}")
        _check(self.muon_precision in ("bfloat16", "float32"), "optim.muon_precision",
               f"must be bfloat16 or float32, got {self.muon_precision!r}")
        _check(self.muon_lr_scaling in ("original", "match_rms_adamw"), "optim.muon_lr_scaling",
               f"must be original or match_rms_adamw, got {self.muon_lr_scaling!r}")
        for name in ("muon_lr", "embedding_lr", "head_lr"):
            value = getattr(self, name)
            _check(value is None or value > 0, f"optim.{name}", f"must be > 0, got {value}")
        for name in ("muon_momentum", "muon_momentum_start"):
            value = getattr(self, name)
            _check(0 <= value < 1, f"optim.{name}", f"must be in [0, 1), got {value}")
        _check(self.muon_weight_decay >= 0, "optim.muon_weight_decay", f"must be >= 0, got {self.muon_weight_decay}")
        default = OptimConfig.__dataclass_fields__
        for name in ("embedding_lr", "head_lr", "muon_lr", "muon_momentum", "muon_momentum_start",
                     "muon_momentum_warmup", "muon_weight_decay", "muon_lr_scaling", "muon_precision"):
            _check(self.name == "muon" or getattr(self, name) == default[name].default, f"optim.{name}",
                   "applies with optim.name=muon (optim=muon); AdamW alone has one LR, optim.lr")
        _check(self.schedule == "wsd" or self.warmdown_frac == default["warmdown_frac"].default,
               "optim.warmdown_frac", "applies with optim.schedule=wsd (the cosine decays over the whole run)")


@dataclass
class TrainerConfig:
    max_iters: int = 300
    """Optimizer steps to run (in total: a resumed run continues up to it)."""
    eval_interval: int = 100
    """Evaluate on the validation split every this many steps (and at step 0 and at the end)."""
    eval_iters: int = 10
    """Validation batches per evaluation (a fixed, evenly spaced set of windows)."""
    log_interval: int = 10
    """Write a metrics row (metrics.jsonl, W&B, train.log) every this many steps."""
    grad_accum: int = 1
    """Micro-batches per optimizer step."""
    device: str = "auto"
    """auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps."""
    dtype: str = "auto"
    """auto (bfloat16 on CUDA if supported, else float16 with a GradScaler; bfloat16 on CPUs with AMX
    or AVX512-BF16, which multiply bfloat16 matrices in hardware; float32 elsewhere), float32, bfloat16
    or float16. Parameters and
    optimizer state stay float32: the lower precision is autocast's, for the forward and backward."""
    compile: Optional[bool] = None
    """Train through torch.compile(model); null: on with CUDA, off elsewhere (a CPU gains nothing
    here from it and waits ~15 s for it). Evaluation and sampling use the uncompiled module, so
    their other shapes never recompile."""
    tf32: bool = True
    """CUDA: TF32 tensor cores for float32 matmuls and convolutions (what autocast leaves in float32)."""
    attention: str = "auto"
    """The scaled_dot_product_attention kernel: auto (PyTorch picks; flash attention where it
    applies), flash, efficient, cudnn or math (the unfused reference)."""
    seed: int = 1337
    """Seeds model initialisation, dropout and sampling (data order has its own data.seed)."""
    num_threads: int = 0
    """CPU threads for torch (torch.set_num_threads); 0 keeps torch's default. Parallel sweep jobs on
    one machine want jobs x threads <= cores."""
    sample_tokens: int = 200
    """Tokens of text sampled at the end of the run (0 skips it), from the weights of the run's best
    validation loss (its best.pt), or the final weights when there is no best.pt of this run."""
    sample_interval: int = 0
    """Also sample trainer.sample_tokens of text from trainer.sample_prompt every this many steps
    (seeded by trainer.seed, so samples differ only by training), into samples.jsonl, W&B's `samples`
    table and TensorBoard's text; 0: never."""
    sample_prompt: str = "\n"
    """The prompt of those samples (and of the final sample.txt)."""
    progress: bool = True
    """Show a progress bar (only when stderr is a terminal); log lines print above it."""
    resume: Optional[str] = None
    """null starts fresh; 'auto' resumes from ckpt/last.pt in the run directory if there is one (else
    starts fresh); a path resumes from that checkpoint (it must exist)."""
    ckpt_interval: Optional[int] = None
    """Save ckpt/last.pt every this many steps (also at the end and on SIGINT/SIGTERM); 0: only then;
    null: every eval_interval."""
    keep_last: int = 2
    """Also keep the newest this many periodic checkpoints as ckpt/iter_NNNNNNN.pt (0: none)."""
    parallel: str = "ddp"
    """Under torchrun: ddp (a whole replica per process, gradients all-reduced) or fsdp (FSDP2's
    fully_shard: parameters, gradients and AdamW state sharded over the processes)."""
    peak_tflops: Optional[float] = None
    """One device's peak TFLOP/s for the MFU figure; null: the GPU's from a table of common GPUs
    (gpt2/train/mfu.py), none on a CPU (then no mfu is reported)."""
    hellaswag_interval: int = 0
    """Score HellaSwag (acc_norm and acc, completion-style as build-nanogpt) every this many steps, and
    at step 0 and at the end as evaluations; 0: never. Needs GPT-2 tokens; the validation file is
    fetched into data.data_dir (from data.mirror or the network) at start-up."""
    hellaswag_examples: int = 500
    """trainer.hellaswag_interval > 0: score the first this many of the 10,042 validation examples
    (0: all). 500 costs ~1/20 of the whole set's time, with a standard error of ~0.02 on an accuracy
    near 0.3 (the whole set: ~0.005, and the figure to compare with published ones)."""

    def __post_init__(self) -> None:
        _positive(self, "trainer", "max_iters", "eval_interval", "eval_iters", "log_interval",
                  "grad_accum")
        _check(self.parallel in ("ddp", "fsdp"), "trainer.parallel", f"must be ddp or fsdp, got {self.parallel!r}")
        _nonempty(self, "trainer", "resume")
        _check(self.peak_tflops is None or self.peak_tflops > 0, "trainer.peak_tflops",
               f"must be > 0 (or null), got {self.peak_tflops}")
        _check(bool(DEVICE_RE.match(self.device)), "trainer.device",
               f"must be auto, cpu, cuda, cuda:N or mps, got {self.device!r}")
        _check(self.dtype in ("auto", "float32", "bfloat16", "float16"), "trainer.dtype",
               f"must be auto, float32, bfloat16 or float16, got {self.dtype!r}")
        _check(self.attention in ATTENTION, "trainer.attention",
               f"must be one of {', '.join(ATTENTION)}, got {self.attention!r}")
        for name in ("sample_tokens", "ckpt_interval", "keep_last", "num_threads", "hellaswag_interval",
                     "hellaswag_examples", "sample_interval"):
            value = getattr(self, name)
            _check(value is None or value >= 0, f"trainer.{name}", f"must be >= 0, got {value}")
        _check(not self.sample_interval or self.sample_tokens, "trainer.sample_interval",
               "samples trainer.sample_tokens tokens: set trainer.sample_tokens above 0")
        _check(self.hellaswag_interval > 0 or self.hellaswag_examples == TrainerConfig.hellaswag_examples,
               "trainer.hellaswag_examples", "applies with trainer.hellaswag_interval > 0 (HellaSwag is off)")

    @property
    def ckpt_every(self) -> int:
        """trainer.ckpt_interval, resolved: null follows eval_interval."""
        return self.eval_interval if self.ckpt_interval is None else self.ckpt_interval


@dataclass
class LoggerConfig:
    backend: str = "wandb"
    """'none', or one or more of wandb, tensorboard (run_dir/tensorboard) and csv (run_dir/metrics.csv)
    joined by '+', e.g. wandb+tensorboard (metrics.jsonl and summary.json are written either way)."""
    mode: str = "auto"
    """auto (online when W&B credentials are configured, else offline), online, offline or disabled."""
    project: str = "gpt2-harness"
    entity: Optional[str] = None
    group: Optional[str] = None
    name: Optional[str] = None
    """W&B run name; null lets W&B pick one."""
    tags: List[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        parts = self.backend.split("+")
        _check(self.backend == "none" or (set(parts) <= {"wandb", "tensorboard", "csv"} and
                                          len(set(parts)) == len(parts)), "logger.backend",
               f"must be 'none' or one or more of wandb, tensorboard, csv joined by '+' (e.g. "
               f"wandb+tensorboard), got {self.backend!r}")
        _check(self.mode in ("auto", "online", "offline", "disabled"), "logger.mode",
               f"must be auto, online, offline or disabled, got {self.mode!r}")

    @property
    def backends(self) -> tuple[str, ...]:
        """logger.backend as a tuple of loggers: () for 'none'."""
        return () if self.backend == "none" else tuple(self.backend.split("+"))


@dataclass
class OptunaConfig:
    """The hparams_search group: an Optuna study over config keys (see gpt2/sweep/study.py)."""

    n_trials: int = 20
    """Trials the study should have in total; a continued study (same storage and name) runs the rest."""
    seed: int = 1337
    """Seeds the TPE sampler."""
    direction: str = "minimize"
    study_name: Optional[str] = None
    """Defaults to the sweep directory's name."""
    storage: Optional[str] = None
    """An Optuna storage URL, e.g. sqlite:///optuna.db, to stop and continue a study; null: in memory."""
    params: Dict[str, Any] = field(default_factory=dict)
    """Config key -> {type: float|int|categorical, low, high, log, step, choices}."""

    def __post_init__(self) -> None:
        _check(self.n_trials >= 1, "hparams_search.n_trials", f"must be >= 1, got {self.n_trials}")
        _check(self.direction in ("minimize", "maximize"), "hparams_search.direction",
               f"must be minimize or maximize, got {self.direction!r}")
        _nonempty(self, "hparams_search", "storage")
        _check(self.study_name != "", "hparams_search.study_name", "an empty name; is a shell variable unset? (null: "
               "the sweep's own)")
        _check(bool(self.params), "hparams_search.params", "no parameter to search: give config key -> "
               "{type: float|int|categorical, ...}")
        for key, spec in self.params.items():
            _search_spec(f"hparams_search.params.{key}", spec)


SPEC_KEYS = {"float": ("low", "high", "log", "step"), "int": ("low", "high", "log", "step"),
             "categorical": ("choices",)}
"""What a search spec of each type takes (besides `type`): Optuna's suggest_float, suggest_int and
suggest_categorical arguments."""


def _search_spec(where: str, spec: Any) -> None:
    """One hparams_search.params entry, checked as Optuna would check it in the middle of a study."""
    kind = spec.get("type") if isinstance(spec, dict) else None
    _check(isinstance(kind, str) and kind in SPEC_KEYS, where, "needs type float, int or categorical")
    unknown = sorted(set(spec) - {"type", *SPEC_KEYS[kind]})
    _check(not unknown, where, f"unknown key {unknown[0] if unknown else ''!r} (type {kind} takes "
           f"{', '.join(SPEC_KEYS[kind])})")
    if kind == "categorical":
        choices = spec.get("choices")
        _check(isinstance(choices, list) and len(choices) > 0, where,
               f"choices must be a non-empty list, got {choices!r}")
        odd = [c for c in choices if c is not None and not isinstance(c, (bool, int, float, str))]
        _check(not odd, where, f"choice {odd[0] if odd else ''!r}: a choice is a number, a string, a boolean or null")
        _check(len({repr(c) for c in choices}) == len(choices), where, f"choices repeat a value: {choices}")
    else:
        _search_range(where, kind, spec)


def _search_range(where: str, kind: str, spec: dict) -> None:
    missing = [k for k in ("low", "high") if k not in spec]
    _check(not missing, where, f"{kind} needs {', '.join(missing)}")
    low, high, log, step = spec["low"], spec["high"], spec.get("log", False), spec.get("step")
    wanted = (int,) if kind == "int" else (int, float)
    for name, value in (("low", low), ("high", high), ("step", step)):
        _check((name == "step" and value is None) or (isinstance(value, wanted) and not isinstance(value, bool)
                                                       and math.isfinite(value)), where,
               f"{name} must be a finite {'integer' if kind == 'int' else 'number'}, got {value!r}")
    _check(isinstance(log, bool), where, f"log must be true or false, got {log!r}")
    _check(low <= high, where, f"low ({low}) > high ({high})")
    _check(not log or low > 0, where, f"log: true needs low > 0, got {low}")
    if step is not None:
        _check(step > 0, where, f"step must be > 0, got {step}")
        _check(not log or (kind == "int" and step == 1), where, "step and log: true do not combine (Optuna "
               "draws on a grid or log-uniformly, not both)")
        span = Decimal(str(high)) - Decimal(str(low))
        _check(span % Decimal(str(step)) == 0, where, f"step ({step}) does not divide high - low ({high} - {low}): "
               f"Optuna would move high")


def _search_fits(search: OptunaConfig) -> None:
    """Each searched key is a config key that takes the values drawn for it (`type: float` on an
    integer key, or a choice of the wrong type, would fail every trial that draws it)."""
    for key, spec in search.params.items():
        where = f"hparams_search.params.{key}"
        group, _, name = key.partition(".")
        fields = GROUPS[group].__dataclass_fields__ if group in GROUPS else {}
        _check(name in fields, where, "not a config key (see `python train.py --cfg job` for the valid keys)")
        node = OmegaConf.structured(GROUPS[group])
        probes = spec["choices"] if spec["type"] == "categorical" else [spec["low"], spec["high"]]
        for value in [*probes, *([0.5] if spec["type"] == "float" else [])]:
            try:
                node[name] = value
            except Exception:  # OmegaConf's ValidationError: the field's type refuses the value
                what = f"choice {value!r}" if spec["type"] == "categorical" else f"type {spec['type']}"
                raise ConfigError(f"{where}: {what} does not fit {key} (of type {fields[name].type})") from None


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    hparams_search: Optional[OptunaConfig] = None
    """Set by `hparams_search=NAME`: train.py then runs an Optuna study instead of one run."""

    def __post_init__(self) -> None:
        _ints_in_range(self)
        _floats_finite(self)
        if self.hparams_search is not None:
            _search_fits(self.hparams_search)
        _check(not self.trainer.hellaswag_interval or self.data.tokenizer == "gpt2" or self.data.source == "bin",
               "trainer.hellaswag_interval", "HellaSwag is scored in GPT-2 tokens: use data.tokenizer=gpt2 (or "
               "trainer.hellaswag_interval=0)")
        _check(self.optim.name != "muon" or self.trainer.parallel != "fsdp", "optim.name",
               "muon orthogonalises whole matrices, which trainer.parallel=fsdp shards over the processes: use "
               "trainer.parallel=ddp (or optim.name=adamw with fsdp)")
        o = self.optim
        _check(not o.decay_lr or o.lr_decay_iters is None or o.lr_decay_iters >= o.warmup_iters, "optim.lr_decay_iters",
               f"the decay would end ({o.lr_decay_iters}) before the warmup does (optim.warmup_iters={o.warmup_iters}): "
               f"raise optim.lr_decay_iters or lower optim.warmup_iters")
        _check(self.model_block_size >= self.data.block_size, "model.block_size",
               f"the model's context ({self.model.block_size}) must hold a whole training window "
               f"(data.block_size={self.data.block_size})")

    @property
    def model_block_size(self) -> int:
        """model.block_size, resolved: null follows data.block_size."""
        return self.data.block_size if self.model.block_size is None else self.model.block_size

    @property
    def warmup_iters(self) -> int:
        """optim.warmup_iters, unless the warmup would not end inside a run whose decay follows
        trainer.max_iters: then a tenth of the run (the trainer says so in one line)."""
        o = self.optim
        if o.decay_lr and o.lr_decay_iters is None and o.warmup_iters >= self.trainer.max_iters:
            return self.trainer.max_iters // 10
        return o.warmup_iters

    @property
    def lr_decay_iters(self) -> int:
        """optim.lr_decay_iters, resolved: null follows trainer.max_iters."""
        return self.trainer.max_iters if self.optim.lr_decay_iters is None else self.optim.lr_decay_iters


GROUPS = {"data": DataConfig, "model": ModelConfig, "optim": OptimConfig,
          "trainer": TrainerConfig, "logger": LoggerConfig}


def flatten(tree: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}: a config as dotted keys."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def _extra_keys(given: dict, known: dict, prefix: str = "") -> list[str]:
    extra = []
    for key, value in given.items():
        if key not in known:
            extra.append(prefix + key)
        elif isinstance(value, dict) and isinstance(known[key], dict):
            extra += _extra_keys(value, known[key], f"{prefix}{key}.")
    return extra


def from_hydra(cfg: DictConfig) -> Config:
    """Resolve the composed config and build the dataclasses, running every __post_init__ check.
    Keys appended with `+key=value` that no schema declares are refused, not silently ignored."""
    given = OmegaConf.to_container(cfg, resolve=False)
    known = OmegaConf.to_container(OmegaConf.structured(Config), resolve=False)
    extra = _extra_keys(given, known)
    if extra:
        raise ConfigError(f"{extra[0]}: unknown config key (see `python train.py --cfg job` for "
                          f"the valid keys)")
    try:
        return OmegaConf.to_object(cfg)
    except ConfigError:
        raise
    except Exception as exc:  # OmegaConf wraps errors raised inside __post_init__
        cause = exc
        while cause.__cause__ is not None or cause.__context__ is not None:
            cause = cause.__cause__ or cause.__context__
            if isinstance(cause, ConfigError):
                raise cause from None
        raise ConfigError(str(exc).splitlines()[0]) from None


def to_dict(config: Config) -> dict:
    """A plain, JSON-able dict of the config with the values a run uses: a null that follows another
    key is replaced by what it resolves to (for checkpoints and W&B)."""
    tree = OmegaConf.to_container(OmegaConf.structured(config), resolve=True)
    tree["optim"]["lr_decay_iters"] = config.lr_decay_iters
    tree["trainer"]["ckpt_interval"] = config.trainer.ckpt_every
    tree["model"]["block_size"] = config.model_block_size
    return tree
