"""Checkpoints: one file holding the state of every stateful part of a run, written atomically.

Each part saves and loads its own state (`state_dict`/`load_state_dict`: the model, AdamW, the LR
schedule, the training loader's position, the loop's progress, the RNGs, the fp16 loss scaler); the
`Checkpointer` only collects them, as torchtitan's checkpointer and litgpt's resume state do. Beside
the parts a file holds what identifies the run (config, tokenizer, data fingerprint, `model_args`),
so `load_model` builds the model from a checkpoint alone.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Callable, Optional, Protocol

import torch

from gpt2.errors import CheckpointError
from gpt2.files import atomic_file
from gpt2.model.gpt import GPT, GPTConfig
from gpt2.train.distributed import is_peer_failure

FORMAT_VERSION = 3
LAST, BEST = "last.pt", "best.pt"
NUMBERED = re.compile(r"^iter_(\d+)\.pt$")


class Stateful(Protocol):
    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class RNGState:
    """Every RNG a training step may draw from: python, numpy, torch CPU and each CUDA device."""

    def state_dict(self) -> dict:
        state = {"python": random.getstate(), "torch": torch.get_rng_state()}
        try:
            import numpy as np

            kind, keys, pos, has_gauss, cached = np.random.get_state()
            state["numpy"] = (kind, torch.from_numpy(keys.copy()), pos, has_gauss, cached)
        except ImportError:
            pass
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict) -> None:
        random.setstate(state["python"])
        torch.set_rng_state(state["torch"])
        if "numpy" in state:
            import numpy as np

            kind, keys, pos, has_gauss, cached = state["numpy"]
            np.random.set_state((kind, keys.numpy(), pos, has_gauss, cached))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


class Checkpointer:
    """Collects the state_dict() of named stateful parts and restores them. A part given as None (the
    loss scaler outside fp16) is saved as None, and a part that one side has as None is skipped on
    restore (fp16 may change to bf16 on resume); a part the state lacks altogether is an error."""

    def __init__(self, **parts: Optional[Stateful]):
        self.parts = parts

    def state_dict(self) -> dict:
        return {name: None if part is None else part.state_dict() for name, part in self.parts.items()}

    def load_state_dict(self, state: dict) -> None:
        missing = [name for name in self.parts if name not in state]
        if missing:
            raise CheckpointError(f"it holds no state for {', '.join(missing)}: not a whole checkpoint")
        for name, part in self.parts.items():
            if part is not None and state[name] is not None:
                load_part(name, part, state[name])


def load_part(name: str, part: Stateful, state: object) -> None:
    """part.load_state_dict(state); a state it cannot take (damaged, or not this run's) is a
    CheckpointError saying which part (out of memory and a lost torchrun peer are raised as they are)."""
    try:
        part.load_state_dict(state)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as exc:
        if isinstance(exc, torch.OutOfMemoryError) or is_peer_failure(exc):
            raise
        reason = f"it has no {exc.args[0]!r}" if isinstance(exc, KeyError) else _reason(exc)
        raise CheckpointError(f"its {name} state does not fit this run ({reason})") from None


# --------------------------------------------------------------------------------- save / load
def save_checkpoint(path: Path, state: dict) -> None:
    """Write to a temporary file beside `path`, fsync and rename: a crash or SIGKILL during the save
    leaves the previous file intact."""
    with atomic_file(path) as f:
        torch.save(state, f)


def save_periodic(ckpt_dir: Path, state: dict, keep_last: int) -> Path:
    """Write ckpt/last.pt and keep its numbered copies (`keep_numbered`)."""
    last = ckpt_dir / LAST
    save_checkpoint(last, state)
    keep_numbered(ckpt_dir, state, keep_last)
    return last


def keep_numbered(ckpt_dir: Path, state: dict, keep_last: int) -> None:
    """With keep_last > 0 keep ckpt/last.pt (just saved) as ckpt/iter_NNNNNNN.pt too (a hard link: no
    second write) and delete all but the keep_last highest-numbered of those."""
    if keep_last <= 0:
        return
    last, numbered = ckpt_dir / LAST, ckpt_dir / f"iter_{state['iter']:07d}.pt"
    numbered.unlink(missing_ok=True)
    try:
        os.link(last, numbered)
    except OSError:  # a filesystem without hard links
        save_checkpoint(numbered, state)
    for old in numbered_checkpoints(ckpt_dir)[:-keep_last]:
        old.unlink()


def checkpoint_of(path: Path) -> Path:
    """The checkpoint a path names: itself, or a run directory's best.pt, else its last.pt."""
    if path.is_file():
        return path
    for name in (BEST, LAST):
        if (path / "ckpt" / name).is_file():
            return path / "ckpt" / name
    raise CheckpointError(f"{path} is neither a checkpoint, a run directory with ckpt/{BEST} or ckpt/{LAST}, nor "
                          f"a Hugging Face GPT-2 folder (config.json)")


def run_checkpoints(run_dir: Path) -> list[Path]:
    """The checkpoints a run left in run_dir/ckpt: last.pt, best.pt, iter_*.pt (those that exist)."""
    ckpt = Path(run_dir) / "ckpt"
    return [p for p in (ckpt / LAST, ckpt / BEST) if p.is_file()] + numbered_checkpoints(ckpt)


def numbered_iteration(path: Path) -> Optional[int]:
    """The iteration an iter_NNNNNNN.pt file's name says; None for other names."""
    m = NUMBERED.match(Path(path).name)
    return int(m.group(1)) if m else None


def numbered_checkpoints(ckpt_dir: Path) -> list[Path]:
    """ckpt/iter_*.pt, oldest first by iteration number (iter_10000000 comes after iter_9999999)."""
    found = [(int(m.group(1)), p) for p in Path(ckpt_dir).glob("iter_*.pt") if (m := NUMBERED.match(p.name))]
    return [p for _, p in sorted(found)]


def _reason(exc: object, limit: int = 100) -> str:
    """The start of torch's (often paragraph-long) message for a file it cannot load, on one line."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if text.startswith("Weights only load failed"):
        return "it holds Python objects, not only tensors"
    return text if len(text) <= limit else text[:limit].rstrip() + "..."


def read_torch_file(path: Path, map_location: str | torch.device = "cpu") -> object:
    """A .pt file's contents (tensors and plain values only), memory-mapped; damage is a CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=True)  # read as used
    except Exception as exc:  # torch raises RuntimeError, OSError, UnpicklingError, ... by damage
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated or not a torch file: "
                              f"{_reason(exc)})") from None


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict:
    return harness_checkpoint(Path(path), read_torch_file(path, map_location))


