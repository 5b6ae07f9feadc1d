"""TensorBoard (logger.backend with tensorboard): the run's metrics rows as scalars and its samples as
text, in event files under run_dir/tensorboard, so `tensorboard --logdir runs` shows every run under
runs/. The `tensorboard` package is an optional extra; without it logger=tensorboard is one line at
start-up.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from typing import Optional, Sequence

from gpt2.errors import ConfigError

TENSORBOARD_DIR = "tensorboard"
SAMPLES_TAG = "samples"
MISSING = "logger=tensorboard needs the tensorboard package: pip install -e '.[tensorboard]'"


def check_tensorboard() -> None:
    """Refuse logger=tensorboard, in one line, where the tensorboard package is not installed."""
    if importlib.util.find_spec("tensorboard") is None:
        raise ConfigError(MISSING)


def sample_markdown(row: dict) -> str:
    """A sample as TensorBoard shows text (Markdown): the prompt and the text as preformatted blocks."""
    def block(text: str) -> str:
        return "\n".join("    " + line for line in text.splitlines()) or "    "

    return f"prompt:\n\n{block(row['prompt'])}\n\ntext:\n\n{block(row['text'])}"


class TensorBoardLog:
    """Each numeric value of a metrics row as the scalar of its key at step row["iter"], each sample as
    `samples` text; flushed after each, as metrics.jsonl is.

    A fresh start clears run_dir/tensorboard (what a run killed before its first checkpoint left). A
    resumed run's events start with TensorBoard's purge_step = resume_from + 1, which hides the points
    (scalars and text) an earlier process logged after the checkpoint (this one logs them again). A resumed run without
    event files (e.g. TensorBoard turned on at the resume) first writes the rows it kept, so
    TensorBoard shows the whole run."""

    def __init__(self, run_dir: Path, resume_from: Optional[int], rows: Sequence[dict] = (),
                 samples: Sequence[dict] = ()):
        check_tensorboard()
        from torch.utils.tensorboard import SummaryWriter

        self.dir = Path(run_dir) / TENSORBOARD_DIR
        if resume_from is None:
            shutil.rmtree(self.dir, ignore_errors=True)
        backfill = not any(self.dir.glob("events.out.tfevents.*"))
        # every file starts with a session start at its purge step (TensorBoard's server ignores the
        # first start it sees, so a fresh run's file needs one for a resume's to count)
        self.writer = SummaryWriter(str(self.dir), purge_step=0 if resume_from is None else resume_from + 1)
        if backfill:
            for row in rows:
                self._scalars(row)
            for row in samples:
                self.writer.add_text(SAMPLES_TAG, sample_markdown(row), global_step=row["iter"])
            self.writer.flush()

    def _scalars(self, row: dict) -> None:
        for key, value in row.items():
            if key != "iter" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(key, value, global_step=row["iter"])

    def log(self, row: dict) -> None:
        self._scalars(row)
        self.writer.flush()

    def log_sample(self, row: dict) -> None:
        self.writer.add_text(SAMPLES_TAG, sample_markdown(row), global_step=row["iter"])
        self.writer.flush()

    def finish(self, summary: dict) -> None:
        self.writer.close()

    def abort(self) -> None:
        self.writer.close()
