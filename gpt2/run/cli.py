"""train.py's command line around Hydra: every error a user can cause ends in one line and exit 1.

Hydra prints its own errors (a composition error, a run directory it cannot create) as several lines
or a shortened traceback; `run_entry` asks Hydra to raise them instead (HYDRA_FULL_ERROR, unless the
user set it) and prints one line. `--help` hides the internal `schema` group, `--cfg` validates the
config as a run does, and the run's files that Hydra would write before the run owns its directory
(`.hydra/`, or the user's hydra.output_subdir) are written by `save_run_files` once it does: Hydra is
told to write none (`NO_HYDRA_FILES`), whatever the config says. `fail` and `report` end a run on the
console: one line for an error, the result, and for a stopped run the command that continues it. An
error's line goes to stderr by print, whatever the logging config (hydra/job_logging=disabled), and
to train.log by logging; under torchrun once, by rank 0 (`said_by`).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
from pathlib import Path
from typing import Callable, Optional

from omegaconf import DictConfig, OmegaConf

from gpt2.config import EMPTY_PATH, from_hydra
from gpt2.run.compose import compose, hydra_error_line
from gpt2.errors import (CheckpointError, ConfigError, DataError, NonFiniteLossError, PeerFailed, RunDirError,
                         error_line)
from gpt2.files import atomic_write_text
from gpt2.run.record import RunSummary, continue_command, sweep_continue_command
from gpt2.signals import STOP
from gpt2.world import World

log = logging.getLogger("train")

CFG_FLAGS = ("--cfg", "-c")
INFO_FLAGS = ("--help", "-h", "--hydra-help", "--version", "--cfg", "-c", "--info", "-i", "--shell-completion", "-sc")
NO_HYDRA_FILES = "++hydra.output_subdir=null"  # appended to a run's command line: Hydra writes no files
ALIKE = (ConfigError, DataError, CheckpointError, RunDirError, NonFiniteLossError, PeerFailed)  # on every rank
FLAGS_WITH_VALUE = ("--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
                    "--config-dir", "-cd", "--experimental-rerun", "--info", "-i")


def quiet_other_ranks() -> None:
    """Under torchrun, only rank 0 logs (to the console and train.log); the others log warnings and
    errors to the console only."""
    if World.from_env().is_main:
        return
    root = logging.getLogger()
    for handler in root.handlers[:]:
        if isinstance(handler, logging.FileHandler):
            root.removeHandler(handler)
    root.setLevel(logging.WARNING)


def save_run_files(cfg: DictConfig, run_dir: Path) -> None:
    """config.yaml (resolved) and Hydra's {config,hydra,overrides}.yaml in `.hydra/` (or the user's
    hydra.output_subdir), written atomically once the run owns its directory: Hydra writes none itself
    (`NO_HYDRA_FILES`), since a refused second run would replace the first one's."""
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.instance().cfg
    atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    subdir = run_files_subdir(hc.hydra) if hc is not None else None
    if subdir is not None:
        for name, node in (("config", cfg), ("hydra", hc), ("overrides", hc.hydra.overrides.task)):
            atomic_write_text(run_dir / subdir / f"{name}.yaml", OmegaConf.to_yaml(node))


def run_files_subdir(hydra_cfg: DictConfig) -> Optional[str]:
    """Where a run's Hydra files go: the hydra.output_subdir of the command line (null: nowhere), else
    the config's, else `.hydra` (conf/config.yaml's null means "train.py writes them")."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    chosen = [o for o in hydra_cfg.overrides.hydra
              if o != NO_HYDRA_FILES and o.lstrip("+").startswith("hydra.output_subdir=")]
    if chosen:
        value = OverridesParser.create().parse_override(chosen[-1].lstrip("+")).value()
        return None if value is None else str(value)
    return hydra_cfg.output_subdir or ".hydra"


def hydra_writes_nothing(argv: list[str]) -> list[str]:
    """The command line Hydra runs: a run's or sweep's with NO_HYDRA_FILES after the user's overrides,
    so that Hydra writes no file into the run directory before the run owns it (save_run_files does)."""
    return argv if any(flag in argv for flag in INFO_FLAGS) else [*argv, NO_HYDRA_FILES]


def refuse_empty_dirs(argv: list[str]) -> None:
    """`hydra.run.dir=` (an unset variable) would make the current directory the run directory."""
    for override in overrides_of(argv):
        key, sep, value = override.lstrip("+").partition("=")
        if key in ("hydra.run.dir", "hydra.sweep.dir") and value.strip().strip("'\"").strip() == "":
            raise ConfigError(f"{key}: {EMPTY_PATH}")


def overrides_of(argv: list[str]) -> list[str]:
    """The key=value overrides on a Hydra command line (its flags and their values left out)."""
    found, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in FLAGS_WITH_VALUE:
            skip = True
        elif not arg.startswith("-"):
            found.append(arg)
    return found


def explain(exc: BaseException, argv: list[str]) -> Optional[str]:
    """The one line for an error before or around the run, naming the override it comes from."""
    line = hydra_error_line(exc) or error_line(exc)
    if isinstance(exc, ValueError) and str(exc).startswith("Only one of --run, --multirun"):
        line = str(exc)  # Hydra's own check of its flags
    if line is not None and isinstance(exc, OSError) and exc.filename is not None:
        matches = []  # the override whose path holds the file, e.g. hydra.run.dir=... that is a file
        for override in overrides_of(argv):
            key, _, value = override.partition("=")
            path = os.path.abspath(os.path.expanduser(value)) if value else None
            if path and (str(exc.filename) == path or str(exc.filename).startswith(path + os.sep)):
                matches.append((len(path), override))
        if matches:
            return f"{max(matches)[1]}: {line}"
    return line


def show_help(main: Callable[[], None]) -> None:
    """Hydra's --help without the `schema` group (the schemas the group options extend)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            main()
        except SystemExit as exc:
            if exc.code not in (0, None):
                raise
    print("".join(line for line in out.getvalue().splitlines(keepends=True) if not line.startswith("schema:")),
          end="")


