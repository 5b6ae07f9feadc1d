"""MFU (gpt2/train/mfu.py): FLOPs per token, the GPU peak table, and the figure in every run's rows."""

import json

import pytest
import torch

from gpt2.train.mfu import flops_per_token, peak_tflops
from gpt2.model.gpt import GPT, GPTConfig
from gpt2.run.logger import read_metrics

from conftest import TINY, run_train


@pytest.mark.slow
def test_flops_per_token_of_gpt2_small_by_hand():
    model = GPT(GPTConfig())  # 124M: 12 layers, 12 heads of 64, 768 wide, padded vocab 50304
    n = 50304 * 768 + 12 * (12 * 768 * 768 + 13 * 768) + 2 * 768  # parameters without the position table
    assert model.num_params() == n
    assert flops_per_token(model, 1024) == 6 * n + 12 * 12 * 12 * 64 * 1024


@pytest.mark.parametrize("name,peak", [("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA H100 PCIe", 756.0),
                                       ("NVIDIA H200", 989.0), ("NVIDIA A100-SXM4-40GB", 312.0),
                                       ("NVIDIA L4", 121.0), ("NVIDIA GeForce RTX 4090", 165.2),
                                       ("Some Future GPU", None)])
def test_the_peak_comes_from_the_gpu_name(monkeypatch, name, peak):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    assert peak_tflops(torch.device("cuda")) == peak
    assert peak_tflops(torch.device("cuda"), override=100.0) == 100.0
    assert peak_tflops(torch.device("cpu")) is None


@pytest.mark.slow
def test_every_row_and_the_summary_report_mfu_against_the_configured_peak(tmp_path, data_dir):
    run = run_train(tmp_path / "run", *TINY, f"data.data_dir={data_dir}", "logger=none", "trainer.peak_tflops=0.5")
    assert run.returncode == 0, run.stderr
    rows, summary = read_metrics(tmp_path / "run")[1:], json.loads((tmp_path / "run" / "summary.json").read_text())
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, vocab_size=50257, block_size=16, bias=False))
    for row in rows:
        assert row["mfu"] == pytest.approx(row["tokens_per_sec"] * flops_per_token(model, 16) / 0.5e12, rel=1e-9)
    assert summary["mfu"] == pytest.approx(summary["tokens_per_sec"] * flops_per_token(model, 16) / 0.5e12)
    assert ", mfu " in (tmp_path / "run" / "train.log").read_text()
    plain = run_train(tmp_path / "cpu", *TINY, f"data.data_dir={data_dir}", "logger=none")  # no peak on a CPU
    assert "mfu" not in read_metrics(tmp_path / "cpu")[-1]
    assert json.loads((tmp_path / "cpu" / "summary.json").read_text())["mfu"] is None and plain.returncode == 0