def harness_checkpoint(path: Path, state: object) -> dict:
    """A loaded .pt file as a gpt2-harness checkpoint of this format (older formats upgraded), checked
    against SCHEMA: whoever reads it (a resume, model.init_from, evaluation, sampling) gets damage as
    one CheckpointError naming the file. Its weights are checked (`check_weights`) against the model
    each of them builds: the architecture the checkpoint records, or the resuming run's."""
    version = state.get("format_version") if isinstance(state, dict) else None
    try:
        if version == 2:
            state = upgrade_v2(state)
    except KeyError as exc:
        raise CheckpointError(f"{path} is not a whole gpt2-harness checkpoint (format 2 without "
                              f"{exc.args[0]!r})") from None
    except (TypeError, AttributeError) as exc:
        raise CheckpointError(f"{path} is a damaged checkpoint (format 2: {_reason(exc, 60)})") from None
    if version not in (2, FORMAT_VERSION):
        raise CheckpointError(f"{path} is not a gpt2-harness checkpoint (format {FORMAT_VERSION})")
    check_schema(path, state)
    model_config(path, state["model_args"])  # its weights are checked against it where it is built
    return state


def upgrade_v2(state: dict) -> dict:
    """A format-2 checkpoint (gpt2-harness before the stateful parts) as format 3: same weights,
    optimizer, RNGs and data position; the schedule it was trained with, from its config."""
    config, model_args = state["config"], state["model_args"]
    model, optim = config["model"], config["optim"]
    state["model_args"] = {**{k: model[k] for k in ("n_layer", "n_head", "n_embd", "dropout", "bias",
                                                     "vocab_multiple")}, **model_args}
    model["block_size"] = model_args["block_size"]  # the config as format 3 records it: resolved
    state["data_fingerprint"] = state.pop("text_sha256")
    state["train_loader"] = state.pop("sampler")
    state["schedule"] = {"lr": optim["lr"], "min_lr": optim["min_lr"], "warmup_iters": optim["warmup_iters"],
                         "decay_iters": optim["lr_decay_iters"], "decay": optim["decay_lr"],
                         "anchor_iter": None, "anchor_lr": None}
    state["format_version"] = FORMAT_VERSION
    return state


# What a checkpoint of this format holds: each key and the types its value may have.
SCHEMA = {"config": dict, "model_args": dict, "tokenizer": dict, "data_fingerprint": str, "iter": int,
          "best_val_loss": (float, int), "wandb_id": (str, type(None)), "model": dict, "optimizer": dict,
          "schedule": dict, "train_loader": dict, "progress": dict, "rng": dict, "grad_scaler": (dict, type(None))}
