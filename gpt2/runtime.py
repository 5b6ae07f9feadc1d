"""Where and how training runs: device and precision (Runtime), and what running out of memory looks like."""

from __future__ import annotations

import logging
import sys
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Optional

import torch

from gpt2.distributed import Dist
from gpt2.errors import ConfigError

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"trainer.device: {name!r} asked for, but CUDA is not available here "
                          f"(use trainer.device=auto or cpu)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"trainer.device: {name!r} asked for, but MPS is not available here")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return DTYPES[name]


@dataclass
class Runtime:
    """Where and in what precision the model runs."""

    device: torch.device
    dtype: torch.dtype
    scaler: Optional[torch.amp.GradScaler]
    dist: Dist = field(default_factory=Dist)
    """This process's place among torchrun's processes (world 1 without torchrun)."""

    @classmethod
    def create(cls, device_name: str, dtype_name: str, num_threads: int = 0) -> "Runtime":
        """num_threads > 0 sets torch's CPU threads (for this process). Under torchrun, joins the
        process group (NCCL on CUDA, one device per local rank; gloo on the CPU)."""
        if num_threads:
            torch.set_num_threads(num_threads)
        dist = Dist.from_env()
        device = dist.device(resolve_device(device_name))
        dist.init(device)
        dtype = resolve_dtype(dtype_name, device)
        if device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        if device.type == "cpu" and dtype == torch.float16:
            log.warning("trainer.dtype=float16 on the CPU is far slower than float32 (few CPUs have fp16 "
                        "kernels): use trainer.dtype=float32 (or bfloat16) there")
        scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
        return cls(device, dtype, scaler, dist)

    def autocast(self):
        if self.dtype == torch.float32:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def to_device(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.device, non_blocking=True)  # async from pinned memory on CUDA


def is_out_of_memory(exc: BaseException) -> bool:
    """A CUDA/MPS out-of-memory error, or a CPU allocation that failed."""
    return isinstance(exc, (torch.OutOfMemoryError, MemoryError)) or (
        isinstance(exc, RuntimeError) and ("out of memory" in str(exc) or "can't allocate memory" in str(exc)))


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB: its own high-water mark where Linux keeps one
    (ru_maxrss would also count the parent's memory at the fork that started it)."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
