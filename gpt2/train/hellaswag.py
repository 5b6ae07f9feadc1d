"""HellaSwag, scored as a completion (build-nanogpt's hellaswag.py): each of an example's four endings
follows its context, and the model's choice is the ending with the lowest mean cross-entropy per
ending token (acc_norm; acc uses the summed loss). OpenAI's GPT-2 124M scores acc_norm 0.2955 on the
10,042 validation examples (`hellaswag_val.jsonl`, from https://github.com/rowanz/hellaswag, data/).

The file is fetched like every download (gpt2/data/download.py: HELLASWAG_VAL, verified by its git blob
id), read and encoded once (`load_examples`), then scored as often as wanted (`score`): by
scripts/eval_hellaswag.py, and by the trainer every trainer.hellaswag_interval steps (which is why this
lives under train/: training may not import eval/)."""

from __future__ import annotations

import json
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ContextManager, Iterator, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from gpt2.data.download import HELLASWAG_VAL, MIRROR_OPTION, fetch
from gpt2.errors import DataError
from gpt2.files import shown
from gpt2.train.runtime import Runtime

SOURCE = HELLASWAG_VAL.url
EXAMPLE = 'a HellaSwag line is {"ctx": text, "endings": [4 texts], "label": 0-3}'


def fetch_file(data_dir: str | Path, mirror: Optional[str | Path] = None,
               mirror_option: str = MIRROR_OPTION) -> Path:
    """The verified validation file in data_dir (hellaswag/hellaswag_val.jsonl): there already, copied
    from the mirror or downloaded; else one DataError saying where to put it."""
    return fetch(HELLASWAG_VAL, data_dir, mirror, mirror_option=mirror_option)


def read_examples(path: Path) -> Iterator[dict]:
    """The file's examples, each checked (`check_example`)."""
    for _, example in numbered_examples(path):
        yield example


def numbered_examples(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, example) for each non-blank line of the file; a line that is not a HellaSwag
    example is one DataError naming `file:line` and the field at fault."""
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} cannot be read ({getattr(exc, 'strerror', None) or exc}): download "
                        f"hellaswag_val.jsonl from {SOURCE}") from None
    for number, line in enumerate(lines, 1):
        if line.strip():
            yield number, check_example(line, f"{path}:{number}")


def check_example(line: str, where: str) -> dict:
    """The line's example: a JSON object whose ctx is text, endings 4 texts, label 0-3 (an int); a
    blank ctx or ending, which leaves nothing to score, is refused too."""
    try:
        example = json.loads(line)
    except (ValueError, RecursionError) as exc:  # RecursionError: brackets nested thousands deep
        raise DataError(f"{where}: not JSON ({str(exc)[:100]})") from None
    if not isinstance(example, dict):
        raise DataError(f"{where}: a JSON {type(example).__name__}, not a HellaSwag example ({EXAMPLE})")
    problem = example_problem(example)
    if problem:
        raise DataError(f"{where}: {problem} ({EXAMPLE})")
    return example


def example_problem(example: dict) -> Optional[str]:
    """What is wrong with the example's fields, or None."""
    for field in ("ctx", "endings", "label"):
        if field not in example:
            return f"{field} is missing"
    endings, label = example["endings"], example["label"]
    if not isinstance(endings, list) or len(endings) != 4:
        got = f"{len(endings)} of them" if isinstance(endings, list) else shown(endings)
        return f"endings must be a list of 4 texts, got {got}"
    for field, text in (("ctx", example["ctx"]), *((f"endings[{i}]", e) for i, e in enumerate(endings))):
        if not isinstance(text, str):
            return f"{field} must be text, got {shown(text)}"
        if not text.strip():
            return f"{field} is empty: " + ("no context to score the endings after" if field == "ctx" else
                                            "nothing to score")
    if type(label) is not int or not 0 <= label <= 3:  # not a bool, a float or a string
        return f"label must be 0, 1, 2 or 3 (the right ending), got {shown(label)}"
    return None


@dataclass(frozen=True)
class Encoded:
    """One example as the model scores it: its four rows of context + ending tokens."""

    ids: torch.Tensor
    """(4, W) token ids, each row zero-padded on the right to the longest."""
    mask: torch.Tensor
    """(4, W - 1) 1.0 at the positions whose next token is an ending's, else 0."""
    label: int


