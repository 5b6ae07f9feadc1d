"""HellaSwag (gpt2/train/hellaswag.py, scripts/eval_hellaswag.py, trainer.hellaswag_interval) on a
4-example fixture in the official format. The real file, hellaswag_val.jsonl, is not downloadable here:
a temporary mirror holds the fixture under its name, and the tests patch the fixture's git blob id into
the Remote (and an unreachable URL, so that nothing waits on the network)."""

import importlib.util
import json
import logging
import math
import sys
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from gpt2.data.download import HELLASWAG_VAL, git_blob_sha1
from gpt2.data.tokenizer import CharTokenizer, GPT2Tokenizer, tokenizer_from_state
from gpt2.errors import ConfigError, DataError
from gpt2.model.gpt import GPT, GPTConfig
from gpt2.run.logger import read_metrics
from gpt2.train import hellaswag
from gpt2.train.checkpoint import load_model
from gpt2.train.hellaswag import (encode_example, ending_losses, evaluate_file, fetch_file, load_examples,
                                  read_examples, score_share)
from gpt2.train.trainer import hellaswag_examples, train

from conftest import MIRROR, ROOT, read_wandb_records, tiny_config
from test_scripts import run_script

FIXTURE = ROOT / "tests" / "fixtures" / "hellaswag_tiny.jsonl"


@pytest.fixture(scope="module")
def model_and_encoder(tmp_path_factory):
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=64)).eval()
    return model, GPT2Tokenizer(tmp_path_factory.mktemp("bpe"), MIRROR)


def test_each_ending_is_scored_on_its_own_tokens(model_and_encoder):
    """The batched, padded scoring equals scoring each context + ending alone, by hand."""
    model, encoder = model_and_encoder
    example = next(read_examples(FIXTURE))
    total, mean = ending_losses(model, encode_example(encoder, example, model.block_size), "cpu")
    for i, ending in enumerate(example["endings"]):
        context, tail = encoder.encode(example["ctx"]), encoder.encode(" " + ending)
        ids = torch.tensor([context + tail])
        with torch.no_grad():
            logits = model(ids[:, :-1], ids[:, 1:])[0][0]
        losses = F.cross_entropy(logits[-len(tail):], ids[0, -len(tail):], reduction="none")
        assert total[i].item() == pytest.approx(losses.sum().item(), rel=1e-5)
        assert mean[i].item() == pytest.approx(losses.mean().item(), rel=1e-5)


@pytest.mark.slow
def test_the_script_reports_acc_and_acc_norm(model_and_encoder, tmp_path):
    model, encoder = model_and_encoder
    score = evaluate_file(model, encoder, FIXTURE, "cpu")
    assert score.examples == 4 and 0 <= score.acc_norm <= 1
    from gpt2.model.pretrained import export_pretrained

    export_pretrained(model, tmp_path / "hf")
    result = run_script("eval_hellaswag.py", str(tmp_path / "hf"), "--data", str(FIXTURE), "--device", "cpu",
                        "--data-dir", str(tmp_path / "data"), env=None)
    assert result.returncode == 0, result.stderr
    assert f"4 examples, acc {score.acc:.4f}, acc_norm {score.acc_norm:.4f}" in result.stdout


def test_a_missing_file_is_one_line(model_and_encoder, tmp_path):
    model, encoder = model_and_encoder
    with pytest.raises(DataError, match="download hellaswag_val.jsonl from https://raw.githubusercontent.com"):
        evaluate_file(model, encoder, tmp_path / "nope.jsonl", "cpu")


