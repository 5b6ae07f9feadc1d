import signal

import pytest
import torch

from gpt2.errors import ConfigError
from gpt2.runtime import Runtime, is_out_of_memory, resolve_device, resolve_dtype
from gpt2.signals import STOP, Interrupted


def test_cpu_runtime_defaults():
    rt = Runtime.create("cpu", "auto")
    assert rt.device == torch.device("cpu") and rt.dtype == torch.float32 and rt.scaler is None
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
