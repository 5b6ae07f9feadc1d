"""End to end: `python train.py` as a user runs it, and everything a run leaves behind."""

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from gpt2.data.loaders import make_dataloader
from gpt2.train.checkpoint import load_checkpoint
from gpt2.run.logger import read_metrics
from gpt2.run.record import hydra_value

from conftest import ROOT, TINY, one_line, read_wandb_records, run_train, start_train, tiny_config, wait_for_iter

pytestmark = pytest.mark.slow  # every test here runs train.py, a script or torchrun in a subprocess


def test_tiny_run_leaves_every_file(tmp_path, data_dir):
    run_dir = tmp_path / "run"
    result = run_train(run_dir, *TINY, f"data.data_dir={data_dir}", "logger.mode=auto",
                       "logger.project=e2e", "trainer.sample_interval=10")
    assert result.returncode == 0, result.stderr
    samples = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert [(s["iter"], s["prompt"]) for s in samples] == [(10, "\n"), (20, "\n")]
    assert all(s["text"] for s in samples) and samples[0]["text"] != samples[1]["text"]  # trained in between
    summary = json.loads((run_dir / "summary.json").read_text())
    assert f"best val loss {summary['best_val_loss']:.4f} after 20 iterations" in result.stdout
    assert "--- sample ---" in result.stdout

    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["data"]["block_size"] == 16 and config["optim"]["lr_decay_iters"] is None  # follows max_iters

    log = (run_dir / "train.log").read_text()
    assert "iter 20: train loss" in log and "parameters" in log

    rows = read_metrics(run_dir)
    assert [r["iter"] for r in rows] == [0, 5, 10, 15, 20]
    assert all(0 < r["val_bpb"] < 20 for r in rows if "val_loss" in r)
    for key in ("best_val_loss", "best_val_bpb", "final_val_bpb", "final_val_loss", "final_train_loss", "iters",
                "tokens_seen", "tokens_per_sec", "wall_s", "params", "device"):
        assert key in summary
    assert summary["iters"] == 20 and summary["tokens_seen"] == 20 * 4 * 16
    assert summary["final_train_loss"] == rows[-1]["train_loss"]

    for name in ("last.pt", "best.pt"):
        ckpt = load_checkpoint(run_dir / "ckpt" / name)
        assert {"model", "optimizer", "config", "iter", "best_val_loss"} <= set(ckpt)
        assert ckpt["config"]["model"]["n_embd"] == 32
        assert ckpt["model"]["transformer.wte.weight"].dtype == torch.float32
    assert load_checkpoint(run_dir / "ckpt" / "last.pt")["iter"] == 20
    assert (run_dir / "loss.png").read_bytes()[:4] == b"\x89PNG"

    # W&B ran offline (no credentials here) and logged exactly what metrics.jsonl holds
    records = read_wandb_records(run_dir)
    logged = {h["history"]["step"].get("num", 0): h["history"]["item"] for h in records if h["type"] == "history"}
    assert sorted(logged) == [r["iter"] for r in rows]
    for row in rows:
        for key in ("train_loss", "val_loss", "lr", "grad_norm", "tokens_per_sec"):
            if key in row:
                assert logged[row["iter"]][key] == row[key], (row["iter"], key)
    run = next(r["run"] for r in records if r["type"] == "run")
    assert run["project"] == "e2e" and run["config"]["update"]["data"]["block_size"] == 16


