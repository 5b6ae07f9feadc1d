"""A trained model for inference, from wherever it is: a run directory (its ckpt/best.pt, else
ckpt/last.pt), a checkpoint, or a Hugging Face GPT-2 folder; with its tokenizer. Decoding itself is
`GPT.generate` (gpt2/model/gpt.py: KV cache, temperature, top-k, top-p)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from gpt2.train.checkpoint import BEST, LAST, load_model
from gpt2.errors import CheckpointError
from gpt2.model.gpt import GPT
from gpt2.model.pretrained import GPT2_VOCAB, load_pretrained
from gpt2.data.tokenizer import GPT2Tokenizer, Tokenizer, tokenizer_from_state


def checkpoint_of(path: Path) -> Path:
    """The checkpoint a path names: itself, or a run directory's best.pt, else its last.pt."""
    if path.is_file():
        return path
    for name in (BEST, LAST):
        if (path / "ckpt" / name).is_file():
            return path / "ckpt" / name
    raise CheckpointError(f"{path} is neither a checkpoint, a run directory with ckpt/{BEST} or ckpt/{LAST}, nor "
                          f"a Hugging Face GPT-2 folder (config.json)")


def load_for_inference(path: Path, device: torch.device, data_dir: str = "data",
                       mirror: Optional[str] = None) -> tuple[GPT, Tokenizer]:
    """(model in eval mode on device, its tokenizer)."""
    path = Path(path).expanduser()
    if path.is_dir() and (path / "config.json").is_file():
        model = load_pretrained(path)  # the folder itself (str(Path("./gpt2")) would name the Hub's gpt2)
        if model.vocab_size != GPT2_VOCAB:
            raise CheckpointError(f"{path} scores {model.vocab_size} tokens: a Hugging Face folder is read with the "
                                  f"GPT-2 tokenizer ({GPT2_VOCAB} tokens)")
        return model.to(device).eval(), GPT2Tokenizer(data_dir, mirror)
    model, state = load_model(checkpoint_of(path), device)
    return model, tokenizer_from_state(state["tokenizer"], data_dir, mirror)
