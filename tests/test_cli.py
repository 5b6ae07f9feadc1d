"""gpt2/run/cli.py, train.py's command line around Hydra, called directly: `overrides_of`, `explain`
(one line for an error, naming the override it comes from; None for a bug), `run_entry`'s one-line
errors, `fail` (one logged line and exit 1, quiet or prefixed on other ranks) and `report` (the result
line; a stopped run's continue command) with Hydra's config set up as Hydra does."""

import errno
import logging
import os
import sys
from pathlib import Path

import hydra
import pytest
from hydra import compose as hydra_compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from gpt2.errors import (CheckpointError, ConfigError, DataError, NonFiniteLossError, PeerFailed, RunDirError)
from gpt2.run.cli import (NO_HYDRA_FILES, explain, fail, overrides_of, report, run_entry,
                         run_files_subdir)
from gpt2.run.compose import CONF_DIR, register_configs
from gpt2.run.record import RunSummary
from gpt2.run.rundir import RunDirBusy
from gpt2.signals import STOP


@pytest.fixture(autouse=True)
def rank_0(monkeypatch):
    """Each test starts as a plain `python train.py` (rank 0 of 1)."""
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)


def rank_1_of_2(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")


# ------------------------------------------------------------------------------------ overrides_of
@pytest.mark.parametrize("argv, overrides", [
    ([], []),
    (["model=baby", "optim.lr=6e-4"], ["model=baby", "optim.lr=6e-4"]),
    (["--cfg", "job", "model=baby"], ["model=baby"]),
    (["-c", "all", "--resolve", "-m", "optim.lr=1e-3,3e-3"], ["optim.lr=1e-3,3e-3"]),
    (["--config-name", "other", "-cp", "conf2", "-cd", "conf3", "+extra=1", "~logger"], ["+extra=1", "~logger"]),
    (["--package", "_global_", "--experimental-rerun", "x.pickle", "a=1"], ["a=1"]),
    (["--config-name=other", "--info", "all", "a=1"], ["a=1"]),
])
def test_overrides_of_leaves_out_flags_and_their_values(argv, overrides):
    assert overrides_of(argv) == overrides


# ----------------------------------------------------------------------------------------- explain
def hydra_error(*overrides: str) -> Exception:
    """The exception Hydra itself raises composing conf/ with these overrides."""
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        try:
            hydra_compose(config_name="config", overrides=list(overrides))
        except Exception as exc:
            return exc
    raise AssertionError(f"{overrides} composed")


MODEL_OPTIONS = ", ".join(sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml")))


@pytest.mark.parametrize("override, line", [
    ("model.n_headd=2", "Could not override 'model.n_headd'. (Key 'n_headd' not in 'ModelConfig')"),
    ("model=nope", f"In 'config': Could not find 'model/nope' (options: {MODEL_OPTIONS})"),
    ("model.n_head=abc",
     "Error merging override model.n_head=abc (Value 'abc' of type 'str' could not be converted to Integer)"),
    ("a=b=c=(", "a=b=c=(: mismatched input '=' expecting <EOF> (a value with special characters needs quotes: "
                "'a=\"b=c=(\"')"),
])
def test_a_hydra_composition_error_is_one_line(override, line):
    assert explain(hydra_error(override), [override]) == line


@pytest.mark.parametrize("exc, line", [
    (ConfigError("model.n_head: must divide n_embd"), "model.n_head: must divide n_embd"),
    (ValueError("Only one of --run, --multirun, --cfg, --info and --shell-completion can be specified"),
     "Only one of --run, --multirun, --cfg, --info and --shell-completion can be specified"),
    (OSError(errno.EACCES, "Permission denied", "/elsewhere/x"), "Permission denied: /elsewhere/x"),
    (KeyError("n_head"), None),
    (ValueError("bad shape"), None),
    (OSError("no strerror"), None),
])
def test_explain_gives_a_user_errors_line_and_none_for_a_bug(exc, line):
    assert explain(exc, ["model=baby"]) == line


def test_an_os_error_under_an_overrides_path_names_the_override(tmp_path):
    taken = tmp_path / "taken"
    argv = [f"hydra.run.dir={taken}", "model=baby"]
    exc = NotADirectoryError(errno.ENOTDIR, "Not a directory", str(taken / "ckpt"))
    assert explain(exc, argv) == f"hydra.run.dir={taken}: Not a directory: {taken / 'ckpt'}"
    exc = FileExistsError(errno.EEXIST, "File exists", str(taken))  # the path itself
    assert explain(exc, argv) == f"hydra.run.dir={taken}: File exists: {taken}"


def test_the_longest_override_path_holding_the_file_is_named(tmp_path):
    argv = [f"data.data_dir={tmp_path}", f"hydra.run.dir={tmp_path / 'run'}"]
    exc = PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "run" / "train.log"))
    run = tmp_path / "run"
    assert explain(exc, argv) == f"hydra.run.dir={run}: Permission denied: {run / 'train.log'}"


