"""gpt2/run/record.py, the run record: summary.json read and written (strict JSON, a damaged file a
DataError naming it), a run's status and a failed job's error, `record_failure`, and the commands that
continue a stopped run (`continue_command`) or sweep (`sweep_continue_command`)."""

import json
import logging
import math
import shlex
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from gpt2.errors import ConfigError, DataError, RunDirError
from gpt2.run.record import RunSummary, continue_command, record_failure, sweep_continue_command
from gpt2.world import World


def refuse_constants(constant):
    raise ValueError(f"non-standard JSON constant {constant}")


# ------------------------------------------------------------------------------------ summary.json
def test_a_run_without_summary_reads_as_none(tmp_path):
    assert RunSummary.read(tmp_path) is None
    (tmp_path / "summary.json").mkdir()  # not a file either
    assert RunSummary.read(tmp_path) is None


@pytest.mark.parametrize("text", ["{\"iters\": 3", "", "[1, 2]", "\"finished\"", "null", "3.5", "\xff\xfe"])
def test_a_damaged_summary_is_a_data_error_naming_the_file(tmp_path, text):
    path = tmp_path / "summary.json"
    path.write_text(text, encoding="latin-1")
    with pytest.raises(DataError) as damaged:
        RunSummary.read(tmp_path)
    assert str(damaged.value) == f"{path} is not a JSON object (damaged?)"


def test_a_summary_is_written_as_indented_json_and_read_back_equal(tmp_path):
    summary = RunSummary(best_val_loss=1.5, iters=20, stopped_by=None, sample="ROMEO:")
    summary.write(tmp_path)
    assert (tmp_path / "summary.json").read_text() == (
        '{\n  "best_val_loss": 1.5,\n  "iters": 20,\n  "stopped_by": null,\n  "sample": "ROMEO:"\n}\n')
    read = RunSummary.read(tmp_path)
    assert type(read) is RunSummary and read == summary


def test_non_finite_figures_are_written_as_null(tmp_path):
    RunSummary(best_val_loss=math.inf, final_val_loss=-math.inf, mfu=math.nan, losses=[1.0, math.nan],
               iters=0).write(tmp_path)
    strict = json.loads((tmp_path / "summary.json").read_text(), parse_constant=refuse_constants)
    assert strict == {"best_val_loss": None, "final_val_loss": None, "mfu": None, "losses": [1.0, None], "iters": 0}
    assert RunSummary.read(tmp_path) == strict


def test_writing_a_summary_replaces_the_previous_one(tmp_path):
    RunSummary(iters=5, stopped_by="SIGTERM").write(tmp_path)
    RunSummary(iters=20, stopped_by=None).write(tmp_path)
    assert RunSummary.read(tmp_path) == {"iters": 20, "stopped_by": None}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # no temporary left


@pytest.mark.parametrize("fields, status, error", [
    ({"best_val_loss": 1.2, "stopped_by": None}, "finished", None),
    ({}, "finished", None),
    ({"stopped_by": "SIGINT"}, "stopped", None),
    ({"stopped_by": "SIGTERM", "status": "ok"}, "stopped", None),
    ({"status": "failed", "error": "model.n_head: must divide n_embd"}, "failed", "model.n_head: must divide n_embd"),
    ({"status": "failed"}, "failed", "failed"),
    ({"status": "failed", "stopped_by": "SIGINT", "error": "x"}, "failed", "x"),
    ({"error": "left from something else"}, "finished", None),
])
def test_the_status_is_failed_stopped_or_finished_and_only_a_failure_has_an_error(fields, status, error):
    summary = RunSummary(fields)
    assert (summary.status, summary.error) == (status, error)


@pytest.mark.parametrize("exc, error", [
    (ConfigError("model.n_head: must divide n_embd"), "model.n_head: must divide n_embd"),
    (RunDirError("runs/a is in use by another run"), "runs/a is in use by another run"),
    (KeyError("n_head"), "KeyError: 'n_head'"),
    (ValueError("bad shape"), "ValueError: bad shape"),
    (RuntimeError(), "RuntimeError: "),
])
def test_a_failure_records_a_user_errors_message_as_is_and_a_bug_with_its_type(exc, error):
    assert RunSummary.failure(exc) == {"status": "failed", "error": error}
    assert RunSummary.failure(exc).error == error


def test_record_failure_of_a_user_error_writes_the_summary_and_logs_one_line(tmp_path, caplog):
    job_dir = tmp_path / "3"
    record_failure(job_dir, ConfigError("data.block_size: must be at least 1, got 0"))
    assert RunSummary.read(job_dir) == {"status": "failed", "error": "data.block_size: must be at least 1, got 0"}
    assert [(r.levelno, r.getMessage(), r.exc_info) for r in caplog.records] == [
        (logging.ERROR, "3 failed: data.block_size: must be at least 1, got 0", None)]


def test_record_failure_of_a_bug_logs_its_traceback(tmp_path, caplog):
    try:
        {}["n_head"]
    except KeyError as exc:
        record_failure(tmp_path, exc)
    assert json.loads((tmp_path / "summary.json").read_text()) == {"status": "failed", "error": "KeyError: 'n_head'"}
    [record] = caplog.records
    assert record.getMessage() == f"{tmp_path.name} failed: KeyError: 'n_head'"
    assert record.exc_info[0] is KeyError


