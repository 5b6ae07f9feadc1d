"""Where and how training runs: device and precision (Runtime), and what running out of memory looks like."""

from __future__ import annotations

import ctypes
import logging
import os
import sys
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Optional

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from gpt2.train.distributed import Dist
from gpt2 import errors
from gpt2.errors import ConfigError

log = logging.getLogger(__name__)

SDPA_BACKENDS = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
                 "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}
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


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware: Intel AMX (Xeon Sapphire Rapids and
    later; 4x float32's matmul speed: nanoGPT's CPU char run 1.3x faster in bfloat16) or AVX512-BF16
    (AMD Zen 4 and later, Intel Cooper Lake; on a 2-core AMD EPYC, 2026-12-06: that run 68.4 s instead
    of 97.0 s at the same loss, 1.8768 against 1.8754, and the default run 64.3 s instead of 94.4 s).
    Without either, bfloat16 on a CPU is slower than float32."""
    for check in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):  # torch's own (oneDNN's) checks
        supported = getattr(torch.cpu, check, None)
        if supported is not None and supported():
            return True
    return False


M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse instead of handing it back to the kernel.

    A CPU training step allocates and frees the same large tensors every time (the logits alone are
    B x T x vocab floats); by default glibc maps each one over 32 MB afresh and returns freed heap
    to the kernel, so every step faults all those pages in again: 204,000 page faults per step of
    the default run, over half its time. Served from a heap that is never trimmed, a step faults
    none. Returns whether it applied (glibc only; elsewhere nothing changes). GPT2_KEEP_FREED_MEMORY=0
    leaves glibc's defaults (to measure the difference)."""
    if os.environ.get("GPT2_KEEP_FREED_MEMORY") == "0":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS, Windows)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """auto: bfloat16 on CUDA where supported (else float16), and on CPUs with AMX or AVX512-BF16;
    float32 elsewhere."""
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if device.type == "cpu" and cpu_has_fast_bf16() else torch.float32
    return DTYPES[name]


@dataclass
class Runtime:
    """Where and in what precision the model runs."""

    device: torch.device
    dtype: torch.dtype
    scaler: Optional[torch.amp.GradScaler]
    dist: Dist = field(default_factory=Dist)
    """This process's place among torchrun's processes (world 1 without torchrun)."""
    attention: str = "auto"
    """The SDPA kernel forward and backward passes use (trainer.attention); auto: PyTorch's choice."""

    @classmethod
    def create(cls, device_name: str, dtype_name: str, num_threads: int = 0, tf32: bool = True,
               attention: str = "auto") -> "Runtime":
        """num_threads > 0 sets torch's CPU threads (for this process). Under torchrun, joins the
        process group (NCCL on CUDA, one device per local rank; gloo on the CPU)."""
        if num_threads:
            torch.set_num_threads(num_threads)
        dist = Dist.from_env()
        device = dist.device(resolve_device(device_name))
        dist = dist.init(device)
        dtype = resolve_dtype(dtype_name, device)
        if attention in ("efficient", "cudnn") and device.type != "cuda":
            raise ConfigError(f"trainer.attention={attention}: that kernel needs CUDA; on {device.type} use auto, "
                              f"flash or math")
        if device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
        if device.type == "cpu":
            keep_freed_memory()
        if device.type == "cpu" and dtype == torch.float16:
            log.warning("trainer.dtype=float16 on the CPU is far slower than float32 (few CPUs have fp16 "
                        "kernels): use trainer.dtype=float32 (or bfloat16) there")
        scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
        return cls(device, dtype, scaler, dist, attention)

    def compute(self) -> ExitStack:
        """What forward and backward passes run under: autocast to the run's dtype (none in float32)
        and the attention kernel asked for (trainer.attention)."""
        stack = ExitStack()
        if self.dtype != torch.float32:
            stack.enter_context(torch.autocast(device_type=self.device.type, dtype=self.dtype))
        if self.attention != "auto":
            stack.enter_context(sdpa_kernel(SDPA_BACKENDS[self.attention]))
        return stack

    def to_device(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.device, non_blocking=True)  # async from pinned memory on CUDA


def is_out_of_memory(exc: BaseException) -> bool:
    """A CUDA/MPS out-of-memory error, or a CPU allocation that failed (also inside torch.compile's
    wrapper of an error)."""
    if is_compile_error(exc):
        return is_out_of_memory(exc.inner_exception)
    return errors.is_out_of_memory(exc)


COMPILE_FIX = "install a working C/C++ compiler (gcc/g++) or set trainer.compile=false"


def is_compile_error(exc: BaseException) -> bool:
    """torch.compile's backend failed (torch._dynamo's BackendCompilerFailed, of which inductor's
    InductorError is one): looked up only where torch.compile was imported, as it raised nothing else."""
    dynamo = sys.modules.get("torch._dynamo.exc")
    return dynamo is not None and isinstance(exc, dynamo.BackendCompilerFailed)


def compile_failure(exc: BaseException) -> Optional[ConfigError]:
    """The one line for a torch.compile that could not build its kernels (a missing or broken
    compiler, most often), or None for any other error (running out of memory included)."""
    if not is_compile_error(exc) or is_out_of_memory(exc):
        return None
    inner = exc.inner_exception
    lines = [line.strip() for line in str(inner).splitlines() if line.strip()]
    errors = [line for line in lines if "error:" in line.lower()]  # a compiler's own first error
    cause = (errors or lines or [""])[0][:300]
    return ConfigError(f"trainer.compile: torch.compile could not build its kernels ({type(inner).__name__}: "
                       f"{cause}): {COMPILE_FIX}")


def check_compiler(device: torch.device) -> None:
    """Before data and model, on a CPU: the C++ compiler inductor builds its kernels with
    (torch._inductor.config.cpp.cxx: $CXX or g++) is there and runs; else one line. Elsewhere (CUDA:
    Triton, whose needs vary by version) a failure is told at the first compiled step."""
    if device.type != "cpu":
        return
    from torch._inductor import cpp_builder, exc

    try:
        cpp_builder.get_cpp_compiler()
    except exc.InvalidCxxCompiler as missing:
        raise ConfigError(f"trainer.compile=true: torch.compile builds C++ kernels on the cpu and no C++ compiler "
                          f"works ({missing}): {COMPILE_FIX}") from None


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