@pytest.mark.parametrize("override", ["data.data_dir=data", "data.data_dir=./data/", "data.data_dir=~/data"])
def test_relative_and_home_paths_of_overrides_are_matched(tmp_path, monkeypatch, override):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    exc = PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "data" / "x.bin"))
    assert explain(exc, [override]) == f"{override}: Permission denied: {tmp_path / 'data' / 'x.bin'}"


@pytest.mark.parametrize("argv", [
    lambda d: [f"data.data_dir={d}/dat"],              # a sibling sharing the prefix, not a parent
    lambda d: ["--config-dir", f"{d}"],                # a flag's value is no override
    lambda d: [f"data.data_dir={d}/data/x.bin/more"],  # under the file, not above it
])
def test_an_os_error_elsewhere_names_no_override(tmp_path, argv):
    exc = PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "data" / "x.bin"))
    assert explain(exc, argv(tmp_path)) == f"Permission denied: {tmp_path / 'data' / 'x.bin'}"


# --------------------------------------------------------------------------------------- run_entry
def entry(monkeypatch, argv, exc: BaseException, full_error=None):
    """run_entry with train.py's argv and a main that raises `exc`."""
    monkeypatch.setenv("HYDRA_FULL_ERROR", "unset")  # so that monkeypatch restores it as it was
    monkeypatch.delenv("HYDRA_FULL_ERROR")
    if full_error is not None:
        monkeypatch.setenv("HYDRA_FULL_ERROR", full_error)
    monkeypatch.setattr(sys, "argv", ["train.py", *argv])

    def main():
        assert os.environ["HYDRA_FULL_ERROR"] == (full_error or "1")
        raise exc
    run_entry(main)


def test_run_entry_prints_a_user_error_in_one_line_and_exits_1(monkeypatch, capsys):
    with pytest.raises(SystemExit) as exited:
        entry(monkeypatch, ["model=nope"], hydra_error("model=nope"))
    assert exited.value.code == 1
    assert capsys.readouterr() == ("", f"error: In 'config': Could not find 'model/nope' (options: {MODEL_OPTIONS})\n")


@pytest.mark.parametrize("exc, full_error", [(KeyError("n_head"), None), (ConfigError("model.n_head: bad"), "1")])
def test_run_entry_raises_a_bug_or_any_error_the_user_asked_in_full(monkeypatch, capsys, exc, full_error):
    with pytest.raises(type(exc)) as raised:
        entry(monkeypatch, ["model=baby"], exc, full_error)
    assert raised.value is exc and capsys.readouterr() == ("", "")


def torchrun_process(monkeypatch, rank: int, local_rank: int, node: int, world_size: int = 4):
    """This process as torchrun's rank `rank` (local rank `local_rank` on node `node`, 2 per node)."""
    for name, value in (("RANK", rank), ("LOCAL_RANK", local_rank), ("GROUP_RANK", node),
                        ("WORLD_SIZE", world_size), ("LOCAL_WORLD_SIZE", 2)):
        monkeypatch.setenv(name, str(value))


SWEEP_REFUSED = ("error: a sweep (-m) under torchrun is not supported: run the sweep's jobs with "
                 "hydra/launcher=submitit_slurm (or submitit_local), each job one process\n")
DIR_ERROR = PermissionError(errno.EACCES, "Permission denied", "/nfs/run")
DIR_LINE = "hydra.run.dir=/nfs/run: Permission denied: /nfs/run"


