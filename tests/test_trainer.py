import math
import os
import signal

import pytest
import torch

from gpt2.train.checkpoint import load_checkpoint, load_model
from gpt2.errors import CheckpointError, DataError, HarnessError
from gpt2.model.gpt import GPT, GPTConfig
from gpt2.run.logger import read_metrics
from gpt2.train.runtime import Runtime
from gpt2.data.tokenizer import tokenizer_from_state
from gpt2.train.step import evaluate, sample_text
from gpt2.train.trainer import train

from conftest import tiny_config


def losses(run_dir):
    return [(r["iter"], r.get("train_loss"), r.get("val_loss")) for r in read_metrics(run_dir)]


@pytest.mark.slow
def test_same_seed_same_losses_other_seed_other_losses(data_dir, tmp_path):
    a = train(tiny_config(data_dir), tmp_path / "a")
    b = train(tiny_config(data_dir), tmp_path / "b")
    c = train(tiny_config(data_dir, "data.seed=99"), tmp_path / "c")
    assert a["iters"] == 20
    assert losses(tmp_path / "a") == losses(tmp_path / "b")  # bit-identical after 20 iterations
    assert a["final_train_loss"] == b["final_train_loss"] and a["best_val_loss"] == b["best_val_loss"]
    assert a["final_train_loss"] != c["final_train_loss"]


def test_training_lowers_the_loss(data_dir, tmp_path):
    summary = train(tiny_config(data_dir, "trainer.max_iters=60", "trainer.eval_interval=30",
                                "data.tokenizer=char"), tmp_path)
    rows = read_metrics(tmp_path)
    assert rows[0]["iter"] == 0 and rows[0]["val_loss"] == pytest.approx(math.log(65), abs=0.2)
    assert summary["best_val_loss"] < rows[0]["val_loss"] - 0.8
    # one batch of 64 tokens is a noisy loss (3.1 to 3.7 late in this run): compare means of rows
    late = [r["train_loss"] for r in rows if r["iter"] >= 35]
    assert sum(late) / len(late) < rows[1]["train_loss"] - 0.5


@pytest.mark.slow
def test_metrics_rows_and_summary(data_dir, tmp_path):
    summary = train(tiny_config(data_dir, "trainer.grad_accum=2"), tmp_path)
    rows = read_metrics(tmp_path)
    assert [r["iter"] for r in rows] == [0, 5, 10, 15, 20]
    assert [r["iter"] for r in rows if "val_loss" in r] == [0, 10, 20]
    for row in rows[1:]:
        assert {"train_loss", "lr", "grad_norm", "tokens_per_sec"} <= set(row) and row["tokens_per_sec"] > 0
    assert summary["tokens_seen"] == 20 * 4 * 16 * 2  # iters * B * T * grad_accum
    assert summary["best_val_loss"] == min(r["val_loss"] for r in rows[1:] if "val_loss" in r)
    assert summary["final_val_loss"] == rows[-1]["val_loss"]
    assert summary["device"] == "cpu" and summary["params"] > 0 and summary["stopped_by"] is None
    assert (tmp_path / "sample.txt").read_text() == summary["sample"] != ""
    best = load_checkpoint(tmp_path / "ckpt" / "best.pt")
    assert best["best_val_loss"] == summary["best_val_loss"]
    assert load_checkpoint(tmp_path / "ckpt" / "last.pt")["iter"] == 20


def test_sigint_finishes_the_step_saves_and_stops(data_dir, tmp_path):
    def interrupt(trainer):
        if trainer.progress.iters == 7:
            os.kill(os.getpid(), signal.SIGINT)

    summary = train(tiny_config(data_dir, "trainer.max_iters=50"), tmp_path, on_step=interrupt)
    assert summary["stopped_by"] == "SIGINT" and summary["iters"] == 7
    assert load_checkpoint(tmp_path / "ckpt" / "last.pt")["iter"] == 7
    assert not (tmp_path / "ckpt" / "best.pt").exists() and summary["sample"] == ""  # a stopped run: no sample
    assert read_metrics(tmp_path)[-1]["iter"] == 7
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored


