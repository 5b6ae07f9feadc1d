"""The factory: every part of a run from a Config alone, and a Trainer over parts built outside it."""

import pytest
import torch

from gpt2.config import from_hydra
from gpt2.errors import ConfigError
from gpt2.train.parts import build, gpt_config, init_source
from gpt2.run.logger import read_metrics
from gpt2.train.trainer import Trainer

from conftest import compose_config, tiny_config


def test_build_needs_no_run_directory(data_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    parts = build(tiny_config(data_dir, "data.tokenizer=char"))
    assert list(tmp_path.iterdir()) == []  # nothing written where it runs
    # trainer.compile=null: not compiled on a CPU (with CUDA it would be)
    assert parts.model is parts.step_model and parts.runtime.device == torch.device("cpu")
    assert parts.model.vocab_size == parts.data.encoder.vocab_size == 65
    assert parts.optimizer.param_groups[0]["params"][0] is parts.model.lm_head.weight
    assert parts.schedule.decay_iters == 20 and parts.schedule(2) == pytest.approx(3e-3)
    x, y = next(iter(parts.data.train_dl))
    assert x.shape == (4, 16) and parts.data.train_dl.state_dict()["start_batch"] == 1


def test_the_same_config_builds_the_same_parts(data_dir):
    a, b = build(tiny_config(data_dir)), build(tiny_config(data_dir))
    assert all(torch.equal(p, q) for p, q in zip(a.model.state_dict().values(), b.model.state_dict().values()))


@pytest.mark.slow
def test_a_longer_context_than_the_training_windows(data_dir, tmp_path):
    config = tiny_config(data_dir, "model.block_size=64", "trainer.max_iters=4", "trainer.eval_interval=2")
    assert gpt_config(config, 65).block_size == 64
    parts = build(config)
    assert parts.model.block_size == 64 and parts.model.transformer.wpe.weight.shape[0] == 64
    summary = Trainer(config, tmp_path, parts).fit()  # trains on 16-token windows
    assert summary["iters"] == 4 and [r["iter"] for r in read_metrics(tmp_path)] == [0, 2, 4]


def test_gpt2_weights_with_a_modern_option_are_refused_before_any_lookup():
    config = from_hydra(compose_config("model=modern", "model.init_from=gpt2"))
    with pytest.raises(ConfigError) as err:
        init_source(config)  # no folder named gpt2, no network: refused before either is looked for
    assert str(err.value) == ("model.init_from=gpt2: OpenAI's GPT-2 weights have GPT-2's block: drop model.rotary=True, "
                              "model.norm=rmsnorm, model.qk_norm=True, model.activation=relu2, "
                              "model.tie_embeddings=False")


TO_BATCH = "data.batch_size (raise trainer.grad_accum to keep the batch)"


@pytest.mark.parametrize("overrides, line", [
    (["model.n_layer=100000"],
     "model.n_layer=100000 needs ~31.4 GiB to train (weights, gradients and AdamW state of 1.24B parameters, most in "
     "the blocks: 18.4 GiB), but cpu has 512 MiB available: lower model.n_layer or model.n_embd"),
    (["data.tokenizer=char", "data.block_size=100000"],
     f"data.block_size=100000 needs ~1.2 GiB to train (block activations of one micro-batch: 830 MiB), but cpu has "
     f"512 MiB available: lower data.block_size, {TO_BATCH}, model.n_layer or model.n_embd"),
])
def test_a_model_that_cannot_fit_is_refused_before_it_is_built(data_dir, monkeypatch, overrides, line):
    from gpt2.errors import HarnessError
    from gpt2.model.gpt import GPT
    from gpt2.train import budget

    monkeypatch.setattr(budget, "available_bytes", lambda device: 2 ** 29)
    monkeypatch.setattr(GPT, "__init__", lambda *args: pytest.fail("built the model"))
    with pytest.raises(HarnessError) as refused:
        build(tiny_config(data_dir, "trainer.dtype=float32", *overrides))
    assert str(refused.value) == line


def test_running_out_of_memory_while_building_names_the_estimates_largest_part(data_dir, monkeypatch):
    from gpt2.errors import HarnessError
    from gpt2.model.gpt import GPT

    def out_of_memory(*args):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")

    monkeypatch.setattr(GPT, "__init__", out_of_memory)
    with pytest.raises(HarnessError) as failed:
        build(tiny_config(data_dir, "trainer.dtype=float32", "data.tokenizer=char", "data.block_size=2048"))
    assert str(failed.value) == (
        f"out of memory on cpu while building the model (data.block_size=2048 needs ~26 MiB to train (block "
        f"activations of one micro-batch: 17 MiB)): lower data.block_size, {TO_BATCH}, model.n_layer or model.n_embd")


def test_compile_without_a_cpp_compiler_is_refused_before_the_data(tmp_path):
    import torch._inductor.config as inductor

    with inductor.patch({"cpp.cxx": ("no-such-c++",)}), pytest.raises(ConfigError) as refused:
        build(tiny_config(tmp_path / "data", "trainer.compile=true"))
    assert str(refused.value) == (
        "trainer.compile=true: torch.compile builds C++ kernels on the cpu and no C++ compiler works (No working C++ "
        "compiler found in torch._inductor.config.cpp.cxx: ('no-such-c++',)): install a working C/C++ compiler "
        "(gcc/g++) or set trainer.compile=false")
    assert not (tmp_path / "data").exists()
