"""Model FLOPs utilisation: the share of the device's peak that a run's training FLOPs use.

FLOPs per token are PaLM's estimate, as nanoGPT's `estimate_mfu`: 6N for the forward and backward
passes through the N parameters (position table excluded; the token table counts, being the output
layer too) plus 12·L·H·Q·T for attention (L layers, H heads of Q dims, T tokens of context). The peak is
the dense bf16/fp16 tensor-core figure of the GPU (a table by device name; nanoGPT hard-codes the
A100's 312 TFLOP/s and so reports over 100% on an H100), or `trainer.peak_tflops` (needed on a CPU).
"""

from __future__ import annotations

from typing import Optional

import torch

from gpt2.model.gpt import GPT

PEAK_TFLOPS = (  # (a fragment of torch.cuda.get_device_name(), dense bf16/fp16 TFLOP/s); first match wins
    ("H200", 989.0), ("H100 NVL", 835.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("GH200", 989.0),
    ("A100", 312.0), ("L40S", 362.0), ("L4", 121.0), ("A10", 125.0), ("RTX 4090", 165.2),
    ("RTX 3090", 71.0), ("V100", 125.0), ("T4", 65.0),
)


def flops_per_token(model: GPT, block_size: int) -> float:
    """Training FLOPs per token of `block_size`-token windows (forward + backward)."""
    c = model.config
    return 6 * model.num_params() + 12 * c.n_layer * c.n_head * (c.n_embd // c.n_head) * block_size


def peak_tflops(device: torch.device, override: Optional[float] = None) -> Optional[float]:
    """The device's peak in TFLOP/s: the override, else the GPU table; None when unknown (a CPU)."""
    if override is not None:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for fragment, peak in PEAK_TFLOPS if fragment in name), None)


def utilisation(tokens_per_sec: float, flops_per_token: float, peak: Optional[float]) -> Optional[float]:
    """MFU: the share of `peak` TFLOP/s (every device's together) that training at this speed uses;
    None without a peak."""
    return tokens_per_sec * flops_per_token / (peak * 1e12) if peak else None
