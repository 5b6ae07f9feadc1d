"""Checkpoints: what they hold, atomic saving, and loading with one clear error for a bad file."""

from __future__ import annotations

import io
from pathlib import Path

import torch
import torch.nn as nn

from gpt2.download import atomic_write_bytes
from gpt2.errors import CheckpointError

FORMAT_VERSION = 1


def unwrap(model: nn.Module) -> nn.Module:
    """The module whose state_dict has plain GPT-2 names (no torch.compile `_orig_mod.` prefix)."""
    return getattr(model, "_orig_mod", model)


def checkpoint_state(model: nn.Module, optimizer: torch.optim.Optimizer, config: dict, iter_num: int,
                     best_val_loss: float, tokenizer: dict) -> dict:
    base = unwrap(model)
    return {
        "format_version": FORMAT_VERSION,
        "model": base.state_dict(),
        "model_args": {"vocab_size": base.vocab_size, "block_size": base.block_size},
        "optimizer": optimizer.state_dict(),
        "config": config,
        "iter": iter_num,
        "best_val_loss": best_val_loss,
        "tokenizer": tokenizer,
    }


def save_checkpoint(path: Path, state: dict) -> None:
    """Serialise in memory, then write to a temporary file beside `path`, fsync and rename: a crash
    during the save leaves the previous file intact."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(Path(path), buffer.getvalue())


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