@pytest.mark.parametrize("rank, local_rank, node, argv, exc, err", [
    (0, 0, 0, ["-m", "optim.lr=1e-3,3e-3"], AssertionError("main ran"), SWEEP_REFUSED),
    (1, 1, 0, ["-m", "optim.lr=1e-3,3e-3"], AssertionError("main ran"), ""),
    (0, 0, 0, ["model=nope"], "model=nope", f"error: In 'config': Could not find 'model/nope' (options: {MODEL_OPTIONS})\n"),
    (1, 1, 0, ["model=nope"], "model=nope", ""),
    (2, 0, 1, ["model=nope"], "model=nope", ""),  # another node meets the same config
    (0, 0, 0, ["hydra.run.dir=/nfs/run"], DIR_ERROR, f"error: {DIR_LINE}\n"),
    (1, 1, 0, ["hydra.run.dir=/nfs/run"], DIR_ERROR, ""),  # rank 0's disk: rank 0 says it
    (2, 0, 1, ["hydra.run.dir=/nfs/run"], DIR_ERROR, f"error: rank 2: {DIR_LINE}\n"),  # another node's disk
    (3, 1, 1, ["hydra.run.dir=/nfs/run"], DIR_ERROR, ""),  # once per node
], ids=["sweep rank 0", "sweep rank 1", "config rank 0", "config rank 1", "config node 1", "dir rank 0",
        "dir rank 1", "dir node 1", "dir node 1 rank 3"])
def test_under_torchrun_an_error_before_the_run_is_said_once(monkeypatch, capsys, rank, local_rank, node, argv,
                                                             exc, err):
    """Errors before the run's own handler (Hydra's composition, its run directory, run_entry's checks)
    are said by rank 0 (an OS error on another node also by that node's first process); the others
    exit 1 quietly."""
    torchrun_process(monkeypatch, rank, local_rank, node)
    with pytest.raises(SystemExit) as exited:
        entry(monkeypatch, argv, hydra_error(exc) if isinstance(exc, str) else exc)
    assert exited.value.code == 1
    assert capsys.readouterr() == ("", err)


@pytest.mark.parametrize("argv", [["hydra.run.dir="], ["hydra.run.dir=''"], ['hydra.run.dir=""'],
                                  ["++hydra.run.dir= "], ["-m", "hydra.sweep.dir=", "model=baby,tiny"]])
def test_an_empty_run_or_sweep_directory_is_refused_not_read_as_the_current_one(monkeypatch, capsys, argv):
    """`hydra.run.dir=$UNSET` would train in (and write checkpoints into) the current directory."""
    monkeypatch.setenv("HYDRA_FULL_ERROR", "unset")  # so that monkeypatch restores it as it was
    monkeypatch.delenv("HYDRA_FULL_ERROR")
    monkeypatch.setattr(sys, "argv", ["train.py", *argv])
    with pytest.raises(SystemExit) as exited:
        run_entry(lambda: pytest.fail("the run started"))
    key = "hydra.sweep.dir" if "-m" in argv else "hydra.run.dir"
    assert exited.value.code == 1
    assert capsys.readouterr() == ("", f"error: {key}: an empty path; is a shell variable unset?\n")


def test_run_entry_tells_hydra_to_write_no_files_for_a_run_only(monkeypatch):
    monkeypatch.setenv("HYDRA_FULL_ERROR", "unset")  # so that monkeypatch restores it as it was
    monkeypatch.delenv("HYDRA_FULL_ERROR")
    seen = []
    monkeypatch.setattr(sys, "argv", ["train.py", "model=baby"])
    run_entry(lambda: seen.append(sys.argv[1:]))
    monkeypatch.setattr(sys, "argv", ["train.py", "-m", "model=baby,tiny"])
    run_entry(lambda: seen.append(sys.argv[1:]))
    monkeypatch.setattr(sys, "argv", ["train.py", "--cfg", "hydra", "model=baby"])
    run_entry(lambda: seen.append(sys.argv[1:]))
    assert seen == [["model=baby", NO_HYDRA_FILES], ["-m", "model=baby,tiny", NO_HYDRA_FILES],
                    ["--cfg", "hydra", "model=baby"]]
    assert sys.argv == ["train.py", "--cfg", "hydra", "model=baby"]  # as it was
    assert "HYDRA_FULL_ERROR" not in os.environ  # as it was: not passed on to the processes a test starts