def test_a_run_stopped_in_an_awkward_directory_resumes_by_its_printed_command(tmp_path, data_dir):
    """The `Resume with:` line pasted into bash continues the run, whatever its directory's name holds
    (tests/test_record.py checks each kind of character; this is the whole way round)."""
    run_dir = tmp_path / "rün (1),a=b 'q' $HOME"
    proc = start_train(None, f"hydra.run.dir={hydra_value(str(run_dir))}", *TINY, f"data.data_dir={data_dir}",
                       "logger=none", "trainer.max_iters=100000", "trainer.log_interval=1", "trainer.sample_tokens=0",
                       "trainer.eval_iters=1")
    wait_for_iter(proc, run_dir, 0)  # training
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1, stderr
    command = stderr.strip().splitlines()[-1].split("Resume with: ", 1)[1]
    iters = json.loads((run_dir / "summary.json").read_text())["iters"]
    resumed = subprocess.run(["bash", "-c", f"{command} trainer.max_iters={iters + 1}"], cwd=ROOT, text=True,
                             capture_output=True, timeout=300, stdin=subprocess.DEVNULL,
                             env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed from {run_dir / 'ckpt' / 'last.pt'} at iteration {iters}" in (run_dir / "train.log").read_text()
    assert json.loads((run_dir / "summary.json").read_text())["iters"] == iters + 1


def test_offline_without_data_is_one_clear_error(tmp_path):
    result = run_train(tmp_path / "run", *TINY, f"data.data_dir={tmp_path / 'empty'}", "logger=none",
                       env={"GPT2_DATA_MIRROR": "", "HTTPS_PROXY": "http://127.0.0.1:9",
                            "https_proxy": "http://127.0.0.1:9"})
    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert "tinyshakespeare/input.txt is missing and could not be downloaded" in output
    assert "data.mirror=DIR" in output and "Traceback" not in output


def test_bad_text_file_is_one_clear_error(tmp_path):
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe\x00binary")
    result = run_train(tmp_path / "run", *TINY, f"data.path={tmp_path / 'bad.txt'}", "logger=none",
                       f"data.data_dir={tmp_path / 'd'}")
    assert result.returncode == 1
    assert "bad.txt is not UTF-8 text" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_a_refused_resume_leaves_the_run_untouched(tmp_path, data_dir):
    run_dir = tmp_path / "run"
    assert run_train(run_dir, *TINY, f"data.data_dir={data_dir}", "logger=none").returncode == 0
    before = {name: (run_dir / name).read_bytes() for name in ("config.yaml", "metrics.jsonl", "summary.json")}
    result = run_train(run_dir, *TINY, f"data.data_dir={data_dir}", "logger=none", "model.n_embd=64",
                       "trainer.resume=auto", "trainer.max_iters=30")
    assert result.returncode == 1 and "model.n_embd was 32" in result.stdout + result.stderr
    assert {name: (run_dir / name).read_bytes() for name in before} == before


@pytest.mark.parametrize("override,expected", [
    ("data.batch_size=abc", "error: Error merging override data.batch_size=abc (Value 'abc' of type 'str' "
                            "could not be converted to Integer)"),
    ("model=nope", "error: In 'config': Could not find 'model/nope' (options: baby, gpt2, modern, tiny)"),
    ("data.batch_size=[", "error: data.batch_size=[: no viable alternative at input '[' (a value with special "
                          "characters needs quotes: 'data.batch_size=\"[\"')"),
    ("data.path=~/corpus.txt", "error: data.path=~/corpus.txt: cannot be parsed (a value with special characters "
                               "needs quotes: 'data.path=\"~/corpus.txt\"')"),
])
def test_hydra_composition_errors_are_one_line(tmp_path, override, expected):
    assert one_line(run_train(tmp_path / "run", override)) == expected


def test_a_run_directory_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    assert one_line(run_train(tmp_path / "file", *TINY)) == (
        f"error: hydra.run.dir={tmp_path / 'file'}: File exists: {tmp_path / 'file'}")
    assert one_line(run_train(tmp_path / "file" / "run", *TINY)) == (
        f"error: hydra.run.dir={tmp_path / 'file' / 'run'}: Not a directory: {tmp_path / 'file' / 'run'}")


def test_an_unwritable_data_dir_or_token_cache_is_one_line(tmp_path, data_dir):
    (tmp_path / "file").write_text("x")
    line = one_line(run_train(tmp_path / "a", *TINY, f"data.data_dir={tmp_path / 'file'}", "logger=none"))
    assert line == (f"{tmp_path / 'file' / 'tinyshakespeare' / 'input.txt'} cannot be written (Not a directory): "
                    f"set data.data_dir to a writable directory")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "cache").write_text("a file where the cache directory goes")
    line = one_line(run_train(tmp_path / "b", *TINY, f"data.data_dir={tmp_path / 'd'}", "logger=none"))
    assert line.startswith(f"the token cache {tmp_path / 'd' / 'cache'}/") and "set data.data_dir" in line


