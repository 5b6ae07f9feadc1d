import subprocess
import sys
import signal

import pytest
import torch

from gpt2.errors import ConfigError
from gpt2.train.runtime import Runtime, is_out_of_memory, resolve_device, resolve_dtype
from gpt2.signals import STOP, Interrupted


def test_cpu_runtime_defaults(monkeypatch):
    from gpt2.train import runtime

    rt = Runtime.create("cpu", "float32")
    assert rt.device == torch.device("cpu") and rt.dtype == torch.float32 and rt.scaler is None
    # auto: bfloat16 where the CPU multiplies it in hardware (AMX, AVX512-BF16), float32 without
    assert Runtime.create("cpu", "auto").dtype == (torch.bfloat16 if runtime.cpu_has_fast_bf16() else torch.float32)
    for amx, dtype in ((True, torch.bfloat16), (False, torch.float32)):
        monkeypatch.setattr(runtime, "cpu_has_fast_bf16", lambda amx=amx: amx)
        assert resolve_dtype("auto", torch.device("cpu")) == dtype
        assert resolve_dtype("auto", torch.device("mps")) == torch.float32
    assert resolve_dtype("float16", torch.device("cpu")) == torch.float16
    assert resolve_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only message")
def test_cuda_without_a_gpu_is_a_config_error():
    with pytest.raises(ConfigError, match="trainer.device: 'cuda' asked for, but CUDA is not available"):
        resolve_device("cuda")
    assert resolve_device("auto") == torch.device("cpu")


def test_the_loop_defers_the_first_signal_and_restores_handlers():
    before = signal.getsignal(signal.SIGTERM)
    with STOP.deferred() as stop:
        signal.raise_signal(signal.SIGTERM)
        assert stop.received == "SIGTERM"
        with pytest.raises(Interrupted, match="stopped by SIGINT at once"):  # a second Ctrl-C
            signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGTERM) == before


def test_a_signal_outside_the_loop_ends_the_process_in_one_line():
    STOP.install()
    try:
        STOP.context = "during start-up (test)"
        with pytest.raises(Interrupted) as stopped:
            signal.raise_signal(signal.SIGTERM)
        assert isinstance(stopped.value, SystemExit)  # no `except Exception` swallows it
        assert str(stopped.value) == "stopped by SIGTERM during start-up (test)"
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL)
        STOP._installed = False


def test_out_of_memory_is_recognised():
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_out_of_memory(RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: "
                                         "can't allocate memory: you tried to allocate 51539607552 bytes"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))


def test_float16_on_the_cpu_warns(caplog):
    Runtime.create("cpu", "float16")
    assert "trainer.dtype=float16 on the CPU is far slower than float32" in caplog.text


def test_compute_applies_autocast_and_the_attention_kernel_asked_for():
    rt = Runtime.create("cpu", "bfloat16", attention="math")
    with rt.compute():
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
        assert torch.backends.cuda.math_sdp_enabled() and not torch.backends.cuda.flash_sdp_enabled()
    assert torch.backends.cuda.flash_sdp_enabled() and not torch.is_autocast_enabled("cpu")
    with Runtime.create("cpu", "float32").compute():
        assert not torch.is_autocast_enabled("cpu") and torch.backends.cuda.flash_sdp_enabled()
    with pytest.raises(ConfigError, match="trainer.attention=efficient: that kernel needs CUDA"):
        Runtime.create("cpu", "float32", attention="efficient")


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_a_cpu_runtime_reuses_freed_memory_without_page_faults():
    """The same 200 MB tensor allocated again and again: with glibc's defaults every page faults in
    every time (mmap'd afresh), with keep_freed_memory (what Runtime.create does on a CPU) it is
    reused from the heap without a fault."""
    code = """if True:
        import resource, sys, torch
        from gpt2.train.runtime import keep_freed_memory
        if sys.argv[1] == "keep":
            assert keep_freed_memory()
        def faults():
            torch.ones(50_000_000).sum()
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            torch.ones(50_000_000).sum()
            return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
        print(min(faults() for _ in range(6)))  # the heap settles within a few (fragments of other allocations)
    """
    counts = {how: int(subprocess.run([sys.executable, "-c", code, how], capture_output=True, text=True,
                                      check=True, timeout=120).stdout) for how in ("default", "keep")}
    assert counts["default"] > 40_000 and counts["keep"] < 1_000, counts
