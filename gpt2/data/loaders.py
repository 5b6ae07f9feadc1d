"""From tokens to batches: a Dataset of every (x, y) window of a token sequence, seeded samplers, and
the DataLoaders a run iterates.

The pipeline: a token source (gpt2/data/sources.py: text -> tokens -> contiguous train/valid split) ->
`LMSequenceDataset` over each split, where window i is x = tokens[i:i+T], y = tokens[i+1:i+1+T] ->
a sampler that draws whole batches of window starts from its own seeded generator (a shuffled
permutation of every window, once per epoch) -> `dataset[starts]`, one gather for the whole (B, T)
batch -> `make_dataloader`'s `DataLoaders` (train_dl, valid_dl, encoder).
"""

from __future__ import annotations

import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from gpt2.config import DataConfig
from gpt2.errors import DataError, HarnessError
from gpt2.data.permutation import FeistelPermutation
from gpt2.data.sources import TokenSource, make_source
from gpt2.data.tokenfiles import WIDEN, TokenFile
from gpt2.data.tokenizer import Tokenizer


# -------------------------------------------------------------------------------------- dataset
class LMSequenceDataset(Dataset):
    """All (x, y) windows of a token sequence: x = tokens[i:i+T], y = tokens[i+1:i+1+T], i < N - T.

    `dataset[i]` gives one window (x, y); `dataset[starts]` with a 1-D LongTensor of B starts
    gives a whole batch, x and y each (B, T) int64 and contiguous, built by one gather from strided
    views (no per-sample calls, no collate). With pin_memory=True batches land in pinned memory
    directly, ready for `.to("cuda", non_blocking=True)`. The tokens are a 1-D integer tensor in
    memory or a `TokenFile` (uint16 ids memory-mapped from disk, whose touched pages the dataset
    hands back to the kernel as it goes: resident memory stays bounded whatever the file's size)."""

    def __init__(self, tokens: torch.Tensor | TokenFile, block_size: int, pin_memory: bool = False):
        self.file = tokens if isinstance(tokens, TokenFile) else None
        tokens = self.file.tokens if self.file is not None else tokens
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
        if self.file is not None:
            self.file.check()
        x, y = self._windows[index].long(), self._windows[index + 1].long()
        return (x & WIDEN, y & WIDEN) if self.file is not None else (x, y)

    def _gather(self, starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x and y for B starts with one index_select into one buffer: rows [0, B) are x, [B, 2B) y."""
        B, T = len(starts), self.block_size
        out = torch.empty((2 * B, T), dtype=torch.int64, pin_memory=self.pin_memory)
        rows = torch.cat((starts, starts + 1))
        if self.file is None:  # tokens in memory, int64
            torch.index_select(self._windows, 0, rows, out=out)
        else:  # a token file's uint16 ids, read as int16: gather them, then widen into the batch
            self.file.check()  # one fstat: a file truncated meanwhile is one line, not a SIGBUS
            out.copy_(torch.index_select(self._windows, 0, rows)).bitwise_and_(WIDEN)
            self.file.touched(B, 2 * (T + 1))
        return out[:B], out[B:]

    def __getstate__(self) -> dict:
        """A DataLoader worker started by spawn gets the file's path, not a copy of its tokens."""
        return {"tokens": self.file or self.tokens, "block_size": self.block_size, "pin_memory": self.pin_memory}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["tokens"], state["block_size"], state["pin_memory"])


# ------------------------------------------------------------------------------------- samplers
def _mix(seed: int, epoch: int) -> int:
    """A generator seed per (seed, epoch) without the collisions of seed + epoch."""
    return (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9) % (2**63 - 1)


