"""scripts/evaluate.py and gpt2/eval/evaluation.py: the val loss of a checkpoint without training equals
the one its run logged; other data by overrides; every validation token once; one-line refusals."""

import json
import subprocess
import sys

import pytest

from gpt2.errors import ConfigError
from gpt2.eval.evaluation import data_config, evaluate_model
from gpt2.run.logger import read_metrics
from gpt2.train.checkpoint import load_checkpoint
from gpt2.train.model_source import open_model
from gpt2.train.trainer import train

from conftest import ROOT, tiny_config


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
