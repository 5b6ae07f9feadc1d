"""The run record: summary.json, a run's result (or a failed sweep job's reason), written and read here
only; and the command that continues a stopped run or sweep.

A run's summary holds its figures (best_val_loss, iters, tokens_per_sec, ..., stopped_by, sample); a
failed sweep job's holds {"status": "failed", "error": ...}. The file is strict JSON: a non-finite
float (best_val_loss=inf before the first evaluation) is written as null.
"""

from __future__ import annotations

import logging
import re
import shlex
from pathlib import Path
from typing import Optional, Sequence

from omegaconf import OmegaConf

from gpt2.errors import DataError, error_line
from gpt2.files import atomic_write_text, read_json, strict_json
from gpt2.world import World

log = logging.getLogger(__name__)

SUMMARY_FILE = "summary.json"
SWEEP_FILE = "multirun.yaml"  # Hydra's record of a sweep: its command-line overrides among the rest


class RunSummary(dict):
    """What summary.json holds, as a dict (`summary["best_val_loss"]`), with its file's reading and
    writing and what a reader asks of it: `status` and `error`."""

    @classmethod
    def read(cls, run_dir: Path) -> Optional["RunSummary"]:
        """run_dir's summary; None where there is none. A file that is not a JSON object is a
        DataError naming it (each caller decides what a damaged record means to it)."""
        path = Path(run_dir) / SUMMARY_FILE
        there, value = read_json(path)
        if not there:
            return None
        if not isinstance(value, dict):
            raise DataError(f"{path} is not a JSON object (damaged?)")
        return cls(value)

    def write(self, run_dir: Path) -> None:
        atomic_write_text(Path(run_dir) / SUMMARY_FILE, strict_json(self, indent=2) + "\n")

    @classmethod
    def failure(cls, exc: BaseException) -> "RunSummary":
        """A failed job's record: its one-line reason (a user error's line, as the console shows it;
        for a bug, the exception)."""
        return cls(status="failed", error=error_line(exc) or f"{type(exc).__name__}: {exc}")

    @property
    def status(self) -> str:
        """'failed' (a sweep job that did not train), 'stopped' (by a signal, resumable) or 'finished'."""
        if self.get("status") == "failed":
            return "failed"
        return "stopped" if self.get("stopped_by") else "finished"

    @property
    def error(self) -> Optional[str]:
        """A failed job's reason; None for a run that trained."""
        return self.get("error", "failed") if self.status == "failed" else None


def record_failure(job_dir: Path, exc: BaseException) -> None:
    """Log a failed sweep job (with the traceback in train.log when it is not a user error) and mark
    its summary.json failed, so reports list it with its one-line reason."""
    summary = RunSummary.failure(exc)
    if error_line(exc) is not None:
        log.error("%s failed: %s", Path(job_dir).name, summary.error)
    else:
        log.exception("%s failed: %s", Path(job_dir).name, summary.error)
    summary.write(job_dir)


def continue_command(overrides: Sequence[str], run_dir: Path, world: World = World()) -> str:
    """How to continue a stopped run: its command line with trainer.resume=auto and its directory
    (under torchrun its torchrun command; across nodes, the launch command is the user's)."""
    run = shell_override("hydra.run.dir", run_dir)
    if world.several_nodes:
        return f"Resume with the same launch command plus trainer.resume=auto {run}"
    launch = f"torchrun --standalone --nproc_per_node={world.world_size}" if world.enabled else "python"
    return "Resume with: " + " ".join([launch, "train.py", *resumed(overrides), run])


def sweep_continue_command(sweep_dir: Path, overrides: Optional[Sequence[str]] = None, cwd: Path = Path(".")
                           ) -> str:
    """The command that continues a sweep: its command-line overrides (given, or read from the sweep's
    multirun.yaml, which Hydra writes when a sweep starts; a relative sweep_dir is under `cwd`, the
    directory the sweep was started in) with trainer.resume=auto and its directory."""
    sweep = shell_override("hydra.sweep.dir", sweep_dir)
    if overrides is None:
        try:
            overrides = list(OmegaConf.load(Path(cwd) / sweep_dir / SWEEP_FILE).hydra.overrides.task)
        except Exception:  # no record, or a damaged one: say it in words
            return f"the same command with trainer.resume=auto and {sweep}"
    return " ".join(["python train.py -m", *resumed(overrides), sweep])


def resumed(overrides: Sequence[str]) -> list[str]:
    """A command line's overrides, shell-quoted, with its own trainer.resume replaced by auto."""
    return [*(shlex.quote(o) for o in overrides if not o.startswith("trainer.resume=")), "trainer.resume=auto"]


def shell_override(key: str, value: object) -> str:
    """`key=value` as one shell word that Hydra reads back as exactly str(value) (a path), whatever
    characters it holds (spaces, quotes, parentheses, commas, `=`, `$`, non-ASCII): the value in
    Hydra's quotes where it needs them, the whole word in the shell's."""
    return shlex.quote(f"{key}={hydra_value(str(value))}")


def hydra_value(text: str) -> str:
    """`text` as a Hydra override value that parses back to exactly `text`: as it is where it already
    does, else in double quotes, with a quote and the backslashes before a quote or the end escaped
    (Hydra's grammar), and `${` escaped for OmegaConf (no interpolation)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    if "${" not in text:
        try:
            if OverridesParser.create().parse_override(f"k={text}").value() == text:
                return text
        except HydraException:
            pass
    escaped = re.sub(r'(\\*)("|$)', lambda m: m.group(1) * 2 + ("\\" + m.group(2) if m.group(2) else ""), text)
    return '"' + escaped.replace("${", "\\${") + '"'