def test_an_invalid_wandb_variable_is_refused_before_any_data_is_read(tmp_path):
    result = run_train(tmp_path / "run", *TINY, f"data.data_dir={tmp_path / 'nothing'}", "logger=wandb",
                       env={"WANDB_MODE": "bogus", "GPT2_DATA_MIRROR": str(tmp_path / "no-mirror")})
    assert one_line(result).startswith("WANDB_MODE='bogus' is not valid: use online, offline")
    assert not (tmp_path / "nothing").exists()  # refused before the data was looked for


def test_a_model_too_big_for_memory_is_refused_before_it_is_built(tmp_path, data_dir):
    # characters (a 65-row token table), their token cache built beforehand: the run's one line is the
    # refusal, from the estimate, before a 51B-parameter model is allocated
    make_dataloader(tiny_config(data_dir, "data.tokenizer=char").data, eval_iters=1, device="cpu")
    line = one_line(run_train(tmp_path / "run", *TINY, f"data.data_dir={data_dir}", "logger=none",
                              "data.tokenizer=char", "model.n_embd=65536"))
    assert re.fullmatch(r"model\.n_embd=65536 needs ~768 GiB to train \(weights, gradients and AdamW state of "
                        r"51\.55B parameters, most in the blocks: 768 GiB\), but cpu has [\d.,]+ [GM]iB available: "
                        r"lower model\.n_embd or model\.n_layer", line), line


def test_help_and_cfg(tmp_path):
    shown = subprocess.run([sys.executable, str(ROOT / "train.py"), "--help"], capture_output=True, text=True,
                           timeout=120, stdin=subprocess.DEVNULL)
    assert shown.returncode == 0 and "model: baby, gpt2, modern, tiny" in shown.stdout
    assert "schema" not in shown.stdout  # the internal group the options extend
    invalid = subprocess.run([sys.executable, str(ROOT / "train.py"), "--cfg", "job", "data.batch_size=0"],
                             capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert invalid.returncode == 1 and invalid.stderr.strip() == "error: data.batch_size: must be >= 1, got 0"
    assert invalid.stdout == ""
    valid = subprocess.run([sys.executable, str(ROOT / "train.py"), "--cfg", "job", "trainer.max_iters=7"],
                           capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert valid.returncode == 0 and yaml.safe_load(valid.stdout)["trainer"]["max_iters"] == 7


def screen_lines(output: str) -> list[str]:
    """The lines a terminal shows for this output: a carriage return goes back to the line's start and
    what follows overwrites it (as tqdm redraws its bar)."""
    lines = []
    for raw in output.replace("\r\n", "\n").split("\n"):
        line, col = [], 0
        for ch in raw:
            if ch == "\r":
                col = 0
                continue
            line[col:col + 1] = [ch]
            col += 1
        lines.append("".join(line).rstrip())
    return lines


@pytest.mark.slow
def test_a_terminal_shows_log_lines_above_the_bar_and_the_stop_line_once(tmp_path, data_dir):
    """train.py on a terminal (a pty, 100 columns): each log line on a line of its own, never glued to
    the progress bar; Ctrl-C ends in one stop line."""
    import fcntl, os, pty, select, signal, struct, termios, time

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), f"hydra.run.dir={tmp_path / 'run'}", *TINY,
                             f"data.data_dir={data_dir}", "logger=none", "trainer.progress=true",
                             "trainer.max_iters=100000", "trainer.log_interval=3"],
                            cwd=ROOT, stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    output, deadline, sent = b"", time.time() + 120, False
    while time.time() < deadline:
        if not sent and output.count(b"] - iter ") >= 3:
            proc.send_signal(signal.SIGINT)
            sent = True
        if select.select([master], [], [], 0.2)[0]:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                break
            output += chunk
        elif proc.poll() is not None:
            break
    os.close(master)
    assert proc.wait(timeout=60) == 1
    text = output.decode(errors="replace")
    assert "train:" in text and "it/s" in text  # the bar was drawn
    shown = screen_lines(text)
    logged = [line for line in shown if "] - iter " in line]
    assert len(logged) >= 3 and all(line.startswith("[") and "train:" not in line for line in logged), logged
    assert sum("stopped by SIGINT" in line for line in shown) == 1, shown[-5:]