# -------------------------------------------------------------------------------------------- fail
def logged(caplog) -> list[tuple[str, int, str]]:
    return [(r.name, r.levelno, r.getMessage()) for r in caplog.records]


@pytest.mark.parametrize("exc, line", [
    (ConfigError("model.n_head: must divide n_embd"), "model.n_head: must divide n_embd"),
    (NonFiniteLossError("the loss is nan at iteration 7"), "the loss is nan at iteration 7"),
    (OSError(errno.ENOSPC, "No space left on device", "/runs/a/ckpt/last.pt"),
     "No space left on device: /runs/a/ckpt/last.pt (free some space, or write somewhere else)"),
])
def test_fail_logs_a_user_error_in_one_line_and_exits_1(tmp_path, caplog, exc, line):
    with pytest.raises(SystemExit) as exited:
        fail(exc, tmp_path)
    assert exited.value.code == 1
    assert logged(caplog) == [("train", logging.ERROR, line)]


@pytest.fixture
def logging_config():
    """Set the root logger's handlers (as a hydra/job_logging config would); restored after the test."""
    root, train_log = logging.getLogger(), logging.getLogger("train")
    saved = root.handlers[:], root.level, train_log.disabled

    def set_up(handlers, disabled=False):
        root.handlers[:] = handlers
        train_log.disabled = disabled  # hydra/job_logging=disabled: disable_existing_loggers
    yield set_up
    root.handlers[:], train_log.disabled = saved[0], saved[2]
    root.setLevel(saved[1])


@pytest.mark.parametrize("train_log, console, disabled", [
    (True, None, False), (True, "stdout", False), (True, "stderr", False), (True, "stdout", True), (False, None, False),
], ids=["no console handler", "console on stdout (Hydra's)", "console on stderr", "disabled", "no handler at all"])
def test_fail_prints_its_line_on_stderr_once_whatever_the_logging_config(tmp_path, capsys, logging_config, train_log,
                                                                         console, disabled):
    handlers = [logging.FileHandler(tmp_path / "train.log")] if train_log else []
    handlers += [logging.StreamHandler(getattr(sys, console))] if console else []
    logging_config(handlers, disabled)
    with pytest.raises(SystemExit) as exited:
        fail(ConfigError("model.n_head: must divide n_embd"), tmp_path)
    for handler in handlers:
        handler.close()
    assert exited.value.code == 1
    assert capsys.readouterr() == ("", "model.n_head: must divide n_embd\n")  # not logging's last resort too
    if train_log:
        assert (tmp_path / "train.log").read_text() == ("" if disabled else "model.n_head: must divide n_embd\n")


def test_fail_raises_a_bug_with_its_traceback(tmp_path, caplog):
    exc = KeyError("n_head")
    with pytest.raises(KeyError) as raised:
        fail(exc, tmp_path)
    assert raised.value is exc and caplog.records == []


@pytest.fixture
def file_handlers(tmp_path):
    """train.log handlers on the root logger: the run dir's (`run`) and another one's (`other`)."""
    root, handlers = logging.getLogger(), {}
    for name in ("run", "other"):
        (tmp_path / name).mkdir()
        handlers[name] = logging.FileHandler(tmp_path / name / "train.log")
        root.addHandler(handlers[name])
    yield handlers
    for handler in handlers.values():
        root.removeHandler(handler)
        handler.close()


def test_a_run_dir_error_does_not_write_into_that_dirs_train_log(tmp_path, caplog, file_handlers):
    with pytest.raises(SystemExit):
        fail(RunDirError(f"{tmp_path / 'run'} is in use by another run"), tmp_path / "run")
    assert file_handlers["run"] not in logging.getLogger().handlers
    assert file_handlers["other"] in logging.getLogger().handlers
    assert (tmp_path / "run" / "train.log").read_text() == ""
    assert (tmp_path / "other" / "train.log").read_text() == f"{tmp_path / 'run'} is in use by another run\n"


def test_another_error_keeps_the_run_dirs_train_log(tmp_path, caplog, file_handlers):
    with pytest.raises(SystemExit):
        fail(DataError("corpus.txt is empty"), tmp_path / "run")
    assert file_handlers["run"] in logging.getLogger().handlers
    assert (tmp_path / "run" / "train.log").read_text() == "corpus.txt is empty\n"


