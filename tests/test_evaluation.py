"""scripts/evaluate.py and gpt2/eval/evaluation.py: the val loss of a checkpoint without training equals
the one its run logged; other data by overrides; every validation token once; one-line refusals."""

import json
import subprocess
import sys

import pytest

from gpt2.errors import ConfigError, HarnessError
from gpt2.eval.evaluation import data_config, evaluate_model
from gpt2.run.logger import read_metrics
from gpt2.train.checkpoint import load_checkpoint
from gpt2.train.model_source import open_model
from gpt2.train.trainer import train

from conftest import MIRROR, ROOT, tiny_config


@pytest.fixture(scope="module")
def char_run(data_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("evaluate") / "run"
    train(tiny_config(data_dir, "data=shakespeare_char", "trainer.max_iters=4", "trainer.eval_interval=2",
                      "trainer.eval_iters=3", "trainer.sample_tokens=0"), run)
    return run


def test_the_script_gives_the_val_loss_the_run_logged_for_its_checkpoint(char_run, tmp_path):
    out = tmp_path / "eval.json"
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "evaluate.py"), str(char_run), "--batches", "3",
                           "--out", str(out), "--threads", "1"], cwd=tmp_path, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert json.loads(out.read_text()) == result
    best = load_checkpoint(char_run / "ckpt" / "best.pt")["iter"]
    logged = next(r for r in read_metrics(char_run) if r["iter"] == best and "val_loss" in r)
    assert (result["iter"], result["batches"], result["tokenizer"]) == (best, 3, "char")
    assert (result["val_loss"], result["val_bpb"]) == (pytest.approx(logged["val_loss"], abs=1e-6),
                                                       pytest.approx(logged["val_bpb"], abs=1e-6))
    assert done.stderr.startswith(f"{char_run}: val loss {logged['val_loss']:.4f}, ")


def test_every_validation_token_once_and_other_data_by_overrides(char_run, tmp_path):
    source = open_model(str(char_run))
    data = data_config(source, [])
    assert (data.tokenizer, data.block_size, data.batch_size) == ("char", 16, 4)  # the run's own
    whole = evaluate_model(source, data_config(source, ["data.batch_size=512"]))  # 111,540 tokens / (512 x 16)
    assert whole["whole_split"] and whole["batches"] == 14 and 0 < whole["val_loss"] < 10
    shorter = evaluate_model(source, data_config(source, ["data.block_size=8"]), batches=2)
    assert (shorter["block_size"], shorter["batches"]) == (8, 2)
    with pytest.raises(ConfigError) as err:
        evaluate_model(source, data_config(source, ["data=shakespeare", "data.block_size=16"]), batches=1)
    assert str(err.value) == f"{char_run} scores char tokens, the data is in gpt2 tokens: use data.tokenizer=char"
    with pytest.raises(ConfigError, match="trainer.max_iters=3: evaluate.py takes data overrides only"):
        data_config(source, ["trainer.max_iters=3"])
    with pytest.raises(ConfigError, match=r"data.block_size=32 is longer than the model's context \(16\)"):
        evaluate_model(source, data_config(source, ["data.block_size=32"]))


EVALUATION_REFUSALS = [  # (the text file's first N characters of Tiny Shakespeare, overrides, --batches; the line)
    (150, [], None, "val split: 15 tokens (10.00% of 150), under one eval batch (data.batch_size + data.block_size = "
                    "20 tokens): lower data.train_frac, or set data.min_val_frac=0 to train anyway"),
    (150, ["data.min_val_frac=0"], None, "15 tokens are not enough to build one block of block_size=16 (need at least "
                                         "17) ({path}: 150 tokens, train_frac=0.9: 135 train, 15 valid)"),
    (0, [], None, "{path} is empty: there is no text to train on"),
    (1000, [], 0, "--batches: must be at least 1, got 0"),
]


@pytest.mark.parametrize("chars,overrides,batches,line", EVALUATION_REFUSALS,
                         ids=["under one batch", "under one window", "empty", "zero batches"])
def test_data_with_nothing_to_score_is_one_line(char_run, tmp_path, monkeypatch, chars, overrides, batches, line):
    """A validation split too short for one batch or one window, no text, no batch: refused before
    the model is built (no evaluation over zero tokens)."""
    monkeypatch.setattr("gpt2.eval.evaluation.make_model", lambda *args: pytest.fail("built the model"))
    path = tmp_path / "short.txt"
    path.write_text((MIRROR / "tinyshakespeare" / "input.txt").read_text()[:chars])
    source = open_model(str(char_run))
    with pytest.raises(HarnessError) as err:
        evaluate_model(source, data_config(source, [f"data.path={path}", *overrides]), "cpu", batches=batches)
    assert str(err.value) == line.format(path=path)



def drop(section: str, key: str):
    return lambda config: config[section].pop(key)


def put(section: str, key: str, value):
    return lambda config: config[section].update({key: value})


class Ran(Exception):
    """Raised where the evaluation would start, with the precision it was given."""


@pytest.mark.parametrize("change, dtype, outcome", [
    (drop("trainer", "dtype"), None, "runs in auto"),
    (put("trainer", "dtype", "float8"), None, "{path}: its config's trainer.dtype: must be auto, float32, bfloat16 "
                                              "or float16, got 'float8'"),
    (put("trainer", "dtype", "float8"), "float32", "runs in float32"),  # --dtype is taken instead
    (None, "fp32", "--dtype: must be auto, float32, bfloat16 or float16, got 'fp32'"),
    (put("data", "block_size", "16 tokens"), None, "{path}: its config's data.block_size cannot be used (Value "
                                                   "'16 tokens' of type 'str' could not be converted to Integer)"),
    (put("data", "batch_size", None), None, "{path}: its config's data.batch_size cannot be used (Incompatible "
                                            "value 'None' for field of type 'int')"),
], ids=["no dtype", "unknown dtype", "--dtype over it", "unknown --dtype", "block_size a str", "batch_size null"])
def test_a_checkpoint_config_it_cannot_use_is_one_line(char_run, tmp_path, monkeypatch, change, dtype, outcome):
    """A damaged or crafted checkpoint's config (a key missing, a value of another type) is read with
    its default or refused in one line naming the file and the key, before any evaluation."""
    import torch

    state = torch.load(char_run / "ckpt" / "best.pt", weights_only=True)
    if change:
        change(state["config"])
    torch.save(state, tmp_path / "crafted.pt")

    def ran(device, dtype):
        raise Ran(f"runs in {dtype}")

    monkeypatch.setattr("gpt2.eval.evaluation.Runtime.create", ran)
    source = open_model(str(tmp_path / "crafted.pt"))
    with pytest.raises((HarnessError, Ran)) as err:
        evaluate_model(source, data_config(source, []), "cpu", dtype=dtype)
    assert str(err.value) == outcome.format(path=tmp_path / "crafted.pt")
