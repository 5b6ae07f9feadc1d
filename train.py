"""Train a GPT-2 model: `python train.py [group=option ...] [key=value ...]`; `--help` lists the groups.

`-m` runs a sweep (every combination of comma-separated values, or `hparams_search=NAME` for an Optuna
study); each job gets its own directory and W&B run, grouped under the sweep's name.
"""

import logging
import math
import shlex
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from gpt2.config import from_hydra, register_configs
from gpt2.errors import HarnessError
from gpt2.sweep.report import sweep_group, write_failure
from gpt2.sweep.study import run_study, study_fixed_overrides
from gpt2.trainer import Trainer, train

log = logging.getLogger("train")
register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    sweep_name = sweep_group(hc.sweep.dir) if multirun else run_dir.name
    try:
        config = from_hydra(cfg)
        search = config.hparams_search
        if search is not None:  # the trials' W&B runs are grouped under the study's name
            # a stored study continues under the search's own name; an in-memory one is this sweep
            search.study_name = search.study_name or (
                hc.runtime.choices.get("hparams_search") if search.storage else sweep_name)
        elif multirun and cfg.logger.group is None:  # the W&B runs of one sweep share a group
            cfg.logger.group = config.logger.group = sweep_name
        if search is not None:
            (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
            return study(cfg, search, run_dir, hc)
        trainer = Trainer(config, run_dir)  # a resume that does not fit is refused before any write
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        summary = trainer.fit()
    except Exception as exc:
        if multirun:  # report it and keep the other jobs going
            write_failure(run_dir, exc)
            return math.inf
        if not isinstance(exc, HarnessError):
            raise  # a bug: show the traceback
        log.error("%s", exc)  # one line, on the console and in train.log
        sys.exit(1)
    print(f"best val loss {summary['best_val_loss']:.4f} after {summary['iters']} iterations "
          f"({summary['tokens_per_sec']:.0f} tokens/s, {summary['wall_s']:.1f} s); run dir: {run_dir}")
    if summary["sample"]:
        print(f"--- sample ---\n{summary['sample']}\n--------------")
    if summary["stopped_by"]:
        message = (f"stopped by {summary['stopped_by']} at iteration {summary['iters']}; checkpoint saved "
                   f"to {run_dir / 'ckpt' / 'last.pt'}. Resume with: {resume_command(run_dir)}")
        log.warning("%s", message)
        sys.exit(message)
    return summary["best_val_loss"]


def study(cfg: DictConfig, search, run_dir: Path, hc) -> float:
    fixed = study_fixed_overrides(cfg, list(hc.overrides.task))
    result = run_study(cfg, search, run_dir, train, from_hydra, fixed)
    if result["stopped_by"]:
        message = (f"study {search.study_name!r} stopped by {result['stopped_by']}; rerun the same command "
                   f"to continue it" + ("" if search.storage else " (set hparams_search.storage to keep a study)"))
        log.warning("%s", message)
        sys.exit(message)
    return result["best_val_loss"]


def resume_command(run_dir: Path) -> str:
    """This run's command line with trainer.resume=auto and its run directory."""
    overrides = [o for o in HydraConfig.get().overrides.task if not o.startswith("trainer.resume=")]
    return " ".join(["python train.py", *map(shlex.quote, overrides), "trainer.resume=auto",
                     shlex.quote(f"hydra.run.dir={run_dir}")])


if __name__ == "__main__":
    main()
