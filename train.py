"""Train a GPT-2 model: `python train.py [group=option ...] [key=value ...]`; `--help` lists the groups."""

import logging
import shlex
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from gpt2.config import from_hydra, register_configs
from gpt2.errors import HarnessError
from gpt2.trainer import train

log = logging.getLogger("train")
register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        config = from_hydra(cfg)
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        summary = train(config, run_dir)
    except HarnessError as exc:
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


def resume_command(run_dir: Path) -> str:
    """This run's command line with trainer.resume=auto and its run directory."""
    overrides = [o for o in HydraConfig.get().overrides.task if not o.startswith("trainer.resume=")]
    return " ".join(["python train.py", *map(shlex.quote, overrides), "trainer.resume=auto",
                     shlex.quote(f"hydra.run.dir={run_dir}")])


if __name__ == "__main__":
    main()