# -------------------------------------------------------------------------------- continue commands
@pytest.mark.parametrize("world, local_world_size, expected", [
    (World(), None, "Resume with: python train.py model=baby optim.lr=6e-4 trainer.resume=auto hydra.run.dir=runs/a"),
    (World(rank=0, local_rank=0, world_size=2), "2",
     "Resume with: torchrun --standalone --nproc_per_node=2 train.py model=baby optim.lr=6e-4 trainer.resume=auto "
     "hydra.run.dir=runs/a"),
    (World(rank=0, local_rank=0, world_size=4), "2",
     "Resume with the same launch command plus trainer.resume=auto hydra.run.dir=runs/a"),
])
def test_continue_command_is_the_runs_launch_with_resume_auto(monkeypatch, world, local_world_size, expected):
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    if local_world_size is not None:
        monkeypatch.setenv("LOCAL_WORLD_SIZE", local_world_size)
    assert continue_command(["model=baby", "optim.lr=6e-4"], Path("runs/a"), world) == expected


def test_continue_command_drops_the_runs_own_resume_and_quotes_values(monkeypatch):
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    overrides = ["trainer.resume=runs/old/ckpt/last.pt", "data.path=~/my corpus.txt", "trainer.resume=null"]
    assert continue_command(overrides, Path("runs/my run")) == (
        "Resume with: python train.py 'data.path=~/my corpus.txt' trainer.resume=auto 'hydra.run.dir=runs/my run'")


def test_sweep_continue_command_from_given_overrides():
    overrides = ["optim.lr=1e-3,3e-3", "trainer.resume=null", "data.path=a b.txt"]
    assert sweep_continue_command(Path("multirun/s 1"), overrides) == (
        "python train.py -m optim.lr=1e-3,3e-3 'data.path=a b.txt' trainer.resume=auto 'hydra.sweep.dir=multirun/s 1'")


def test_sweep_continue_command_reads_the_sweeps_multirun_yaml(tmp_path):
    OmegaConf.save({"hydra": {"overrides": {"task": ["model=baby", "optim.lr=1e-3,3e-3"]}}},
                   tmp_path / "multirun.yaml")
    assert sweep_continue_command(tmp_path) == (
        f"python train.py -m model=baby optim.lr=1e-3,3e-3 trainer.resume=auto hydra.sweep.dir={tmp_path}")


def test_a_relative_sweep_dir_is_read_under_the_directory_the_sweep_started_in(tmp_path, monkeypatch):
    """hydra.job.chdir=true runs a job in its own directory: the sweep's record is still found."""
    (tmp_path / "multirun" / "s").mkdir(parents=True)
    OmegaConf.save({"hydra": {"overrides": {"task": ["optim.lr=1e-3,3e-3"]}}}, tmp_path / "multirun" / "s" / "multirun.yaml")
    monkeypatch.chdir(tmp_path / "multirun" / "s")  # where the job runs
    assert sweep_continue_command(Path("multirun/s"), cwd=tmp_path) == (
        "python train.py -m optim.lr=1e-3,3e-3 trainer.resume=auto hydra.sweep.dir=multirun/s")


@pytest.mark.parametrize("text", [None, "hydra: [unclosed\n", "hydra: 3\n", "- a\n- b\n", "hydra:\n  mode: MULTIRUN\n"])
def test_without_a_readable_multirun_yaml_the_sweep_command_is_a_sentence(tmp_path, text):
    if text is not None:
        (tmp_path / "multirun.yaml").write_text(text)
    assert sweep_continue_command(tmp_path) == (
        f"the same command with trainer.resume=auto and hydra.sweep.dir={tmp_path}")


# One directory name per kind of character that a shell or Hydra's override grammar reads specially.
AWKWARD = {"non-ASCII": "rün ünïcødé ✓", "parentheses": "a (1)", "comma": "a,b", "equals": "k=v", "quote": "it's",
           "double quote": 'say "hi"', "space": "my run", "dollar": "$HOME x", "interpolation": "${oc.env:HOME}",
           "backslash": "back\\slash", "trailing backslash": "end\\", "backslash quote": 'q\\"', "tab": "a\tb",
           "tilde": "~a", "brackets": "[x]", "braces": "{y}", "colon": "a:b", "glob": "*?|%@!#&;<>", "number": "1",
           "null": "null", "bool": "true", "newline": "two\nlines"}


def awkward_paths():
    for kind, name in AWKWARD.items():
        yield pytest.param(Path("runs") / name, id=kind)
        yield pytest.param(Path(name), id=f"{kind}, alone")


def read_back(command: str, key: str) -> str:
    """The value of `key` that Hydra composes from a printed command line pasted into a shell."""
    words = shlex.split(command)
    [override] = [w for w in words if w.startswith(f"{key}=")]
    value = OverridesParser.create().parse_overrides([override])[0].value()
    return OmegaConf.create({"value": value}).value  # as Hydra's config resolves it


@pytest.mark.parametrize("path", list(awkward_paths()))
def test_the_printed_commands_give_hydra_back_exactly_the_directory(monkeypatch, path):
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    overrides = ["model=baby", 'data.path="~/my corpus.txt"']
    resume = continue_command(overrides, path).removeprefix("Resume with: ")
    assert read_back(resume, "hydra.run.dir") == str(path)
    assert shlex.split(resume)[2:4] == overrides  # the run's own overrides, as it was given them
    assert read_back(sweep_continue_command(path, overrides), "hydra.sweep.dir") == str(path)
    assert read_back(sweep_continue_command(path / "none"), "hydra.sweep.dir") == str(path / "none")
    several_nodes = continue_command(overrides, path, World(world_size=4))
    assert read_back(several_nodes.removeprefix("Resume with the same launch command plus "), "hydra.run.dir") == str(path)
