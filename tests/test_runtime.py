import signal

import pytest
import torch

from gpt2.errors import ConfigError
from gpt2.runtime import Runtime, StopRequest, resolve_device, resolve_dtype


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


def test_stop_request_catches_signals_and_restores_handlers():
    before = signal.getsignal(signal.SIGTERM)
    with StopRequest() as stop:
        signal.raise_signal(signal.SIGTERM)
        assert stop.signal_name == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) == before