GONE = "(removed)"
GOOD = {"ctx": "A man sits on a roof. He", "endings": ["fixes it.", "flies.", "sings.", "sleeps."], "label": 0}
SHAPE = '(a HellaSwag line is {"ctx": text, "endings": [4 texts], "label": 0-3})'
BAD_LINES = [  # (the second line of the file; what the one line says after 'FILE:2: ')
    ("not json", "not JSON (Expecting value: line 1 column 1 (char 0))"),
    ("[" * 100_000, "not JSON (maximum recursion depth exceeded while decoding a JSON array from a unicode string)"),
    ("[1, 2]", f"a JSON list, not a HellaSwag example {SHAPE}"),
    ({"ctx": GONE}, f"ctx is missing {SHAPE}"),
    ({"endings": GONE}, f"endings is missing {SHAPE}"),
    ({"label": GONE}, f"label is missing {SHAPE}"),
    ({"endings": None}, f"endings must be a list of 4 texts, got null {SHAPE}"),
    ({"ctx": 3}, f"ctx must be text, got 3 {SHAPE}"),
    ({"ctx": " "}, f"ctx is empty: no context to score the endings after {SHAPE}"),
    ({"endings": [1, 2, 3, 4]}, f"endings[0] must be text, got 1 {SHAPE}"),
    ({"endings": ["a", None, "c", "d"]}, f"endings[1] must be text, got null {SHAPE}"),
    ({"endings": ["a", "b", {"x": 1}, "d"]}, f'endings[2] must be text, got {{"x": 1}} {SHAPE}'),
    ({"endings": ["a", "b", "c", ""]}, f"endings[3] is empty: nothing to score {SHAPE}"),
    ({"endings": ["a", "b"]}, f"endings must be a list of 4 texts, got 2 of them {SHAPE}"),
    ({"endings": "abcd"}, f'endings must be a list of 4 texts, got "abcd" {SHAPE}'),
    ({"endings": {"a": 1, "b": 2, "c": 3, "d": 4}}, f'endings must be a list of 4 texts, got {{"a": 1, "b": 2, '
                                                      f'"c": 3, "d": 4}} {SHAPE}'),
    ({"label": 4}, f"label must be 0, 1, 2 or 3 (the right ending), got 4 {SHAPE}"),
    ({"label": -1}, f"label must be 0, 1, 2 or 3 (the right ending), got -1 {SHAPE}"),
    ({"label": "1"}, f'label must be 0, 1, 2 or 3 (the right ending), got "1" {SHAPE}'),
    ({"label": 1.0}, f"label must be 0, 1, 2 or 3 (the right ending), got 1.0 {SHAPE}"),
    ({"label": True}, f"label must be 0, 1, 2 or 3 (the right ending), got true {SHAPE}"),
]


@pytest.mark.parametrize("line,says", BAD_LINES, ids=[str(line)[:30] for line, _ in BAD_LINES])
def test_a_line_that_is_not_a_whole_example_is_one_line_naming_file_line_and_field(model_and_encoder, tmp_path,
                                                                                    line, says):
    """Each is refused before any scoring; a change of the good example (GONE: without that key) or
    the whole line; blank lines are skipped and counted."""
    model, encoder = model_and_encoder
    if isinstance(line, dict):
        line = json.dumps({k: v for k, v in {**GOOD, **line}.items() if v != GONE})
    path = tmp_path / "bad.jsonl"
    path.write_text(f"{json.dumps(GOOD)}\n\n{line}\n")
    with pytest.raises(DataError) as err:
        evaluate_file(model, encoder, path, "cpu")
    assert str(err.value) == f"{path}:3: {says}"
    assert len(load_examples(path, encoder, model.block_size, limit=1)) == 1  # the lines past --limit are not read


class Silent:
    """A tokenizer that gives a text no token (ending rows with nothing to score)."""

    name = "silent"

    def encode(self, text):
        return []


@pytest.mark.parametrize("tokens,says", [
    ("char", "2: cannot be encoded in char tokens: character ',' is not in this char vocabulary"),
    ("silent", "1: cannot be encoded in silent tokens: ctx encodes to no token"),
], ids=["a character the vocabulary lacks", "no token"])
def test_an_example_its_tokenizer_cannot_score_is_one_line(tmp_path, tokens, says):
    """The char vocabulary has the first example's characters, not the second's comma."""
    encoder = CharTokenizer.from_text(" ".join([GOOD["ctx"], *GOOD["endings"]])) if tokens == "char" else Silent()
    path = tmp_path / "examples.jsonl"
    path.write_text(f"{json.dumps(GOOD)}\n{json.dumps({**GOOD, 'ctx': 'A man, on a roof'})}\n")
    with pytest.raises(DataError) as err:
        load_examples(path, encoder, 16)
    assert str(err.value) == f"{path}:{says}"


