"""HellaSwag, scored as a completion (build-nanogpt's hellaswag.py): each of an example's four endings
follows its context, and the model's choice is the ending with the lowest mean cross-entropy per
ending token (acc_norm; acc uses the summed loss). OpenAI's GPT-2 124M scores acc_norm 0.2955 on the
10,042 validation examples (`hellaswag_val.jsonl`, from https://github.com/rowanz/hellaswag, data/)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F

from gpt2.errors import DataError
from gpt2.model.gpt import GPT

SOURCE = "https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_val.jsonl"


def read_examples(path: Path) -> Iterator[dict]:
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} cannot be read ({getattr(exc, 'strerror', None) or exc}): download "
                        f"hellaswag_val.jsonl from {SOURCE}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            example = json.loads(line)
            if len(example["endings"]) != 4 or example["label"] not in range(4) or not isinstance(example["ctx"], str):
                raise ValueError("needs ctx, 4 endings and a label 0-3")
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{path}:{number} is not a HellaSwag example ({exc})") from None
        yield example


@torch.no_grad()
def ending_losses(model: GPT, encoder, example: dict, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed, mean) cross-entropy of each ending's tokens after the context: two (4,) tensors."""
    context = encoder.encode(example["ctx"])
    rows = []
    for ending in example["endings"]:
        tail = encoder.encode(" " + ending)
        rows.append(((context + tail)[-(model.block_size + 1):], len(tail)))  # the context cut from the left
    width = max(len(tokens) for tokens, _ in rows)
    ids = torch.zeros((4, width), dtype=torch.long)
    mask = torch.zeros((4, width - 1))
    for i, (tokens, ending_length) in enumerate(rows):
        ids[i, :len(tokens)] = torch.tensor(tokens)
        mask[i, max(0, len(tokens) - 1 - ending_length): len(tokens) - 1] = 1  # the positions predicting the ending
    x, y = ids[:, :-1].to(device), ids[:, 1:].to(device)
    logits = model(x, y)[0].float()
    losses = F.cross_entropy(logits.transpose(1, 2), y, reduction="none").cpu() * mask
    return losses.sum(1), losses.sum(1) / mask.sum(1)


@dataclass
class Score:
    examples: int = 0
    correct: int = 0
    correct_norm: int = 0

    @property
    def acc(self) -> float:
        return self.correct / max(self.examples, 1)

    @property
    def acc_norm(self) -> float:
        return self.correct_norm / max(self.examples, 1)


def evaluate_file(model: GPT, encoder, path: Path, device, limit: int = 0) -> Score:
    score = Score()
    model.eval()
    for example in read_examples(path):
        if limit and score.examples >= limit:
            break
        try:
            total, mean = ending_losses(model, encoder, example, device)
        except ValueError as exc:  # a char model meets a character its vocabulary lacks
            raise DataError(f"{path}: example {example.get('ind')} cannot be encoded: {exc}") from None
        score.examples += 1
        score.correct += int(total.argmin()) == example["label"]
        score.correct_norm += int(mean.argmin()) == example["label"]
    if not score.examples:
        raise DataError(f"{path} holds no examples")
    return score
