"""This process's place among torchrun's processes, read from the variables torchrun sets (RANK,
LOCAL_RANK, WORLD_SIZE); a plain `python train.py` is rank 0 of 1.

A ground helper: the command line (who prints), the run directory (its default name) and training
all ask it. The collectives themselves live in gpt2/train/distributed.py (`Dist` extends `World`).
Standard library only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class World:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @classmethod
    def from_env(cls):
        return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)),
                   int(os.environ.get("WORLD_SIZE", 1)))

    @property
    def enabled(self) -> bool:
        """Several processes (under torchrun)."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes the run's files and talks to W&B."""
        return self.rank == 0

    @property
    def several_nodes(self) -> bool:
        """The processes span more than this machine (torchrun's LOCAL_WORLD_SIZE is a node's share)."""
        return self.enabled and os.environ.get("LOCAL_WORLD_SIZE") != str(self.world_size)

    @property
    def leads_another_node(self) -> bool:
        """The first process (local rank 0) of a node other than rank 0's (torchrun's GROUP_RANK is
        the node's rank)."""
        return self.enabled and self.local_rank == 0 and os.environ.get("GROUP_RANK", "0") != "0"

    @staticmethod
    def run_id() -> str | None:
        """The id every process of one torchrun launch shares (`--standalone` draws one per launch;
        multi-node launches pass `--rdzv_id`); None outside torchrun."""
        run_id = os.environ.get("TORCHELASTIC_RUN_ID", "none")
        return None if run_id == "none" else run_id