@pytest.mark.parametrize("exc", [ConfigError("model.n_head: bad"), DataError("corpus.txt is empty"),
                                 CheckpointError("last.pt is damaged"), RunDirError("runs/a is in use"),
                                 NonFiniteLossError("the loss is nan"), PeerFailed("rank 0 failed")])
def test_on_another_rank_an_error_every_rank_meets_exits_1_silently(tmp_path, monkeypatch, caplog, exc):
    rank_1_of_2(monkeypatch)
    with pytest.raises(SystemExit) as exited:
        fail(exc, tmp_path)
    assert exited.value.code == 1 and caplog.records == []


def test_on_another_rank_any_other_user_error_is_prefixed_with_the_rank(tmp_path, monkeypatch, caplog):
    rank_1_of_2(monkeypatch)
    with pytest.raises(SystemExit) as exited:
        fail(OSError(errno.EIO, "Input/output error", "/dev/shm/x"), tmp_path)
    assert exited.value.code == 1
    assert logged(caplog) == [("train", logging.ERROR, "rank 1: Input/output error: /dev/shm/x")]


def test_on_another_rank_a_bug_is_raised(tmp_path, monkeypatch, caplog):
    rank_1_of_2(monkeypatch)
    with pytest.raises(ZeroDivisionError):
        fail(ZeroDivisionError("division by zero"), tmp_path)
    assert caplog.records == []


# ---------------------------------------------------------------------------------- save_run_files
@pytest.fixture
def hydra_run(monkeypatch, logging_config):
    """run(body, *argv): a Hydra app over conf/ run in this process as train.py runs (run_entry) with
    these arguments; its job calls body(cfg, run_dir). Hydra's global state is restored after."""
    monkeypatch.setattr(HydraConfig.instance(), "cfg", HydraConfig.instance().cfg)
    monkeypatch.setenv("HYDRA_FULL_ERROR", "unset")  # so that monkeypatch restores it as it was
    monkeypatch.delenv("HYDRA_FULL_ERROR")

    def run(body, *argv: str) -> None:
        @hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
        def app(cfg):
            body(cfg, Path(HydraConfig.get().runtime.output_dir))
        monkeypatch.setattr(sys, "argv", ["train.py", "hydra/job_logging=none", "hydra/hydra_logging=none",
                                          "~hydra.callbacks.sweep_report", *argv])
        run_entry(app)
    yield run
    GlobalHydra.instance().clear()


