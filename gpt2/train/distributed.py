"""Data-parallel training across processes (torchrun + DistributedDataParallel).

torchrun starts one process per device and sets RANK, LOCAL_RANK and WORLD_SIZE; `Dist.from_env()`
reads them (a plain `python train.py` is world 1 and nothing here does anything). The process group
uses NCCL on CUDA (one device per local rank) and gloo on the CPU.

What the rest of the harness asks of it: every rank computes the same global batch split into
disjoint slices (gpt2/data/loaders.py), gradients are averaged by DDP, logged losses are reduced over
ranks, a stop or a NaN on any rank stops every rank at the same step (`max_int`, `min_int` in the
trainer's `poll_stop` and `FiniteGuard`), and only rank 0 writes files or talks to W&B.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.distributed as torch_dist

from gpt2.errors import ConfigError
from gpt2.world import World

# a collective that waits this long means a peer is gone (torchrun ends the others sooner when one
# dies); long enough for rank 0 to tokenize a large text while the others wait for its cache
TIMEOUT = datetime.timedelta(minutes=60)


@dataclass(frozen=True)
class Dist(World):
    """This process's place among the processes (`World`) and the collectives over them."""

    cpu_group: Any = field(default=None, compare=False, repr=False)
    """The gloo group for small host-side agreements beside NCCL (set by `init`; None: the default
    group, gloo already on the CPU)."""

    def check_batch(self, batch_size: int) -> None:
        """data.batch_size is the global batch: each of the world_size processes takes a slice."""
        if batch_size % self.world_size:
            raise ConfigError(f"data.batch_size={batch_size} is the global batch (windows per micro-step over "
                              f"all processes) and must divide by the {self.world_size} processes: use a "
                              f"multiple of {self.world_size}")

    def device(self, device: torch.device) -> torch.device:
        """One CUDA device per local rank."""
        if self.enabled and device.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return device

    def init(self, device: torch.device) -> "Dist":
        """Join the process group (NCCL on CUDA, gloo on the CPU); returns this Dist with its host-side
        group. Nothing to do in one process."""
        if not self.enabled or torch_dist.is_initialized():
            return self
        if device.type == "cuda":
            torch.cuda.set_device(device)
        torch_dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=TIMEOUT,
                                      device_id=device if device.type == "cuda" else None)
        # small host-side agreements (the stop flag each step) go over gloo on CPU tensors: with NCCL
        # they would make the host wait for the GPU every step
        return replace(self, cpu_group=torch_dist.new_group(backend="gloo", timeout=TIMEOUT)
                       if device.type == "cuda" else None)

    def close(self) -> None:
        if torch_dist.is_initialized():
            torch_dist.destroy_process_group()

    def barrier(self) -> None:
        if self.enabled:
            torch_dist.barrier()

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum `tensor` over ranks, in place (the tensor on every rank)."""
        if self.enabled:
            torch_dist.all_reduce(tensor, op=torch_dist.ReduceOp.SUM)
        return tensor

    def mean(self, tensor: torch.Tensor) -> torch.Tensor:
        return self.sum_(tensor.detach().clone()) / self.world_size

    def max_int(self, value: int) -> int:
        """The largest of every rank's value (the same answer on every rank), agreed on the host."""
        if not self.enabled:
            return value
        tensor = torch.tensor(value, dtype=torch.long)
        torch_dist.all_reduce(tensor, op=torch_dist.ReduceOp.MAX, group=self.cpu_group)
        return int(tensor.item())

    def min_int(self, value: int) -> int:
        return -self.max_int(-value)


def is_peer_failure(exc: BaseException) -> bool:
    """A collective that failed because another rank died or left (its own error is shown there)."""
    if isinstance(exc, getattr(torch_dist, "DistBackendError", ())):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(
        marker in text for marker in ("Connection closed by peer", "Connection reset by peer", "Broken pipe"))


def is_sharded(model: torch.nn.Module) -> bool:
    """A model whose parameters FSDP2 (`fully_shard`) split over the ranks."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def _whole():
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True)


class WholeModelState:
    """A sharded model's state as one whole state dict with the plain names (what a checkpoint holds):
    gathered from every rank (a collective: all ranks call it; rank 0 gets it), loaded into the shards."""

    def __init__(self, model: torch.nn.Module):
        self.model = model

    def state_dict(self) -> dict:
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        return get_model_state_dict(self.model, options=_whole())

    def load_state_dict(self, state: dict) -> None:
        from torch.distributed.checkpoint.state_dict import set_model_state_dict

        set_model_state_dict(self.model, state, options=_whole())


class WholeOptimizerState(WholeModelState):
    """The same for the optimizer of a sharded model (its state keyed by parameter names)."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer):
        super().__init__(model)
        self.optimizer = optimizer

    def state_dict(self) -> dict:
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        return get_optimizer_state_dict(self.model, self.optimizer, options=_whole())

    def load_state_dict(self, state: dict) -> None:
        from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

        set_optimizer_state_dict(self.model, self.optimizer, state, options=_whole())