CONFIG_SECTIONS = ("data", "model", "optim", "trainer")


def check_schema(path: Path, state: dict) -> None:
    """Refuse a checkpoint that lacks a key of SCHEMA or holds a value of another type there, a config
    without its sections, or a tokenizer state that is not one."""
    for key, types in SCHEMA.items():
        if key not in state:
            raise CheckpointError(f"{path} is not a whole gpt2-harness checkpoint: it has no {key!r} (damaged, "
                                  f"or written by another program)")
        if not isinstance(state[key], types) or isinstance(state[key], bool):
            wanted = " or ".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))
            raise CheckpointError(f"{path} is a damaged checkpoint: its {key!r} is of type "
                                  f"{type(state[key]).__name__}, not {wanted}")
    missing = [name for name in CONFIG_SECTIONS if not isinstance(state["config"].get(name), dict)]
    if missing:
        raise CheckpointError(f"{path} is a damaged checkpoint: its config has no {missing[0]!r} section")
    tok, vocab = state["tokenizer"], state["model_args"].get("vocab_size")
    chars = tok.get("chars") if tok.get("name") == "char" else ""
    if (not isinstance(tok.get("name"), str) or not isinstance(tok.get("vocab_size"), int)
            or not isinstance(chars, str) or (chars and len(chars) != tok["vocab_size"])):
        raise CheckpointError(f"{path} is a damaged checkpoint: its tokenizer state {_reason(repr(tok), 60)} "
                              f"is not a tokenizer's")
    if vocab != tok["vocab_size"]:
        raise CheckpointError(f"{path} is a damaged checkpoint: its model scores {vocab} tokens, its tokenizer "
                              f"has {tok['vocab_size']}")


MODEL_INTS = ("n_layer", "n_head", "n_embd", "vocab_size", "block_size", "vocab_multiple")


def model_config(path: Path, model_args: dict, config: Callable[[dict], GPTConfig] = lambda args: GPTConfig(**args)
                 ) -> GPTConfig:
    """The architecture a checkpoint records: its model_args made a GPTConfig by `config` (a nanoGPT
    ckpt.pt's are read as ours); model_args that describe no model are a CheckpointError."""
    not_int = [k for k in MODEL_INTS if k in model_args and (type(model_args[k]) is not int)]
    try:
        if not_int:
            raise TypeError(f"{not_int[0]}={model_args[not_int[0]]!r} is not a whole number")
        return config(model_args)
    except (TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{path} is a damaged checkpoint: its model_args do not describe a model "
                              f"({_reason(exc)})") from None


def check_weights(path: Path, weights: dict, model: GPT, exact: bool = True,
                  against: str = "the architecture it records") -> None:
    """Refuse weights that are not tensors, or lack or add a parameter of `model`, or differ in shape.
    Not `exact`: a tied head may be left out, and a token table may be padded to another multiple (the
    rows past the vocabulary are never scored)."""
    ours, vocab = model.state_dict(), model.config.vocab_size
    optional = {"lm_head.weight"} if not exact and model.config.tie_embeddings else set()
    missing = [k for k in ours if k not in weights and k not in optional]
    extra = [str(k) for k in weights if k not in ours]
    if missing or extra:
        raise CheckpointError(f"{path}: its weights do not fit {against} (missing: {', '.join(missing[:3]) or 'none'}; "
                              f"unexpected: {', '.join(extra[:3]) or 'none'})")
    for key, tensor in weights.items():
        if not isinstance(tensor, torch.Tensor):
            raise CheckpointError(f"{path} is a damaged checkpoint: its weight {key} is of type "
                                  f"{type(tensor).__name__}, not a tensor")
        shape, want = tuple(tensor.shape), tuple(ours[key].shape)
        padded = not exact and key in ("transformer.wte.weight", "lm_head.weight") and shape[1:] == want[1:]
        if shape != want and not (padded and min(shape[0], want[0]) >= vocab):
            raise CheckpointError(f"{path}: {key} is {shape}, {against} implies {want}")


def load_model(path: Path, device: str | torch.device = "cpu") -> tuple[GPT, dict]:
    """The model saved in a checkpoint, built from the checkpoint alone (its `model_args`), in eval
    mode on `device`; and the checkpoint (its tokenizer state, config, ...). Does not touch the
    global RNG."""
    state = load_checkpoint(path, map_location="cpu")
    with torch.random.fork_rng(devices=[]):  # the random init is overwritten anyway
        model = GPT(GPTConfig(**state["model_args"]))
    check_weights(path, state["model"], model)
    model.load_state_dict(state["model"])
    return model.to(device).eval(), state