def run_entry(main: Callable[[], None]) -> None:
    """Run the Hydra app `main` with one-line errors (a bug still shows its traceback)."""
    argv = sys.argv[1:]
    ours = "HYDRA_FULL_ERROR" not in os.environ
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")  # Hydra raises instead of printing
    try:
        if World.from_env().enabled and {"-m", "--multirun"} & set(argv):
            raise ConfigError("a sweep (-m) under torchrun is not supported: run the sweep's jobs with "
                              "hydra/launcher=submitit_slurm (or submitit_local), each job one process")
        if "--help" in argv or "-h" in argv:
            return show_help(main)
        if any(flag in argv for flag in CFG_FLAGS) and not {"-m", "--multirun"} & set(argv):
            from_hydra(compose(*overrides_of(argv)))  # validate as a run would, then let Hydra print
        refuse_empty_dirs(argv)
        sys.argv = [sys.argv[0], *hydra_writes_nothing(argv)]
        main()
    except Exception as exc:
        line = explain(exc, argv)
        if line is None or not ours:
            raise
        said = said_by(World.from_env(), exc, line, before_run=True)
        if said is not None:
            print(f"error: {said}", file=sys.stderr)
        sys.exit(1)
    finally:
        sys.argv = [sys.argv[0], *argv]
        if ours:  # as it was (a test calling run_entry leaves no HYDRA_FULL_ERROR to the processes it starts)
            os.environ.pop("HYDRA_FULL_ERROR", None)


def said_by(world: World, exc: BaseException, line: str, before_run: bool = False) -> Optional[str]:
    """The line this process prints for a user error, or None: under torchrun rank 0 says an error
    every rank meets alike (config, data, directory, NaN; and before the run, Hydra's composition and
    the run directory), a peer's failure is the failing process's to say, and another rank prefixes
    an error of its own with its rank. Before the run an OS error (a node's own disk) is said by the
    first process of each other node."""
    if world.is_main:
        return line
    if before_run:  # the same config and directory on every rank; only an OS error may be a node's own
        own = isinstance(exc, OSError) and hydra_error_line(exc) is None and world.leads_another_node
    else:
        own = not isinstance(exc, ALIKE)
    return f"rank {world.rank}: {line}" if own else None


def fail(exc: Exception, run_dir: Path) -> None:
    """One line on stderr (and in train.log, unless the directory is another run's), exit 1; a bug keeps
    its traceback. Printed, not logged to the console: it shows whatever the logging config."""
    line = error_line(exc)
    if line is None:
        raise exc
    line = said_by(World.from_env(), exc, line)
    if line is None:
        sys.exit(1)
    if isinstance(exc, RunDirError):  # do not write into the other run's train.log
        for handler in logging.getLogger().handlers[:]:
            if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).parent == run_dir:
                logging.getLogger().removeHandler(handler)
    log_to_file(logging.ERROR, line)
    print(line, file=sys.stderr)
    sys.exit(1)


def report(summary: RunSummary, run_dir: Path, multirun: bool) -> None:
    """Print a run's result; a stopped run exits 1 with the line that continues it. Under torchrun
    rank 0 does; the other ranks end quietly with status 0, so that torchrun does not end rank 0
    before it has said it."""
    if not World.from_env().is_main:
        return
    print(f"best val loss {summary['best_val_loss']:.4f} after {summary['iters']} iterations "
          f"({summary['tokens_per_sec']:.0f} tokens/s, {summary['wall_s']:.1f} s); run dir: {run_dir}")
    if summary["sample"]:
        print(f"--- sample ---\n{summary['sample']}\n--------------")
    if summary.status == "stopped":
        message = (f"stopped by {summary['stopped_by']} at iteration {summary['iters']}; checkpoint saved "
                   f"to {run_dir / 'ckpt' / 'last.pt'}. " + continue_hint(run_dir, multirun))
        log_to_file(logging.WARNING, message)
        sys.exit(message)  # on the console once: stderr
    if STOP.received and not multirun:
        log.warning("%s arrived after the last iteration: the run is complete", STOP.received)


def log_to_file(level: int, message: str) -> None:
    """Log a line to train.log only, for a line the console gets otherwise (not twice on a terminal;
    with no handler left, logging's last resort would print it on stderr: a NullHandler stands in)."""
    root, nothing = logging.getLogger(), logging.NullHandler()
    consoles = [h for h in root.handlers if isinstance(h, logging.StreamHandler)
                and not isinstance(h, logging.FileHandler) and h.stream in (sys.stdout, sys.stderr)]
    for handler in consoles:
        root.removeHandler(handler)
    root.addHandler(nothing)
    try:
        log.log(level, "%s", message)
    finally:
        root.removeHandler(nothing)
        for handler in consoles:
            root.addHandler(handler)


def continue_hint(run_dir: Path, multirun: bool) -> str:
    """How to continue: this run's (or sweep's) command line with trainer.resume=auto and its directory."""
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    if multirun:  # hydra.job.chdir=true runs the job elsewhere: the sweep dir is the start directory's
        return f"Continue the sweep with: {sweep_continue_command(Path(hc.sweep.dir), cwd=Path(hc.runtime.cwd))}"
    return continue_command(hc.overrides.task, run_dir, World.from_env())