def test_bfloat16_autocast_on_cpu(data_dir, tmp_path):
    summary = train(tiny_config(data_dir, "trainer.dtype=bfloat16", "trainer.max_iters=10"), tmp_path)
    assert summary["dtype"] == "bfloat16" and math.isfinite(summary["final_train_loss"])


def test_char_corpus_without_a_newline_samples(data_dir, tmp_path):
    text = tmp_path / "one_line.txt"
    text.write_text("to be or not to be, that is the question " * 20)
    summary = train(tiny_config(data_dir, f"data.path={text}", "data.tokenizer=char",
                                "trainer.max_iters=4", "trainer.eval_interval=2"), tmp_path / "run")
    assert summary["iters"] == 4 and len(summary["sample"]) == 16


def test_validation_loss_is_the_mean_over_tokens():
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, vocab_size=30, block_size=8))
    x, y = torch.randint(0, 30, (5, 8)), torch.randint(0, 30, (5, 8))
    with torch.no_grad():
        y[4] = model(x[4:], y[4:])[0][0].argmin(-1)  # the short batch: the least likely tokens, a high loss
    batches = [(x[:4], y[:4]), (x[4:], y[4:])]  # a full batch and a short last one
    got = evaluate(model, batches, Runtime.create("cpu", "float32")).loss
    with torch.no_grad():
        every_token = model(x, y)[1].item()
        per_batch = sum(model(a, b)[1].item() for a, b in batches) / 2
    assert got == pytest.approx(every_token, rel=1e-6) and got != pytest.approx(per_batch, rel=1e-2)


def test_the_sample_comes_from_the_best_weights(data_dir, tmp_path):
    def spoil(trainer):  # after the last step: the final weights are much worse than the best ones
        if trainer.progress.iters == 20:
            with torch.no_grad():
                trainer.parts.model.transformer.wpe.weight.mul_(50)

    summary = train(tiny_config(data_dir, "data.tokenizer=char"), tmp_path, on_step=spoil)
    best = load_checkpoint(tmp_path / "ckpt" / "best.pt")
    assert best["iter"] == 10 and summary["final_val_loss"] > summary["best_val_loss"]
    encoder, rt = tokenizer_from_state(best["tokenizer"], data_dir), Runtime.create("cpu", "auto")
    assert summary["sample"] == sample_text(load_model(tmp_path / "ckpt" / "best.pt")[0], encoder, rt, 16, 1337)
    assert summary["sample"] != sample_text(load_model(tmp_path / "ckpt" / "last.pt")[0], encoder, rt, 16, 1337)


def test_a_full_disk_while_saving_keeps_the_previous_checkpoint(data_dir, tmp_path, monkeypatch):
    import errno

    import gpt2.train.checkpoint

    saves = []
    real_save = torch.save

    def save_until_the_disk_is_full(state, f):
        saves.append(state.get("iter"))
        if len(saves) > 1:  # the first save (iteration 10) fits, the next does not
            f.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(state, f)

    monkeypatch.setattr(gpt2.train.checkpoint.torch, "save", save_until_the_disk_is_full)
    with pytest.raises(CheckpointError) as failed:
        train(tiny_config(data_dir, "trainer.ckpt_interval=10", "trainer.eval_interval=20"), tmp_path)
    assert str(failed.value) == (f"could not save {tmp_path / 'ckpt' / 'best.pt'} at iteration 20 (No space left on "
                                 f"device); {tmp_path / 'ckpt' / 'last.pt'} (iteration 10) is intact: resume with "
                                 f"trainer.resume=auto")
    monkeypatch.setattr(gpt2.train.checkpoint.torch, "save", real_save)
    assert load_checkpoint(tmp_path / "ckpt" / "last.pt")["iter"] == 10
    assert not list((tmp_path / "ckpt").glob(".*.tmp"))  # no half-written file left


