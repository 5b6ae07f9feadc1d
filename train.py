"""Train a GPT-2 model: `python train.py [group=option ...] [key=value ...]`; `--help` lists the groups.

`-m` runs a sweep (every combination of comma-separated values, or `hparams_search=NAME` for an Optuna
study); each job gets its own directory and W&B run, grouped under the sweep's name.
"""

from gpt2.signals import STOP, Interrupted

STOP.install()  # from here on, Ctrl-C or SIGTERM ends in one line, during the slow imports below too

import logging  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.types import RunMode  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from gpt2.config import from_hydra  # noqa: E402
from gpt2.errors import RunDirError  # noqa: E402
from gpt2.run.cli import fail, log_to_file, quiet_other_ranks, report, run_entry, save_run_files  # noqa: E402
from gpt2.run.compose import register_configs  # noqa: E402
from gpt2.run.record import record_failure  # noqa: E402
from gpt2.run.rundir import RunDirLock, RunDirTaken  # noqa: E402
from gpt2.sweep.report import sweep_group  # noqa: E402
from gpt2.sweep.study import run_study, study_fixed_overrides  # noqa: E402
from gpt2.train.checkpoint import run_checkpoints  # noqa: E402
from gpt2.train.trainer import train  # noqa: E402

log = logging.getLogger("train")
register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    quiet_other_ranks()
    STOP.starting()  # a signal from here ends the run at once, until it has trained
    if STOP.received:  # a signal during the end of the previous sweep job: the sweep stops here
        raise Interrupted(STOP.received, STOP.context)
    started = []
    try:
        config = from_hydra(cfg)
        if config.hparams_search is not None:
            return study(cfg, config.hparams_search, run_dir, hc)
        if multirun and cfg.logger.group is None:  # the W&B runs of one sweep share a group
            cfg.logger.group = config.logger.group = sweep_group(hc.sweep.dir)
        summary = train(config, run_dir, on_start=lambda: started.append(save_run_files(cfg, run_dir)))
    except Exception as exc:
        # a run not accepted in a directory holding one (e.g. a continued sweep with other settings)
        refused = not started and run_checkpoints(run_dir)
        if not multirun or isinstance(exc, RunDirError) or refused or cfg.get("hparams_search") is not None:
            fail(exc, run_dir)
        # a failed sweep job: record it and keep the other jobs going
        save_run_files(cfg, run_dir)
        record_failure(run_dir, exc)
        return math.inf
    report(summary, run_dir, multirun)
    return summary["best_val_loss"]


def study(cfg: DictConfig, search, run_dir: Path, hc) -> float:
    # a stored study continues under the search's own name; an in-memory one is this sweep
    search.study_name = search.study_name or (
        hc.runtime.choices.get("hparams_search") if search.storage else sweep_group(hc.sweep.dir))
    STOP.context = f"during study {search.study_name!r}: rerun the same command to continue it"
    with RunDirLock(run_dir):
        refuse_foreign_study(run_dir, search.storage)
        save_run_files(cfg, run_dir)
        fixed = study_fixed_overrides(cfg, list(hc.overrides.task))
        result = run_study(cfg, search, run_dir, train, from_hydra, fixed)
    if result["stopped_by"]:
        message = (f"study {search.study_name!r} stopped by {result['stopped_by']}; rerun the same command "
                   f"to continue it" + ("" if search.storage else " (set hparams_search.storage to keep a study)"))
        log_to_file(logging.WARNING, message)
        sys.exit(message)  # on the console once: stderr
    return result["best_val_loss"]


def refuse_foreign_study(run_dir: Path, storage) -> None:
    """A study's directory holds nothing but that study: no run, and no trials unless they come from
    its storage (an in-memory study numbers its trials from 0 again)."""
    if run_checkpoints(run_dir) or (storage is None and any(run_dir.glob("trial_*"))):
        raise RunDirTaken(f"{run_dir} already holds a run or another study's trials: use another "
                          f"hydra.sweep.dir" + ("" if storage else " (or hparams_search.storage to continue a study)"))


if __name__ == "__main__":
    run_entry(main)
