"""A trained model for inference, from wherever it is (gpt2/train/model_source.py): a run directory
(its ckpt/best.pt, else ckpt/last.pt), a checkpoint of ours or nanoGPT's, or a Hugging Face GPT-2
folder; with its tokenizer. Decoding itself is `GPT.generate` (gpt2/model/gpt.py: KV cache,
temperature, top-k, top-p)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from gpt2.data.tokenizer import Tokenizer, tokenizer_from_state
from gpt2.errors import CheckpointError
from gpt2.model.gpt import GPT
from gpt2.model.pretrained import GPT2_VOCAB
from gpt2.train.model_source import ModelSource, make_model, open_model


def load_source(path: Path, device: torch.device) -> tuple[GPT, ModelSource]:
    """(the model in eval mode on device, where it came from). The global RNG is not touched."""
    source = open_model(Path(path))  # a path: ./gpt2 is the folder, not the Hub's gpt2
    if source.kind == "huggingface" and source.config.vocab_size != GPT2_VOCAB:
        raise CheckpointError(f"{path} scores {source.config.vocab_size} tokens: a Hugging Face folder is read "
                              f"with the GPT-2 tokenizer ({GPT2_VOCAB} tokens)")
    with torch.random.fork_rng(devices=[]):  # the random init is overwritten anyway
        model = make_model(source)
    return model.to(device).eval(), source


def load_for_inference(path: Path, device: torch.device, data_dir: str = "data",
                       mirror: Optional[str] = None) -> tuple[GPT, Tokenizer]:
    """(model in eval mode on device, its tokenizer)."""
    model, source = load_source(path, device)
    if source.tokenizer is None:
        raise CheckpointError(f"{path} is a nanoGPT char model, whose checkpoint does not record its characters: "
                              f"start a run from it on its text (model.init_from={path} data.tokenizer=char) "
                              f"and sample that run")
    return model, tokenizer_from_state(source.tokenizer, data_dir, mirror)
