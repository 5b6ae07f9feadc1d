"""The data pipeline of ../shared/seed, done right.

text -> tokens (cached by content hash and tokenizer) -> contiguous train/valid split -> a Dataset of all
(x, y) windows -> DataLoaders whose samplers draw window starts from their own seeded torch.Generator and
whose dataset builds a whole (B, T) batch with one gather.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator, Optional

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from gpt2.config import DataConfig
from gpt2.download import TINY_SHAKESPEARE, atomic_file, fetch, sha256_bytes
from gpt2.errors import DataError
from gpt2.tokenizer import Tokenizer, build_tokenizer, tokenizer_from_state

log = logging.getLogger(__name__)

CACHE_VERSION = 1


# --------------------------------------------------------------------------------------------- text
def source_path(cfg: DataConfig, text_path: Optional[str | Path] = None) -> Path:
    """The text to train on: `text_path`, else data.path, else Tiny Shakespeare (fetched if needed)."""
    path = text_path if text_path is not None else cfg.path
    if path is None:
        return fetch(TINY_SHAKESPEARE, cfg.data_dir, cfg.mirror)
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"data.path={path} does not exist (or is not a file)")
    return path


def read_text(path: Path) -> tuple[str, str]:
    """The file's text and the sha256 of its bytes; an empty or non-UTF-8 file is a DataError."""
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"{path} is empty: there is no text to train on")
    try:
        return raw.decode("utf-8"), sha256_bytes(raw)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text (invalid byte at offset {exc.start}); "
                        f"convert it to UTF-8 or point data.path at a text file") from None


# --------------------------------------------------------------------------------------- tokens
def load_tokens(cfg: DataConfig, text_path: Optional[str | Path] = None
                ) -> tuple[str, torch.Tensor, Tokenizer]:
    """(corpus, tokens, encoder): the text, its tokens as a 1-D int64 tensor, and the tokenizer.

    Tokens are cached under data_dir/cache keyed by the text's sha256 and the tokenizer, so a second
    run with the same text does not tokenize again."""
    corpus, tokens, encoder, _ = _load_tokens(cfg, text_path)
    return corpus, tokens, encoder


def _load_tokens(cfg: DataConfig, text_path: Optional[str | Path]
                 ) -> tuple[str, torch.Tensor, Tokenizer, str]:
    """load_tokens plus the text's sha256 (hashed once, for the cache key and for checkpoints)."""
    path = source_path(cfg, text_path)
    corpus, text_sha256 = read_text(path)
    cache = Path(cfg.data_dir) / "cache" / f"{text_sha256[:20]}-{cfg.tokenizer}.pt"
    if cache.is_file():
        try:
            saved = torch.load(cache, weights_only=True)
            if saved["version"] == CACHE_VERSION:
                encoder = tokenizer_from_state(saved["tokenizer"], cfg.data_dir, cfg.mirror)
                return corpus, saved["tokens"].long(), encoder, text_sha256
        except Exception as exc:  # a damaged cache is rebuilt, never trusted
            log.warning("ignoring unreadable token cache %s (%s)", cache, exc)
    encoder = build_tokenizer(cfg.tokenizer, corpus, cfg.data_dir, cfg.mirror)
    tokens = torch.tensor(encoder.encode(corpus), dtype=torch.int64)
    with atomic_file(cache) as f:
        torch.save({"version": CACHE_VERSION, "tokens": tokens.to(torch.int32),
                    "tokenizer": encoder.state(), "source": str(path)}, f)
    log.info("tokenized %s: %d tokens with %s, cached in %s", path, len(tokens), encoder.name, cache)
    return corpus, tokens, encoder, text_sha256


def train_valid_split(tokens: torch.Tensor, train_frac: float = 0.9) -> tuple[torch.Tensor, torch.Tensor]:
    """Contiguous split: the first int(N * train_frac) tokens train, the rest validate (views, no copy)."""
    split = int(len(tokens) * train_frac)
    return tokens[:split], tokens[split:]


