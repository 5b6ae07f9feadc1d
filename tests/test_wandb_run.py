"""W&B's side (gpt2/run/wandb_run.py): the mode a run logs in, credentials, the WANDB_* variables
and logger.* values W&B would refuse, each refused in one line before any work, and an online run
whose server cannot be reached going offline at once (no network is touched: local sockets only)."""

import logging
import socket
import time
from types import SimpleNamespace

import pytest

from gpt2.config import LoggerConfig
from gpt2.errors import ConfigError
from gpt2.run import wandb_run
from gpt2.run.logger import RunLogger
from gpt2.run.wandb_run import (WandbRun, check_wandb_env, resolve_wandb_mode, wandb_credentials_configured,
                                wandb_mode, wandb_unreachable)


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


@pytest.fixture
def server():
    """A local TCP server: (its URL, a closed port's URL)."""
    with socket.socket() as listening, socket.socket() as closed:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        yield f"http://127.0.0.1:{listening.getsockname()[1]}", closed.getsockname()[1]


def never_answers(address, timeout):
    time.sleep(1)  # past the check's timeout
    raise TimeoutError("timed out")


def no_name(address, timeout):
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


@pytest.mark.parametrize("base_url, proxy, connect, reason", [
    ("server", None, None, None),
    ("closed", None, None, "127.0.0.1:{closed} cannot be reached (Connection refused)"),
    ("server", "closed", None, "proxy 127.0.0.1:{closed} cannot be reached (Connection refused)"),
    ("https://api.wandb.ai", None, no_name, "api.wandb.ai:443 cannot be reached (its name does not resolve)"),
    ("https://wandb.example:8443", None, never_answers, "wandb.example:8443 cannot be reached (no answer within 0.2 s)"),
], ids=["reachable", "refused", "proxy refused", "no DNS", "no answer"])
def test_an_unreachable_wandb_server_is_named_within_the_timeout(monkeypatch, server, base_url, proxy, connect,
                                                                 reason):
    url, closed = server
    urls = {"server": url, "closed": f"http://127.0.0.1:{closed}"}
    monkeypatch.setenv("WANDB_BASE_URL", urls.get(base_url, base_url))
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    if proxy:
        monkeypatch.setenv("http_proxy", urls[proxy])
    if connect:
        monkeypatch.setattr(socket, "create_connection", connect)
    started = time.perf_counter()
    assert wandb_unreachable(timeout=0.2) == (reason and reason.format(closed=closed))
    assert time.perf_counter() - started < 1


def fake_init(modes: list, fails_online: bool = False):
    """WandbRun._init without wandb: records each mode asked for and returns a run in it."""
    def init(wandb, mode, kwargs):
        modes.append(mode)
        if fails_online and mode == "online":
            raise TimeoutError("init timed out after 30 s")
        sync_dir = f"{kwargs['dir']}/wandb/{mode}-run-x"
        return SimpleNamespace(id="x", url="https://wandb.ai/u/p/runs/x",
                               settings=SimpleNamespace(mode=mode, sync_dir=sync_dir))
    return staticmethod(init)


@pytest.mark.parametrize("unreachable, fails_online, modes, line", [
    (None, False, ["online"], (logging.INFO, "W&B online: https://wandb.ai/u/p/runs/x")),
    ("api.wandb.ai:443 cannot be reached (its name does not resolve)", False, ["offline"],
     (logging.WARNING, "W&B online: api.wandb.ai:443 cannot be reached (its name does not resolve); logging offline "
                       "instead. W&B offline: {run}/wandb/offline-run-x; sync with: wandb sync {run}/wandb/offline-run-x")),
    (None, True, ["online", "offline"],
     (logging.WARNING, "W&B online: init failed (init timed out after 30 s); logging offline instead. W&B offline: "
                       "{run}/wandb/offline-run-x; sync with: wandb sync {run}/wandb/offline-run-x")),
], ids=["reachable", "unreachable: offline at once", "init fails"])
def test_an_online_run_that_cannot_reach_wandb_logs_offline_and_says_where(monkeypatch, tmp_path, caplog, unreachable,
                                                                            fails_online, modes, line):
    asked = []
    monkeypatch.setattr(wandb_run, "wandb_unreachable", lambda: unreachable)
    monkeypatch.setattr(WandbRun, "_init", fake_init(asked, fails_online))
    caplog.set_level(logging.INFO, logger=wandb_run.__name__)
    run = WandbRun(LoggerConfig(mode="online"), tmp_path, {}, mode="online")
    assert asked == modes and run.mode == modes[-1]
    level, message = line
    assert (caplog.records[-1].levelno, caplog.records[-1].getMessage()) == (level, message.format(run=tmp_path))
