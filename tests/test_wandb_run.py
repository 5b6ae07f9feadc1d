"""W&B's side (gpt2/run/wandb_run.py): the mode a run logs in, credentials, and the WANDB_* variables
and logger.* values W&B would refuse, each refused in one line before any work."""

import pytest

from gpt2.config import LoggerConfig
from gpt2.errors import ConfigError
from gpt2.run.logger import RunLogger
from gpt2.run.wandb_run import check_wandb_env, resolve_wandb_mode, wandb_credentials_configured, wandb_mode


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


@pytest.mark.parametrize("name,value,message", [
    ("WANDB_MODE", "bogus", ("WANDB_MODE='bogus' is not valid: use online, offline, shared, disabled, dryrun "
                             "or run (or unset it)")),
    ("WANDB_SILENT", "maybe", "WANDB_SILENT='maybe' is not valid: use true or false (or unset it)"),
    ("WANDB_CONSOLE", "x", ("WANDB_CONSOLE='x' is not valid: use auto, off, wrap, redirect, wrap_raw or "
                            "wrap_emu (or unset it)")),
    ("WANDB_INIT_TIMEOUT", "soon", ("WANDB_INIT_TIMEOUT='soon' is not valid: Input should be a valid number, "
                                    "unable to parse string as a number (or unset it)")),
    ("WANDB_PROJECT", "team/p", ("WANDB_PROJECT='team/p' is not valid: Invalid project name 'team/p': cannot "
                                 "contain characters '/,\\\\,#,?,%,:', found '/' (or unset it)")),
])
def test_a_bad_wandb_variable_is_one_line_naming_it(monkeypatch, name, value, message):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        check_wandb_env(LoggerConfig(mode="offline"))
    assert str(info.value) == message
    check_wandb_env(LoggerConfig(backend="none"))  # nothing is checked when W&B does not log
    check_wandb_env(LoggerConfig(mode="disabled"))


def test_a_bad_logger_value_for_wandb_is_one_line():
    with pytest.raises(ConfigError) as info:
        check_wandb_env(LoggerConfig(mode="offline", project="team/p"))
    assert str(info.value) == ("logger.project='team/p' is not valid: Invalid project name 'team/p': cannot "
                               "contain characters '/,\\\\,#,?,%,:', found '/'")


def test_auto_mode_follows_wandb_mode_and_an_explicit_mode_wins(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    with RunLogger(LoggerConfig(mode="auto"), tmp_path, {}) as run_log:
        assert run_log.wandb is None and run_log.wandb_id is None
    assert not (tmp_path / "wandb").exists()
    monkeypatch.setenv("WANDB_MODE", "dryrun")
    assert wandb_mode(LoggerConfig(mode="auto")) == "offline"
    monkeypatch.setenv("WANDB_MODE", "online")
    with pytest.raises(ConfigError, match=r"^WANDB_MODE: 'online' needs W&B credentials \(set WANDB_API_KEY"):
        check_wandb_env(LoggerConfig(mode="auto"))
    assert wandb_mode(LoggerConfig(mode="offline")) == "offline"


def test_wandb_logs_when_logger_backend_names_it_among_others(monkeypatch):
    assert wandb_mode(LoggerConfig(backend="tensorboard+csv", mode="offline")) is None
    assert wandb_mode(LoggerConfig(backend="csv+wandb", mode="offline")) == "offline"
    monkeypatch.setenv("WANDB_MODE", "bogus")
    check_wandb_env(LoggerConfig(backend="tensorboard"))  # W&B is not checked when it does not log
    with pytest.raises(ConfigError, match="^WANDB_MODE='bogus' is not valid"):
        check_wandb_env(LoggerConfig(backend="tensorboard+wandb", mode="offline"))
