import json
import math

import pytest

from gpt2.config import LoggerConfig
from gpt2.errors import ConfigError
from gpt2.runlog import RunLogger, read_metrics, resolve_wandb_mode, wandb_credentials_configured

from conftest import read_wandb_records


def test_auto_mode_is_offline_without_credentials(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    assert not wandb_credentials_configured()
    assert resolve_wandb_mode("auto") == "offline"
    with pytest.raises(ConfigError, match="logger.mode: 'online' needs W&B credentials"):
        resolve_wandb_mode("online")


def test_auto_mode_is_online_with_credentials(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_wandb_mode("auto") == "online"
    monkeypatch.delenv("WANDB_API_KEY")
    netrc = tmp_path / "netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + "y" * 40 + "\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    assert resolve_wandb_mode("auto") == "online"


def test_metrics_summary_plot_and_offline_wandb_agree(tmp_path):
    rows = [{"iter": 0, "val_loss": 4.2, "lr": 1e-4},
            {"iter": 5, "train_loss": 3.5, "lr": 5e-4, "grad_norm": 1.5, "tokens_per_sec": 1000.0},
            {"iter": 10, "train_loss": 3.0, "lr": 1e-3, "grad_norm": 1.2, "tokens_per_sec": 1100.0,
             "val_loss": 3.1}]
    cfg = LoggerConfig(mode="auto", project="test", group="g1")
    with RunLogger(cfg, tmp_path, {"model": {"n_layer": 1}}) as run_log:
        assert run_log.wandb.mode == "offline"
        for row in rows:
            run_log.log(row)
        run_log.finish({"best_val_loss": 3.1, "iters": 10})
    assert read_metrics(tmp_path) == rows
    assert json.loads((tmp_path / "summary.json").read_text()) == {"best_val_loss": 3.1, "iters": 10}
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    records = read_wandb_records(tmp_path)
    history = [r["history"] for r in records if r["type"] == "history"]
    logged = {h["step"].get("num", 0): h["item"] for h in history}
    for row in rows:
        for key in ("train_loss", "val_loss", "lr"):
            if key in row:
                assert logged[row["iter"]][key] == row[key]
    run = next(r["run"] for r in records if r["type"] == "run")
    assert run["project"] == "test" and run["run_group"] == "g1"
    assert run["config"]["update"]["model"] == {"n_layer": 1}
    summary = {}
    for r in records:
        if r["type"] == "summary":
            summary.update(r["summary"].get("update", {}))
    assert summary["best_val_loss"] == 3.1


def test_logger_none_writes_files_only(tmp_path):
    with RunLogger(LoggerConfig(backend="none"), tmp_path, {}) as run_log:
        run_log.log({"iter": 1, "train_loss": 2.0})
        run_log.finish({"best_val_loss": math.inf})
    assert not (tmp_path / "wandb").exists()
    assert read_metrics(tmp_path) == [{"iter": 1, "train_loss": 2.0}]