def shard(batch: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """Rank `rank`'s contiguous slice of a global batch of window starts (every window to one rank)."""
    if world_size == 1:
        return batch
    per = -(-len(batch) // world_size)
    return batch[rank * per: (rank + 1) * per]


class WindowBatchSampler(Sampler[torch.Tensor]):
    """Yields one LongTensor of batch_size window starts per batch, one epoch per `iter()`. Under
    torchrun batch_size is the global batch and each rank yields its slice of it (`shard`): the
    same windows, whatever the number of processes.

    An epoch visits every window once, in the order of a keyed permutation of (seed, epoch)
    (`FeistelPermutation`, O(1) memory: a batch's starts are computed when it is drawn, so 10^10
    windows cost what 10^3 do). Up to `CACHE_WINDOWS` windows the epoch's order is computed once, in
    one vectorised call (the same order, faster per batch). The same seed gives the same batches
    whatever num_workers is and whatever else draws random numbers. Its whole state is `state_dict()`
    (seed, epoch, next batch in the epoch), so a run can resume mid-epoch and a distributed run can
    shard the same permutation."""

    CACHE_WINDOWS = 1 << 22
    """Up to this many windows (32 MB of int64) an epoch's order is computed once."""

    def __init__(self, num_windows: int, batch_size: int, *, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = True, rank: int = 0, world_size: int = 1):
        if drop_last and num_windows < batch_size:
            raise ValueError(f"only {num_windows} windows, fewer than one batch of {batch_size}: "
                             f"lower data.batch_size or data.block_size, or use more text")
        self.num_windows = num_windows
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.start_batch = 0
        self.permutation = "feistel"
        """How the order is drawn: 'feistel'; 'randperm' for a run resumed from a checkpoint that
        predates it (torch.randperm, kept so such runs resume exactly)."""

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_windows // self.batch_size
        return -(-self.num_windows // self.batch_size)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def state_dict(self) -> dict:
        return {"seed": self.seed, "epoch": self.epoch, "start_batch": self.start_batch,
                "permutation": self.permutation}

    def load_state_dict(self, state: dict) -> None:
        self.seed = state["seed"]
        self.permutation = state.get("permutation", "randperm")
        self.set_epoch(state["epoch"], state["start_batch"])

    def order(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """This epoch's order: positions in the epoch -> window starts."""
        n = self.num_windows
        if not self.shuffle:
            return lambda positions: positions
        if self.permutation == "randperm":
            generator = torch.Generator().manual_seed(_mix(self.seed, self.epoch))
            return torch.randperm(n, generator=generator).__getitem__
        perm = FeistelPermutation(n, _mix(self.seed, self.epoch))
        if n <= self.CACHE_WINDOWS:
            return perm(torch.arange(n)).__getitem__
        return perm

    def __iter__(self) -> Iterator[torch.Tensor]:
        # the order and the start are read now, when iteration begins, not at the first batch
        order, size, n = self.order(), self.batch_size, self.num_windows
        return (order(shard(torch.arange(b * size, min((b + 1) * size, n)), self.rank, self.world_size))
                for b in range(self.start_batch, len(self)))


class FixedBatchSampler(Sampler[torch.Tensor]):
    """Validation: the same batches every time, never shuffled.

    With num_batches, num_batches * batch_size windows spread evenly over the whole split (a
    deterministic estimate from every part of it); without, non-overlapping windows at stride T, so
    every validation token is scored exactly once."""

    def __init__(self, num_windows: int, batch_size: int, block_size: int,
                 num_batches: Optional[int] = None, rank: int = 0, world_size: int = 1):
        if num_batches is None:
            starts = torch.arange(0, num_windows, block_size)
        else:
            count = min(num_batches * batch_size, num_windows)
            starts = torch.linspace(0, num_windows - 1, count).round().long()
        # under torchrun each rank scores its slice of every batch (the losses are summed over ranks);
        # every rank has as many batches (a slice of a short last batch may be empty)
        self.batches = [shard(batch, rank, world_size) for batch in starts.split(batch_size)]

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter(self.batches)


# ---------------------------------------------------------------------------------- dataloaders
def _as_is(batch):
    """The dataset already returns the finished (x, y) batch: nothing to collate."""
    return batch


def one_line_errors(batches: Iterator) -> Iterator:
    """A worker's batches; a HarnessError a worker raised (a token file changed during the run) comes
    back from torch with the worker's traceback in its message: raised again with its own line. Its
    frames are cleared (torch's re-raise is a reference cycle holding the loader's iterator: left to a
    garbage collection, its workers' shutdown waits 5 s for them)."""
    try:
        yield from batches
        return
    except HarnessError as exc:
        kind, prefix = type(exc), f"{type(exc).__module__}.{type(exc).__qualname__}: "
        line = str(exc).rstrip().splitlines()[-1]
        if "\n" not in str(exc).strip() or not line.startswith(prefix):
            raise
        traceback.clear_frames(exc.__traceback__)
    raise kind(line.removeprefix(prefix))


class WindowLoader(DataLoader):
    """A DataLoader whose sampler yields whole batches of starts and whose dataset gathers them.

    With num_workers=0 it iterates `dataset[starts] for starts in sampler` directly: the batch is
    already built, so the per-batch machinery of DataLoader (fetcher, collate, profiler hooks) would
    only add ~40 us to each ~30 us batch. With `data.prefetch` the next batch is drawn and gathered
    (into pinned memory, for CUDA) on a background thread while the caller computes on this one:
    torch releases the GIL in its kernels, and a memory-mapped corpus's page faults stall that thread,
    not the training loop. With workers it is an ordinary DataLoader."""

    def __init__(self, dataset: LMSequenceDataset, sampler: Sampler, cfg: DataConfig, pin: bool):
        workers = cfg.num_workers
        self.prefetch = pin if cfg.prefetch is None else cfg.prefetch
        super().__init__(
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

    def __iter__(self):
        if self.num_workers > 0:
            return one_line_errors(super().__iter__())
        if self.prefetch:
            return self._prefetched()
        return (self.dataset[starts] for starts in self.sampler)

    def _prefetched(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The same batches, each drawn and gathered on one background thread while the one before
        it is in use (only that thread advances the sampler's iterator)."""
        starts = iter(self.sampler)

        def gather() -> Optional[tuple[torch.Tensor, torch.Tensor]]:
            batch = next(starts, None)
            return None if batch is None else self.dataset[batch]

        # the thread works on this thread's GPU (a rank's own under torchrun), never on a default cuda:0
        on_gpu = self.dataset.pin_memory and torch.cuda.is_available()
        init = (torch.cuda.set_device, (torch.cuda.current_device(),)) if on_gpu else (None, ())
        with ThreadPoolExecutor(1, thread_name_prefix="gather", initializer=init[0], initargs=init[1]) as pool:
            pending = pool.submit(gather)
            while (batch := pending.result()) is not None:
                pending = pool.submit(gather)
                yield batch


class TrainLoader(WindowLoader):
    """The training loader. Its position in the data (epoch, next batch) is its state.

    Iterating it yields the rest of the current epoch and then moves to the next one, so each
    `for x, y in train_dl` is one epoch in a fresh seeded order, and `forever()` runs epoch after
    epoch for an iteration-based loop. `state_dict()` is the position after the batches already
    yielded (not those a worker prefetched), so a resumed run draws exactly the batch it would have
    drawn next."""

    sampler: "WindowBatchSampler"

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        sampler = self.sampler
        for batch in super().__iter__():
            sampler.set_epoch(sampler.epoch, sampler.start_batch + 1)  # consumed: the next one is due
            yield batch
        sampler.set_epoch(sampler.epoch + 1)

    def forever(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while True:
            yield from self

    def state_dict(self) -> dict:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state)


@dataclass
class DataLoaders:
    """What `make_dataloader` returns."""

    train_dl: TrainLoader
    """Shuffled (if data.shuffle) by its seeded sampler; drops the last partial batch of an epoch."""
    valid_dl: WindowLoader
    """The same fixed batches at every evaluation, never shuffled."""
    encoder: Tokenizer
    source: TokenSource
    """Where the tokens came from (its fingerprint goes into checkpoints)."""


def check_val_split(train_tokens: int, val_tokens: int, cfg: DataConfig) -> None:
    """Refuse, in one line, a validation split too small to measure: fewer tokens than one eval batch
    (batch_size windows; a window starts at every token, so batch_size + block_size tokens) or under
    data.min_val_frac of all tokens. data.min_val_frac=0 accepts any split."""
    total, batch = train_tokens + val_tokens, cfg.batch_size + cfg.block_size
    if cfg.min_val_frac == 0 or (val_tokens >= batch and val_tokens >= cfg.min_val_frac * total):
        return
    if val_tokens < batch:
        why = f"under one eval batch (data.batch_size + data.block_size = {batch:,} tokens)"
    else:
        why = f"under data.min_val_frac={cfg.min_val_frac}"
    fix = "prepare it with --split-by tokens" if cfg.source == "bin" else "lower data.train_frac"
    raise DataError(f"val split: {val_tokens:,} tokens ({100 * val_tokens / total:.2f}% of {total:,}), {why}: "
                    f"{fix}, or set data.min_val_frac=0 to train anyway")


def make_dataloader(cfg: DataConfig, *, eval_iters: Optional[int] = None,
                    device: str | torch.device = "cpu", rank: int = 0, world_size: int = 1) -> DataLoaders:
    """The train and validation loaders of the configured data. Batches are (x, y), each (B, T) int64.

    valid_dl yields eval_iters fixed batches (or, without eval_iters, one pass of non-overlapping
    windows: every validation token once); a validation split too small to measure is refused
    (`check_val_split`). Batches are pinned only when `device` is CUDA. With
    world_size > 1, cfg.batch_size is the global batch and this rank's loaders yield its slices."""
    source = make_source(cfg)
    train_tokens, valid_tokens = source.splits()
    pin = torch.device(device).type == "cuda"
    in_main = cfg.num_workers == 0
    try:
        train_ds = LMSequenceDataset(train_tokens, cfg.block_size, pin_memory=pin and in_main)
        check_val_split(len(train_tokens), len(valid_tokens), cfg)
        valid_ds = LMSequenceDataset(valid_tokens, cfg.block_size, pin_memory=pin and in_main)
        train_sampler = WindowBatchSampler(len(train_ds), cfg.batch_size, shuffle=cfg.shuffle,
                                           seed=cfg.seed, rank=rank, world_size=world_size)
    except ValueError as exc:
        raise DataError(f"{exc} ({source.describe()})") from None
    valid_sampler = FixedBatchSampler(len(valid_ds), cfg.batch_size, cfg.block_size, eval_iters, rank, world_size)
    return DataLoaders(train_dl=TrainLoader(train_ds, train_sampler, cfg, pin),
                       valid_dl=WindowLoader(valid_ds, valid_sampler, cfg, pin),
                       encoder=source.tokenizer, source=source)
