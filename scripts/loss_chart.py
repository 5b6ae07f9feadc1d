"""A run's loss curve as a Mermaid chart, for a README or any Markdown page that renders Mermaid
(GitHub does): docs/results.md's reproduction table shows its runs this way. Each run also writes the
same curves as loss.png beside its metrics.jsonl.

Usage: python scripts/loss_chart.py RUN_DIR [--title TEXT] [--metric val_loss]

Prints a ```mermaid block: --metric (default val_loss; val_bpb, train_loss, ...) at each iteration
metrics.jsonl has it, against the iteration.
"""

from __future__ import annotations

import math
from pathlib import Path

from gpt2.errors import DataError
from gpt2.run.logger import METRICS_FILE, read_metrics
from gpt2.run.script import nonempty_path, run_script, script_parser


def points(run_dir: Path, metric: str) -> list[tuple[int, float]]:
    path = run_dir / METRICS_FILE
    if not path.is_file():
        raise DataError(f"{path}: there is no such file: give a run directory")
    found = {}
    for row in read_metrics(run_dir, fix="repair or delete the line"):  # a last line cut short (a live run) is left out
        value = row.get(metric)
        if isinstance(value, (int, float)) and math.isfinite(value):
            found[row["iter"]] = float(value)  # a resumed run's repeated iteration: the last
    if not found:
        raise DataError(f"{path} has no {metric!r} values")
    return sorted(found.items())


def mermaid(curve: list[tuple[int, float]], metric: str, title: str) -> str:
    values = [v for _, v in curve]
    low, high = math.floor(min(values) * 10) / 10, math.ceil(max(values) * 10) / 10
    return "\n".join([
        "```mermaid",
        "xychart-beta",
        f'    title "{title}"',
        f'    x-axis "iteration" [{", ".join(str(i) for i, _ in curve)}]',
        f'    y-axis "{metric}" {low} --> {high}',
        f'    line [{", ".join(f"{v:.4f}" for v in values)}]',
        "```",
    ])


def build_parser():
    parser = script_parser(__doc__)
    parser.add_argument("run_dir", type=nonempty_path)
    parser.add_argument("--metric", default="val_loss")
    parser.add_argument("--title", default=None, help="default: the run directory's name")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    title = (args.title or args.run_dir.resolve().name).replace('"', "'")
    print(mermaid(points(args.run_dir, args.metric), args.metric, title))


if __name__ == "__main__":
    run_script(main)