# -------------------------------------------------------------------------------------- dataset
class LMSequenceDataset(Dataset):
    """All (x, y) windows of a token sequence: x = tokens[i:i+T], y = tokens[i+1:i+1+T], i < N - T.

    `dataset[i]` gives one window, as in the seed; `dataset[starts]` with a 1-D LongTensor of B starts
    gives a whole batch, x and y each (B, T) and contiguous, built by one gather per tensor from
    strided views (no per-sample calls, no collate). With pin_memory=True batches land in pinned memory
    directly, ready for `.to("cuda", non_blocking=True)`. The tokens may live anywhere a 1-D integer
    tensor can (memory, a memory-mapped file)."""

    def __init__(self, tokens: torch.Tensor, block_size: int, pin_memory: bool = False):
        if len(tokens) < block_size + 1:
            raise ValueError(f"{len(tokens)} tokens are not enough to build one block of "
                             f"block_size={block_size} (need at least {block_size + 1})")
        self.tokens = tokens
        self.block_size = block_size
        self.pin_memory = pin_memory
        # every length-T window, as a (N-T+1, T) strided view (no copy): x of start i is row i and
        # y of start i is row i+1
        self._windows = tokens.unfold(0, block_size, 1)

    def __len__(self) -> int:
        return len(self.tokens) - self.block_size

    def __getitem__(self, index):
        if isinstance(index, torch.Tensor) and index.dim() == 1:
            return self._gather(index)
        return self._windows[index], self._windows[index + 1]

    def _gather(self, starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x and y for B starts with one index_select into one buffer: rows [0, B) are x, [B, 2B) y."""
        B = len(starts)
        out = torch.empty((2 * B, self.block_size), dtype=self.tokens.dtype, pin_memory=self.pin_memory)
        torch.index_select(self._windows, 0, torch.cat((starts, starts + 1)), out=out)
        return out[:B], out[B:]


# ------------------------------------------------------------------------------------- samplers
def _mix(seed: int, epoch: int) -> int:
    """A generator seed per (seed, epoch) without the collisions of seed + epoch."""
    return (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9) % (2**63 - 1)


class WindowBatchSampler(Sampler[torch.Tensor]):
    """Yields one LongTensor of batch_size window starts per batch, one epoch per `iter()`.

    The order is a function of (seed, epoch) only, drawn from a private torch.Generator: the same
    seed gives the same batches whatever num_workers is and whatever else draws random numbers. Its
    whole state is `state_dict()` (seed, epoch, next batch in the epoch), so a run can resume mid-epoch
    and a distributed variant can shard the same permutation."""

    def __init__(self, num_windows: int, batch_size: int, *, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = True):
        if drop_last and num_windows < batch_size:
            raise ValueError(f"only {num_windows} windows, fewer than one batch of {batch_size}: "
                             f"lower data.batch_size or data.block_size, or use more text")
        self.num_windows = num_windows
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.epoch = 0
        self.start_batch = 0

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_windows // self.batch_size
        return -(-self.num_windows // self.batch_size)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def state_dict(self) -> dict:
        return {"seed": self.seed, "epoch": self.epoch, "start_batch": self.start_batch}

    def load_state_dict(self, state: dict) -> None:
        self.seed = state["seed"]
        self.set_epoch(state["epoch"], state["start_batch"])

    def order(self) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.num_windows)
        generator = torch.Generator().manual_seed(_mix(self.seed, self.epoch))
        return torch.randperm(self.num_windows, generator=generator)

    def __iter__(self) -> Iterator[torch.Tensor]:
        order = self.order()
        for b in range(self.start_batch, len(self)):
            yield order[b * self.batch_size: (b + 1) * self.batch_size]


class FixedBatchSampler(Sampler[torch.Tensor]):
    """Validation: the same batches every time, never shuffled.

    With num_batches, num_batches * batch_size windows spread evenly over the whole split (a
    deterministic estimate from every part of it); without, non-overlapping windows at stride T, so
    every validation token is scored exactly once."""

    def __init__(self, num_windows: int, batch_size: int, block_size: int,
                 num_batches: Optional[int] = None):
        if num_batches is None:
            starts = torch.arange(0, num_windows, block_size)
        else:
            count = min(num_batches * batch_size, num_windows)
            starts = torch.linspace(0, num_windows - 1, count).round().long()
        self.batches = list(starts.split(batch_size))

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter(self.batches)


# ---------------------------------------------------------------------------------- dataloaders
def _as_is(batch):
    """The dataset already returns the finished (x, y) batch: nothing to collate."""
    return batch


class WindowLoader(DataLoader):
    """A DataLoader whose sampler yields whole batches of starts and whose dataset gathers them.

    With num_workers=0 it iterates `dataset[starts] for starts in sampler` directly: the batch is
    already built, so the per-batch machinery of DataLoader (fetcher, collate, profiler hooks) would
    only add ~40 us to each ~30 us batch. With workers it is an ordinary DataLoader."""

    def __iter__(self):
        if self.num_workers > 0:
            return super().__iter__()
        return (self.dataset[starts] for starts in self.sampler)


def _loader(dataset: LMSequenceDataset, sampler: Sampler, cfg: DataConfig, pin: bool) -> DataLoader:
    workers = cfg.num_workers
    return WindowLoader(
        dataset,
        sampler=sampler,
        batch_size=None,  # the sampler yields whole batches of starts; the dataset gathers them
        num_workers=workers,
        pin_memory=pin and workers > 0,  # with workers, pin on the loader's pin thread
        persistent_workers=workers > 0,
        collate_fn=_as_is,
        # the loader seeds its workers from this generator, never from torch's global RNG
        generator=torch.Generator().manual_seed(cfg.seed),
    )


def make_dataloader(cfg: DataConfig, text_path: Optional[str | Path] = None, *,
                    eval_iters: Optional[int] = None, device: str | torch.device = "cpu") -> dict:
    """dict(train_dl, valid_dl, encoder, text_sha256). Batches are (x, y), each (B, T) int64.

    train_dl shuffles (if data.shuffle) with its seeded WindowBatchSampler and drops the last partial
    batch; valid_dl yields a fixed set of eval_iters batches (or one pass of non-overlapping windows).
    Batches are pinned only when `device` is CUDA."""
    _, tokens, encoder, text_sha256 = _load_tokens(cfg, text_path)
    train_tokens, valid_tokens = train_valid_split(tokens, cfg.train_frac)
    pin = torch.device(device).type == "cuda"
    in_main = cfg.num_workers == 0
    try:
        train_ds = LMSequenceDataset(train_tokens, cfg.block_size, pin_memory=pin and in_main)
        valid_ds = LMSequenceDataset(valid_tokens, cfg.block_size, pin_memory=pin and in_main)
        train_sampler = WindowBatchSampler(len(train_ds), cfg.batch_size, shuffle=cfg.shuffle,
                                           seed=cfg.seed)
    except ValueError as exc:
        raise DataError(f"{exc} (corpus: {len(tokens)} tokens, train_frac={cfg.train_frac}: "
                        f"{len(train_tokens)} train, {len(valid_tokens)} valid)") from None
    valid_sampler = FixedBatchSampler(len(valid_ds), cfg.batch_size, cfg.block_size, eval_iters)
    return dict(train_dl=_loader(train_ds, train_sampler, cfg, pin),
                valid_dl=_loader(valid_ds, valid_sampler, cfg, pin),
                encoder=encoder, text_sha256=text_sha256)


def infinite_batches(loader: DataLoader) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches across epochs for an iteration-based loop; the sampler's epoch advances each pass."""
    sampler: WindowBatchSampler = loader.sampler
    while True:
        for x, y in loader:
            sampler.start_batch += 1
            yield x, y
        sampler.set_epoch(sampler.epoch + 1)