# --------------------------------------------------------------------- the file, fetched as a download
@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A mirror holding the fixture as hellaswag/hellaswag_val.jsonl (and the real mirror's other files),
    with HELLASWAG_VAL verified by the fixture's git blob id and downloaded from nowhere."""
    mirror = tmp_path / "mirror"
    (mirror / "hellaswag").mkdir(parents=True)
    (mirror / "hellaswag" / "hellaswag_val.jsonl").write_bytes(FIXTURE.read_bytes())
    for name in ("gpt2-bpe", "tinyshakespeare"):
        (mirror / name).symlink_to(MIRROR / name)
    monkeypatch.setattr(hellaswag, "HELLASWAG_VAL", replace(
        HELLASWAG_VAL, url="http://127.0.0.1:9/hellaswag_val.jsonl", git_blob_sha1=git_blob_sha1(FIXTURE.read_bytes())))
    return mirror


def test_the_file_is_fetched_from_the_mirror_into_data_dir(mirror, tmp_path):
    path = fetch_file(tmp_path / "data", mirror)
    assert path == tmp_path / "data" / "hellaswag" / "hellaswag_val.jsonl"
    assert path.read_bytes() == FIXTURE.read_bytes()
    assert fetch_file(tmp_path / "data", tmp_path / "nowhere") == path  # verified where it is: kept


def test_a_mirror_copy_with_the_wrong_checksum_is_refused(tmp_path):
    """The real Remote (rowanz's blob id) refuses the fixture standing in the mirror."""
    (tmp_path / "mirror" / "hellaswag").mkdir(parents=True)
    (tmp_path / "mirror" / "hellaswag" / "hellaswag_val.jsonl").write_bytes(FIXTURE.read_bytes())
    with pytest.raises(DataError) as err:
        fetch_file(tmp_path / "data", tmp_path / "mirror")
    assert str(err.value) == (
        f"{tmp_path / 'mirror' / 'hellaswag' / 'hellaswag_val.jsonl'} has the wrong git blob sha1 (expected "
        f"0f5ee25d72216f12317d5d8a7b92deafa423d81e); replace it with the file from {HELLASWAG_VAL.url}")
    assert not (tmp_path / "data" / "hellaswag").exists()


def test_without_network_or_mirror_the_file_is_one_line_naming_where_it_goes(mirror, tmp_path, monkeypatch):
    monkeypatch.delenv("GPT2_DATA_MIRROR")
    with pytest.raises(DataError) as err:
        fetch_file(tmp_path / "data")
    line = str(err.value)
    assert "\n" not in line and line.startswith(f"{tmp_path / 'data' / 'hellaswag' / 'hellaswag_val.jsonl'} is "
                                                f"missing and could not be downloaded from http://127.0.0.1:9/")
    assert line.endswith("Put the file there, or set data.mirror=DIR (or the GPT2_DATA_MIRROR environment "
                         "variable) to a folder holding hellaswag/hellaswag_val.jsonl")


# ------------------------------------------------------------------------------------------ scoring
def test_examples_are_read_and_encoded_once_and_limited(model_and_encoder):
    model, encoder = model_and_encoder
    examples = load_examples(FIXTURE, encoder, model.block_size)
    assert [e.label for e in examples] == [0, 1, 2, 3]
    assert [e.label for e in load_examples(FIXTURE, encoder, model.block_size, limit=2)] == [0, 1]
    short = load_examples(FIXTURE, encoder, 8)[0]  # the context cut from the left: rows of at most 9 tokens
    assert short.ids.shape[1] <= 9 and short.mask.shape == (4, short.ids.shape[1] - 1)


@pytest.mark.parametrize("world_size", [2, 3, 5])
def test_ranks_share_the_examples_with_as_many_forwards_each(model_and_encoder, world_size):
    """Each rank's share, summed, is the whole score; every rank runs ceil(4 / world) forwards (FSDP needs
    every rank in each), and the model is back in the mode it was in."""
    model, encoder = model_and_encoder
    examples = load_examples(FIXTURE, encoder, model.block_size)
    whole = score_share(model, examples, "cpu")
    forwards = []
    handle = model.register_forward_hook(lambda *_: forwards.append(1))
    model.train()
    shares = []
    for rank in range(world_size):
        forwards.clear()
        shares.append(score_share(model, examples, "cpu", rank, world_size))
        assert len(forwards) == math.ceil(4 / world_size) and model.training
    handle.remove()
    model.eval()
    assert sum(s.examples for s in shares) == whole.examples == 4
    assert (sum(s.correct for s in shares), sum(s.correct_norm for s in shares)) == (whole.correct, whole.correct_norm)
    by_hand = sum(int(ending_losses(model, e, "cpu")[1].argmin()) == e.label for e in examples)
    assert whole.correct_norm == by_hand


# ------------------------------------------------------------------------------ scripts/eval_hellaswag.py
def load_script():
    spec = importlib.util.spec_from_file_location("eval_hellaswag", ROOT / "scripts" / "eval_hellaswag.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_script_fetches_the_file_from_the_mirror_and_scores(model_and_encoder, mirror, tmp_path, monkeypatch,
                                                                capsys):
    from gpt2.model.pretrained import export_pretrained

    model, encoder = model_and_encoder
    export_pretrained(model, tmp_path / "hf")
    monkeypatch.delenv("GPT2_DATA_MIRROR")
    monkeypatch.setattr(sys, "argv", ["eval_hellaswag.py", str(tmp_path / "hf"), "--device", "cpu",
                                      "--data-dir", str(tmp_path / "data"), "--mirror", str(mirror)])
    load_script().main()
    score = evaluate_file(model, encoder, FIXTURE, "cpu")
    assert (f"HellaSwag {tmp_path / 'data' / 'hellaswag' / 'hellaswag_val.jsonl'}: 4 examples, acc {score.acc:.4f}, "
            f"acc_norm {score.acc_norm:.4f}") in capsys.readouterr().out


def test_the_script_checks_the_lines_before_it_loads_the_model(tmp_path, monkeypatch):
    path = tmp_path / "bad.jsonl"
    path.write_text(f"{json.dumps(GOOD)}\n{json.dumps({**GOOD, 'label': 7})}\n")
    monkeypatch.setattr(sys, "argv", ["eval_hellaswag.py", str(tmp_path / "no-model"), "--data", str(path),
                                      "--device", "cpu"])
    with pytest.raises(DataError) as err:
        load_script().main()
    assert str(err.value) == f"{path}:2: label must be 0, 1, 2 or 3 (the right ending), got 7 {SHAPE}"


@pytest.mark.slow
def test_the_script_without_network_or_mirror_is_one_line(tmp_path):
    """No mirror and a network that refuses (a proxy nobody listens on): exit 1, one line saying where the
    file goes and how to name a mirror, before any model is looked for."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "https_proxy": "http://127.0.0.1:9",
           "HTTPS_PROXY": "http://127.0.0.1:9"}
    result = run_script("eval_hellaswag.py", str(tmp_path / "no-model"), "--data-dir", str(tmp_path / "data"),
                        env=env, cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"error: {tmp_path / 'data' / 'hellaswag' / 'hellaswag_val.jsonl'} is missing and "
                               f"could not be downloaded from {HELLASWAG_VAL.url} (")
    assert lines[0].endswith("Offline? Put the file there, or pass --mirror DIR (or set the GPT2_DATA_MIRROR "
                             "environment variable) to a folder holding hellaswag/hellaswag_val.jsonl")


# ---------------------------------------------------------------------- during training (the trainer)
def test_training_scores_hellaswag_every_interval_and_at_the_end(mirror, tmp_path, caplog):
    data_dir = tmp_path / "data"
    config = tiny_config(data_dir, f"data.mirror={mirror}", "trainer.hellaswag_interval=8", "trainer.dtype=float32",
                         "trainer.sample_tokens=0", "logger=wandb", "logger.mode=offline")
    with caplog.at_level(logging.INFO, logger="gpt2.train.trainer"):
        summary = train(config, tmp_path / "run")
    rows = read_metrics(tmp_path / "run")
    scored = [r for r in rows if "hellaswag_acc_norm" in r]
    assert [r["iter"] for r in scored] == [0, 8, 16, 20]  # step 0, every 8 steps, the end
    for row in scored:  # 4 examples: a multiple of 1/4
        assert 0 <= row["hellaswag_acc_norm"] <= 1 and 0 <= row["hellaswag_acc"] <= 1
        assert (4 * row["hellaswag_acc_norm"]).is_integer() and (4 * row["hellaswag_acc"]).is_integer()
    assert summary["final_hellaswag_acc_norm"] == scored[-1]["hellaswag_acc_norm"]
    assert summary["final_hellaswag_acc"] == scored[-1]["hellaswag_acc"]
    model, state = load_model(tmp_path / "run" / "ckpt" / "last.pt", "cpu")  # the final weights, scored again
    final = evaluate_file(model, tokenizer_from_state(state["tokenizer"], data_dir), FIXTURE, "cpu")
    assert (final.acc_norm, final.acc) == (summary["final_hellaswag_acc_norm"], summary["final_hellaswag_acc"])
    records = read_wandb_records(tmp_path / "run")  # W&B logged the same values at the same steps
    logged = {r["history"]["step"].get("num", 0): r["history"]["item"] for r in records if r["type"] == "history"}
    assert [(i, logged[i]["hellaswag_acc_norm"], logged[i]["hellaswag_acc"]) for i in sorted(logged)
            if "hellaswag_acc_norm" in logged[i]] == [(r["iter"], r["hellaswag_acc_norm"], r["hellaswag_acc"])
                                                      for r in scored]
    wandb_summary = {}
    for record in records:
        if record["type"] == "summary":
            wandb_summary.update(record["summary"].get("update", {}))
    assert wandb_summary["final_hellaswag_acc_norm"] == summary["final_hellaswag_acc_norm"]
    assert "iter 16: train loss" in caplog.text and f"hellaswag acc_norm {scored[2]['hellaswag_acc_norm']:.4f}" \
        in caplog.text


def test_training_without_the_file_stops_before_data_and_model(mirror, tmp_path, monkeypatch):
    monkeypatch.delenv("GPT2_DATA_MIRROR")
    monkeypatch.setattr("gpt2.train.trainer.build_or_explain", lambda *a: pytest.fail("built the parts"))
    with pytest.raises(DataError) as err:
        train(tiny_config(tmp_path / "data", "trainer.hellaswag_interval=10"), tmp_path / "run")
    assert str(err.value).startswith(f"{tmp_path / 'data' / 'hellaswag' / 'hellaswag_val.jsonl'} is missing and "
                                     f"could not be downloaded") and "\n" not in str(err.value)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_token_files_of_char_tokens_are_refused(data_dir):
    parts = SimpleNamespace(data=SimpleNamespace(encoder=SimpleNamespace(name="char")))
    config = tiny_config(data_dir, "data=bin", "data.dir=chars", "trainer.hellaswag_interval=10")
    with pytest.raises(ConfigError, match="trainer.hellaswag_interval: HellaSwag is scored in GPT-2 tokens, and "
                                          "chars holds char tokens: set trainer.hellaswag_interval=0"):
        hellaswag_examples(config, parts)


# ---------------------------------------------------------------------------------------- under torchrun
PATCHED_TRAIN = """import runpy, sys
from dataclasses import replace
from pathlib import Path
from gpt2.data.download import git_blob_sha1
from gpt2.train import hellaswag
hellaswag.HELLASWAG_VAL = replace(hellaswag.HELLASWAG_VAL, url="http://127.0.0.1:9/hellaswag_val.jsonl",
                                  git_blob_sha1=git_blob_sha1(Path({fixture!r}).read_bytes()))
sys.argv[0] = {train!r}
runpy.run_path({train!r}, run_name="__main__")
"""


@pytest.mark.slow
@pytest.mark.parametrize("parallel", ["fsdp"])
def test_two_processes_score_as_one_without_a_hang(mirror, tmp_path, parallel):
    """Two gloo processes share 3 examples (2 and 1: the second rank runs one uncounted forward, which FSDP's
    gathers need) and log the scores one process logs; train.py runs with the fixture's blob id patched in.
    FSDP alone (`parallel=ddp` passes too: run it by hand): DDP scores by the same code, without the
    gathers that would hang, and the sharing itself is checked in-process for 2, 3 and 5 ranks."""
    import os
    import signal
    import subprocess

    script = tmp_path / "train_patched.py"
    script.write_text(PATCHED_TRAIN.format(fixture=str(FIXTURE), train=str(ROOT / "train.py")))
    overrides = ["model.n_layer=1", "model.n_head=2", "model.n_embd=32", "data.block_size=16", "data.batch_size=4",
                 "trainer.max_iters=6", "trainer.eval_interval=3", "trainer.eval_iters=2", "trainer.log_interval=3",
                 "trainer.device=cpu", "trainer.dtype=float32", "trainer.sample_tokens=0", "trainer.progress=false",
                 "logger=none", f"data.data_dir={tmp_path / 'data'}", f"data.mirror={mirror}",
                 "trainer.hellaswag_interval=3", "trainer.hellaswag_examples=3", f"trainer.parallel={parallel}"]
    scores = {}
    for world in (1, 2):
        launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world}"] if world > 1 else []
        run_dir = tmp_path / f"world{world}"
        proc = subprocess.Popen([sys.executable, *launcher, str(script), f"hydra.run.dir={run_dir}", *overrides],
                                cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)
        try:
            out, err = proc.communicate(timeout=180)
        except subprocess.TimeoutExpired:  # a hang: torchrun and its workers go, the test fails
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            pytest.fail(f"world {world} hung: {err[-2000:]}")
        assert proc.returncode == 0, out + err
        scores[world] = [(r["iter"], r["hellaswag_acc"], r["hellaswag_acc_norm"]) for r in read_metrics(run_dir)
                         if "hellaswag_acc_norm" in r]
    assert [s[0] for s in scores[1]] == [0, 3, 6]
    assert scores[2] == scores[1] and all((3 * acc).is_integer() for _, acc, _ in scores[2])