def test_out_of_memory_in_a_step_is_one_line(data_dir, tmp_path, monkeypatch):
    forward = GPT.forward

    def forward_out_of_memory(self, idx, targets=None):
        if self.training:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return forward(self, idx, targets)

    monkeypatch.setattr(GPT, "forward", forward_out_of_memory)
    with pytest.raises(HarnessError) as failed:
        train(tiny_config(data_dir, "trainer.dtype=float32"), tmp_path)
    assert str(failed.value) == (  # the largest part of the estimate (gpt2/train/budget.py) and its setting
        "out of memory on cpu in iteration 1 (model.n_embd=32 needs ~49 MiB to train (weights, gradients and AdamW "
        "state of 1.6M parameters, most in the token table: 25 MiB)): lower model.n_embd")


def test_an_unreadable_text_is_one_data_error(tmp_path, monkeypatch):
    from pathlib import Path

    from gpt2.data.sources import read_text

    def refuse(self):
        raise PermissionError(13, "Permission denied", str(self))

    (tmp_path / "text.txt").write_text("hello")
    monkeypatch.setattr(Path, "read_bytes", refuse)
    with pytest.raises(DataError, match=r"text.txt cannot be read \(Permission denied\): check its permissions"):
        read_text(tmp_path / "text.txt")


@pytest.mark.parametrize("kind", ["gpt2", "char"])
def test_bits_per_byte_is_the_loss_over_the_bytes_of_the_targets(tmp_path, kind):
    """val_bpb = the targets' summed cross-entropy in bits / their UTF-8 bytes, counted by hand here."""
    from gpt2.data.tokenizer import CharTokenizer, GPT2Tokenizer

    from conftest import MIRROR

    text = "Héllo wörld, ünïcode — 東京 text.\n" * 6
    enc = GPT2Tokenizer(tmp_path, MIRROR) if kind == "gpt2" else CharTokenizer.from_text(text)
    ids = torch.tensor(enc.encode(text))
    T = 8
    n = (len(ids) - 1) // T
    targets = ids[1:1 + n * T]
    assert "\ufffd" not in enc.decode(targets.tolist())  # whole characters: their bytes are countable
    target_bytes = len(enc.decode(targets.tolist()).encode("utf-8"))
    x, y = ids[:n * T].view(n, T), targets.view(n, T)
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, vocab_size=enc.vocab_size, block_size=T))
    got = evaluate(model, [(x[:3], y[:3]), (x[3:], y[3:])], Runtime.create("cpu", "float32"),
                   torch.tensor(enc.token_bytes()))
    with torch.no_grad():
        logits = model(x, y)[0]
        nats = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1),
                                                 reduction="sum").item()
    assert got.bpb == pytest.approx(nats / math.log(2) / target_bytes, rel=1e-6)
    if kind == "gpt2":  # <|endoftext|>, a separator between documents in token files, is no text
        assert enc.token_bytes()[enc.eot_token] == 0
    assert got.loss == pytest.approx(nats / y.numel(), rel=1e-6)


def test_a_trainer_made_without_a_plan_plans_its_start(data_dir, tmp_path):
    """Trainer(config, run_dir) asks plan_start itself: it never overwrites a run it was not told to continue."""
    from gpt2.errors import RunDirError
    from gpt2.train.trainer import Trainer

    train(tiny_config(data_dir, "trainer.max_iters=2", "trainer.sample_tokens=0"), tmp_path)
    with pytest.raises(RunDirError, match="already holds a run"):
        Trainer(tiny_config(data_dir, "trainer.max_iters=2"), tmp_path)
    trainer = Trainer(tiny_config(data_dir, "trainer.max_iters=4", "trainer.resume=auto"), tmp_path)
    assert trainer.plan.kind == "resume" and trainer.progress.iters == 2 and trainer.plan.state is None  # released
