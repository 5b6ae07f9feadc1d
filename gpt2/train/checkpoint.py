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
from typing import Optional, Protocol

import torch

from gpt2.errors import CheckpointError
from gpt2.files import atomic_file
from gpt2.model.gpt import GPT, GPTConfig

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
                part.load_state_dict(state[name])


# --------------------------------------------------------------------------------- save / load
def save_checkpoint(path: Path, state: dict) -> None:
    """Write to a temporary file beside `path`, fsync and rename: a crash or SIGKILL during the save
    leaves the previous file intact."""
    with atomic_file(path) as f:
        torch.save(state, f)


def save_periodic(ckpt_dir: Path, state: dict, keep_last: int) -> Path:
    """Write ckpt/last.pt; with keep_last > 0 also keep it as ckpt/iter_NNNNNNN.pt (a hard link: no
    second write) and delete all but the keep_last highest-numbered of those."""
    last = ckpt_dir / LAST
    save_checkpoint(last, state)
    if keep_last > 0:
        numbered = ckpt_dir / f"iter_{state['iter']:07d}.pt"
        numbered.unlink(missing_ok=True)
        try:
            os.link(last, numbered)
        except OSError:  # a filesystem without hard links
            save_checkpoint(numbered, state)
        for old in numbered_checkpoints(ckpt_dir)[:-keep_last]:
            old.unlink()
    return last


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


def _reason(exc: Exception, limit: int = 100) -> str:
    """The start of torch's (often paragraph-long) message for a file it cannot load."""
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if first.startswith("Weights only load failed"):
        return "it holds Python objects, not only tensors"
    return first if len(first) <= limit else first[:limit].rstrip() + "..."


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
    """A loaded .pt file as a gpt2-harness checkpoint of this format (older formats upgraded)."""
    version = state.get("format_version") if isinstance(state, dict) else None
    try:
        if version == 2:
            return upgrade_v2(state)
    except KeyError as exc:
        raise CheckpointError(f"{path} is not a whole gpt2-harness checkpoint (format 2 without "
                              f"{exc.args[0]!r})") from None
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path} is not a gpt2-harness checkpoint (format {FORMAT_VERSION})")
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


def load_model(path: Path, device: str | torch.device = "cpu") -> tuple[GPT, dict]:
    """The model saved in a checkpoint, built from the checkpoint alone (its `model_args`), in eval
    mode on `device`; and the checkpoint (its tokenizer state, config, ...). Does not touch the
    global RNG."""
    state = load_checkpoint(path, map_location="cpu")
    with torch.random.fork_rng(devices=[]):  # the random init is overwritten anyway
        model = GPT(GPTConfig(**state["model_args"]))
    model.load_state_dict(state["model"])
    return model.to(device).eval(), state