def encode_example(encoder, example: dict, block_size: int) -> Encoded:
    """The example's rows; a context that would not fit block_size is cut from the left. Raises
    ValueError where the encoder lacks a character (a char vocabulary), or leaves a context or an
    ending no token (nothing to score)."""
    context = encoder.encode(example["ctx"])
    if not context:
        raise ValueError("ctx encodes to no token")
    rows = []
    for i, ending in enumerate(example["endings"]):
        tail = encoder.encode(" " + ending)
        if not tail:
            raise ValueError(f"endings[{i}] encodes to no token")
        rows.append(((context + tail)[-(block_size + 1):], len(tail)))
    width = max(len(tokens) for tokens, _ in rows)
    ids = torch.zeros((4, width), dtype=torch.long)
    mask = torch.zeros((4, width - 1))
    for i, (tokens, ending_length) in enumerate(rows):
        ids[i, :len(tokens)] = torch.tensor(tokens)
        mask[i, max(0, len(tokens) - 1 - ending_length): len(tokens) - 1] = 1  # the positions predicting the ending
    return Encoded(ids, mask, example["label"])


def load_examples(path: Path, encoder, block_size: int, limit: int = 0) -> list[Encoded]:
    """The first `limit` examples of the file (0: all), encoded once for every scoring."""
    examples = []
    for number, example in numbered_examples(path):
        try:
            examples.append(encode_example(encoder, example, block_size))
        except ValueError as exc:  # a char model meets a character its vocabulary lacks
            raise DataError(f"{path}:{number}: cannot be encoded in {encoder.name} tokens: {exc}") from None
        if len(examples) == limit:  # the lines after it are not read
            break
    if not examples:
        raise DataError(f"{path} holds no examples")
    return examples


@torch.no_grad()
def ending_losses(model: nn.Module, example: Encoded, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed, mean) cross-entropy of each ending's tokens after the context: two (4,) tensors on device."""
    x, y = example.ids[:, :-1].to(device), example.ids[:, 1:].to(device)
    mask = example.mask.to(device)
    logits = model(x, y)[0].float()
    losses = F.cross_entropy(logits.transpose(1, 2), y, reduction="none") * mask
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


def score_share(model: nn.Module, examples: Sequence[Encoded], device, rank: int = 0, world_size: int = 1,
                compute: Callable[[], ContextManager] = nullcontext) -> Score:
    """This process's share of the examples (every world_size-th from `rank`), in eval mode (the
    model's train/eval mode is restored after). Every rank runs the same number of forwards, a rank
    past the last example scoring the first again uncounted: FSDP gathers parameters in each."""
    counts = torch.zeros(3, dtype=torch.long, device=device)  # examples, correct, correct_norm: no sync per example
    training = model.training
    model.eval()
    try:
        per_rank = -(-len(examples) // world_size)
        for index in range(rank, per_rank * world_size, world_size):
            example = examples[index] if index < len(examples) else examples[0]
            with compute():
                total, mean = ending_losses(model, example, device)
            if index < len(examples):
                counts[0] += 1
                counts[1] += (total.argmin() == example.label).long()
                counts[2] += (mean.argmin() == example.label).long()
    finally:
        model.train(training)
    return Score(*counts.tolist())


def score(model: nn.Module, examples: Sequence[Encoded], rt: Runtime) -> Score:
    """HellaSwag accuracy over `examples`, under rt's autocast; under torchrun each rank scores its
    share and the counts are summed (every rank must call it at the same step)."""
    local = score_share(model, examples, rt.device, rt.dist.rank, rt.dist.world_size, rt.compute)
    counts = torch.tensor([local.examples, local.correct, local.correct_norm], dtype=torch.long, device=rt.device)
    return Score(*rt.dist.sum_(counts).tolist())


def evaluate_file(model: nn.Module, encoder, path: Path, device, limit: int = 0) -> Score:
    """The model's score on the first `limit` examples of the file (0: all), in float32."""
    examples = load_examples(path, encoder, model.block_size, limit)
    return score_share(model, examples, torch.device(device))
