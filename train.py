"""Train a GPT-2 model: `python train.py [group=option ...] [key=value ...]`; `--help` lists the groups."""

import logging
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
        sys.exit(f"stopped by {summary['stopped_by']} at iteration {summary['iters']}; "
                 f"checkpoint saved to {run_dir / 'ckpt' / 'last.pt'}")
    return summary["best_val_loss"]


if __name__ == "__main__":
    main()
