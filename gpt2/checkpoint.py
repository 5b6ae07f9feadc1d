"""Checkpoints: what they hold, atomic saving, pruning, loading with one clear error for a bad file,
and the check that a checkpoint fits the config it is resumed with."""

from __future__ import annotations

import os
import random
from pathlib import Path
import torch
import torch.nn as nn

from gpt2.config import flatten
from gpt2.download import atomic_file
from gpt2.errors import CheckpointError

FORMAT_VERSION = 2
LAST, BEST = "last.pt", "best.pt"

# Config keys that may differ between a checkpoint and the run resuming it: how long to run and how
# often to log/evaluate/save, where to run it, and where data and logs live (the text itself is
# checked by its sha256). Anything else (model shape, tokenizer, data order, optimizer settings)
# would not continue the same run and is refused.
RESUMABLE_CHANGES = (
    "trainer.max_iters", "trainer.eval_interval", "trainer.eval_iters", "trainer.log_interval",
    "trainer.ckpt_interval", "trainer.keep_last", "trainer.resume", "trainer.device", "trainer.dtype",
    "trainer.compile", "trainer.progress", "trainer.sample_tokens", "optim.lr_decay_iters",
    "data.num_workers", "data.data_dir", "data.mirror", "data.path", "logger.",
)


def unwrap(model: nn.Module) -> nn.Module:
    """The module whose state_dict has plain GPT-2 names (no torch.compile `_orig_mod.` prefix)."""
    return getattr(model, "_orig_mod", model)


# ------------------------------------------------------------------------------------ RNG state
def capture_rng_state() -> dict:
    """Every RNG a training step may draw from: python, numpy, torch CPU and each CUDA device."""
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


def restore_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "numpy" in state:
        import numpy as np

        kind, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((kind, keys.numpy(), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------------- save / load
def save_checkpoint(path: Path, state: dict) -> None:
    """Write to a temporary file beside `path`, fsync and rename: a crash or SIGKILL during the save
    leaves the previous file intact."""
    with atomic_file(path) as f:
        torch.save(state, f)


def save_periodic(ckpt_dir: Path, state: dict, keep_last: int) -> Path:
    """Write ckpt/last.pt; with keep_last > 0 also keep it as ckpt/iter_NNNNNNN.pt (a hard link: no
    second write) and delete all but the newest keep_last of those."""
    last = ckpt_dir / LAST
    save_checkpoint(last, state)
    if keep_last > 0:
        numbered = ckpt_dir / f"iter_{state['iter']:07d}.pt"
        numbered.unlink(missing_ok=True)
        try:
            os.link(last, numbered)
        except OSError:  # a filesystem without hard links
            save_checkpoint(numbered, state)
        for old in sorted(ckpt_dir.glob("iter_*.pt"))[:-keep_last]:
            old.unlink()
    return last


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, OSError, UnpicklingError, ... by damage
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated or not a torch file: "
                              f"{str(exc).splitlines()[0]})") from None
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} is not a gpt2-harness checkpoint (format {FORMAT_VERSION})")
    return state


# ------------------------------------------------------------------------------- compatibility
def check_resumable(path: Path, state: dict, config: dict, tokenizer: dict, text_sha256: str) -> None:
    """Refuse, naming the file and the first mismatch, a checkpoint that the config cannot continue."""
    if state["text_sha256"] != text_sha256:
        raise CheckpointError(f"{path} does not match this config: it was trained on another text "
                              f"(sha256 {state['text_sha256'][:12]}..., this text {text_sha256[:12]}...)")
    saved_tok, tok = state["tokenizer"], tokenizer
    if saved_tok != tok:
        what = ("the vocabulary" if saved_tok.get("name") == tok.get("name") else
                f"tokenizer {saved_tok.get('name')!r}, the config has {tok.get('name')!r}")
        raise CheckpointError(f"{path} does not match this config: it was trained with {what} "
                              f"(vocab_size {saved_tok.get('vocab_size')} vs {tok.get('vocab_size')})")
    saved, now = flatten(state["config"]), flatten(config)
    for key in sorted(set(saved) | set(now)):
        if saved.get(key) != now.get(key) and not key.startswith(RESUMABLE_CHANGES):
            raise CheckpointError(f"{path} does not match this config: {key} was {saved.get(key)!r} "
                                  f"when it was saved, the config says {now.get(key)!r} (only run "
                                  f"length, intervals, device and logging may change on resume)")