def files_in(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("overrides, configured, subdir", [
    ([], None, ".hydra"),  # conf/config.yaml's null: train.py writes them
    ([NO_HYDRA_FILES], None, ".hydra"),
    (["hydra.output_subdir=meta", NO_HYDRA_FILES], None, "meta"),
    (["hydra.output_subdir='my meta'", NO_HYDRA_FILES], None, "my meta"),
    (["++hydra.output_subdir=meta", "hydra.output_subdir=other", NO_HYDRA_FILES], None, "other"),
    (["hydra.output_subdir=null", NO_HYDRA_FILES], None, None),
    (["hydra.output_subdir=1", NO_HYDRA_FILES], None, "1"),
    ([], "meta", "meta"),  # set in a config file (without run_entry)
])
def test_the_run_files_go_where_the_command_line_says(overrides, configured, subdir):
    hydra_cfg = OmegaConf.create({"overrides": {"hydra": overrides}, "output_subdir": configured})
    assert run_files_subdir(hydra_cfg) == subdir


@pytest.fixture
def earlier_run(tmp_path) -> Path:
    """A run directory holding an earlier run's record, with Hydra's files in .hydra/ and meta/."""
    run_dir = tmp_path / "run"
    for name in ("config.yaml", ".hydra/config.yaml", ".hydra/overrides.yaml", "meta/hydra.yaml",
                 "meta/overrides.yaml"):
        (run_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / name).write_text(f"the earlier run's {name}\n")
    return run_dir


@pytest.mark.parametrize("output_subdir", [[], ["hydra.output_subdir=meta"], ["hydra.output_subdir=null"]],
                         ids=["default", "meta", "null"])
def test_a_refused_start_changes_no_file_whatever_hydra_output_subdir_says(earlier_run, hydra_run, output_subdir):
    """Hydra writes no file before the run owns its directory (run_entry tells it so): a start refused
    there (e.g. the directory in use) leaves the earlier run's record as it was."""
    before = files_in(earlier_run)
    with pytest.raises(SystemExit) as refused:
        hydra_run(lambda cfg, run_dir: fail(RunDirBusy(f"run directory {run_dir} is in use"), run_dir),
                  f"hydra.run.dir={earlier_run}", *output_subdir, "optim.lr=0.5")
    assert refused.value.code == 1 and files_in(earlier_run) == before


# ------------------------------------------------------------------------------------------ report
@pytest.fixture
def hydra_config(monkeypatch):
    """Set Hydra's config as Hydra does for a job (`HydraConfig.get()`), composed with these overrides;
    the previous one is restored after the test."""
    monkeypatch.setattr(HydraConfig.instance(), "cfg", HydraConfig.instance().cfg)
    monkeypatch.setattr(STOP, "received", None)

    def set_up(*overrides: str):
        register_configs()
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = hydra_compose(config_name="config", overrides=list(overrides), return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
    return set_up


def summary(stopped_by=None, sample="") -> RunSummary:
    return RunSummary(best_val_loss=1.23456, iters=20, tokens_per_sec=1234.4, wall_s=3.21, stopped_by=stopped_by,
                      sample=sample)


RESULT = "best val loss 1.2346 after 20 iterations (1234 tokens/s, 3.2 s); run dir: runs/a\n"


def test_report_prints_the_result_and_the_sample(capsys, caplog, monkeypatch):
    monkeypatch.setattr(STOP, "received", None)
    report(summary(), Path("runs/a"), multirun=False)
    report(summary(sample="ROMEO:\nO"), Path("runs/a"), multirun=False)
    assert capsys.readouterr().out == RESULT + RESULT + "--- sample ---\nROMEO:\nO\n--------------\n"
    assert caplog.records == []


def test_a_signal_after_the_last_iteration_is_logged_as_complete(caplog, capsys, monkeypatch):
    monkeypatch.setattr(STOP, "received", "SIGTERM")
    report(summary(), Path("runs/a"), multirun=False)
    assert capsys.readouterr().out == RESULT
    assert logged(caplog) == [
        ("train", logging.WARNING, "SIGTERM arrived after the last iteration: the run is complete")]


def test_a_stopped_run_exits_with_its_continue_command(capsys, caplog, hydra_config):
    hydra_config("model=baby", "trainer.resume=null")
    with pytest.raises(SystemExit) as stopped:
        report(summary(stopped_by="SIGINT"), Path("runs/a"), multirun=False)
    message = ("stopped by SIGINT at iteration 20; checkpoint saved to runs/a/ckpt/last.pt. Resume with: "
               "python train.py model=baby trainer.resume=auto hydra.run.dir=runs/a")
    assert stopped.value.code == message
    assert capsys.readouterr().out == RESULT
    assert logged(caplog) == [("train", logging.WARNING, message)]


def test_a_stopped_sweep_job_exits_with_the_sweeps_continue_command(tmp_path, hydra_config):
    hydra_config(f"hydra.sweep.dir={tmp_path}", "optim.lr=1e-3")
    OmegaConf.save({"hydra": {"overrides": {"task": ["optim.lr=1e-3,3e-3"]}}}, tmp_path / "multirun.yaml")
    with pytest.raises(SystemExit) as stopped:
        report(summary(stopped_by="SIGTERM"), tmp_path / "0", multirun=True)
    assert stopped.value.code == (
        f"stopped by SIGTERM at iteration 20; checkpoint saved to {tmp_path / '0' / 'ckpt' / 'last.pt'}. Continue the "
        f"sweep with: python train.py -m optim.lr=1e-3,3e-3 trainer.resume=auto hydra.sweep.dir={tmp_path}")


def test_on_another_rank_report_prints_nothing(monkeypatch, capsys, caplog):
    rank_1_of_2(monkeypatch)
    assert report(summary(stopped_by="SIGINT"), Path("runs/a"), multirun=False) is None
    assert capsys.readouterr() == ("", "") and caplog.records == []
