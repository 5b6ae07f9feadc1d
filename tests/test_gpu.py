"""CUDA-only checks, run on a GPU machine (`pytest -m gpu`); skipped where CUDA is absent."""

import math

import pytest
import torch

from gpt2.data.loaders import make_dataloader
from gpt2.run.logger import read_metrics
from gpt2.train.runtime import Runtime
from gpt2.train.trainer import train

from conftest import tiny_config

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_auto_picks_cuda_with_bf16_and_tf32():
    rt = Runtime.create("auto", "auto")
    assert rt.device.type == "cuda" and rt.dtype == torch.bfloat16 and rt.scaler is None
    assert torch.backends.cuda.matmul.allow_tf32


def test_batches_are_pinned_and_copied_asynchronously(data_dir):
    cfg = tiny_config(data_dir).data
    for workers in (0, 2):
        cfg.num_workers = workers
        loaders = make_dataloader(cfg, eval_iters=2, device="cuda")
        x, y = next(iter(loaders.train_dl))
        assert x.is_pinned() and y.is_pinned(), workers
        xv, _ = next(iter(loaders.valid_dl))
        assert xv.is_pinned()
        assert torch.equal(x.to("cuda", non_blocking=True).cpu(), x)


def test_bf16_training_on_cuda_matches_cpu_roughly(data_dir, tmp_path):
    gpu = train(tiny_config(data_dir, "trainer.device=cuda"), tmp_path / "gpu")
    cpu = train(tiny_config(data_dir, "trainer.device=cpu"), tmp_path / "cpu")
    assert gpu["device"] == "cuda" and gpu["dtype"] == "bfloat16"
    assert gpu["final_train_loss"] == pytest.approx(cpu["final_train_loss"], abs=0.15)
    assert read_metrics(tmp_path / "gpu")[-1]["iter"] == 20


def test_fp16_uses_a_grad_scaler(data_dir, tmp_path):
    rt = Runtime.create("cuda", "float16")
    assert rt.scaler is not None
    summary = train(tiny_config(data_dir, "trainer.device=cuda", "trainer.dtype=float16"), tmp_path)
    assert summary["dtype"] == "float16" and math.isfinite(summary["final_train_loss"])


def test_compiled_training_saves_plain_checkpoints(data_dir, tmp_path):
    summary = train(tiny_config(data_dir, "trainer.device=cuda", "trainer.compile=true"), tmp_path)
    assert math.isfinite(summary["best_val_loss"])
    state = torch.load(tmp_path / "ckpt" / "last.pt", weights_only=True)
    assert all(not k.startswith("_orig_mod") for k in state["model"])


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_the_modern_recipe_compiles_and_trains_in_low_precision(data_dir, tmp_path, dtype):
    """Muon + the modern block through torch.compile, bf16 autocast (and fp16 with its GradScaler),
    with gradient accumulation: a finite, falling loss."""
    summary = train(tiny_config(data_dir, "trainer.device=cuda", "trainer.compile=true", f"trainer.dtype={dtype}",
                                "model=modern", "optim=muon", "optim.schedule=wsd", "trainer.grad_accum=2"), tmp_path)
    rows = read_metrics(tmp_path)
    assert summary["dtype"] == dtype and math.isfinite(summary["best_val_loss"])
    assert rows[-1]["train_loss"] < rows[0]["val_loss"]


def test_stop_and_resume_on_cuda(data_dir, tmp_path):
    import os
    import signal

    from gpt2.train.checkpoint import load_checkpoint

    def stop(trainer):
        if trainer.progress.iters == 7:
            os.kill(os.getpid(), signal.SIGINT)

    overrides = ("trainer.device=cuda", "model.dropout=0.1", "trainer.ckpt_interval=5")
    stopped = train(tiny_config(data_dir, *overrides), tmp_path, on_step=stop)
    assert stopped["stopped_by"] == "SIGINT" and stopped["iters"] == 7
    state = load_checkpoint(tmp_path / "ckpt" / "last.pt")
    assert "cuda" in state["rng"] and state["train_loader"]["start_batch"] == 7
    resumed = train(tiny_config(data_dir, *overrides, "trainer.resume=auto"), tmp_path)
    assert resumed["iters"] == 20 and math.isfinite(resumed["final_train_loss"])
    assert [r["iter"] for r in read_metrics(tmp_path)] == [0, 5, 7, 10, 15, 20]


def test_token_files_train_on_cuda_from_pinned_batches(data_dir, tmp_path):
    """data=bin on CUDA: uint16 ids widened into pinned int64 batches, a bf16 run close to the CPU's."""
    from gpt2.data.prepare import Settings, prepare

    from conftest import MIRROR

    prepare([str(MIRROR / "tinyshakespeare" / "input.txt")], tmp_path / "tokens",
            Settings(data_dir=str(data_dir), mirror=str(MIRROR)))
    overrides = ("data=bin", f"data.dir={tmp_path / 'tokens'}")
    loaders = make_dataloader(tiny_config(data_dir, *overrides).data, eval_iters=2, device="cuda")
    x, y = next(iter(loaders.train_dl))
    assert x.is_pinned() and x.dtype == torch.int64 and torch.equal(x[:, 1:], y[:, :-1])
    gpu = train(tiny_config(data_dir, *overrides, "trainer.device=cuda"), tmp_path / "gpu")
    cpu = train(tiny_config(data_dir, *overrides, "trainer.device=cpu"), tmp_path / "cpu")
    assert gpu["final_train_loss"] == pytest.approx(cpu["final_train_loss"], abs=0.15)


def test_kv_cache_on_cuda_greedy_and_bf16():
    """On the GPU: greedy decoding identical with and without the cache (float32), and cached
    sampling under bf16 autocast (the cache takes the keys' bf16 dtype)."""
    from gpt2.model.gpt import GPT, GPTConfig

    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=64, vocab_size=65, block_size=32)).cuda().eval()
    idx = torch.randint(0, 65, (4, 10), device="cuda")
    assert torch.equal(model.generate(idx, 80, temperature=0), model.generate(idx, 80, temperature=0, use_cache=False))
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model.generate(idx, 80, top_p=0.9, generator=torch.Generator("cuda").manual_seed(0))
    assert out.shape == (4, 90) and int(out.max()) < 65
