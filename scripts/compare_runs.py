"""Several runs' validation losses side by side, against iterations and against training time, in
one PNG; and a table of the iterations and time each took to reach a target loss.

Usage: python scripts/compare_runs.py RUN_DIR [RUN_DIR ...] --out curves.png [--labels A,B,...]
           [--target 1.8857]

Training time at a row is summed from the rows' own speed (tokens/s over the iterations since the
row before), so evaluations and start-up are left out and runs on one machine compare step for step.
Prints a Markdown table: run, iterations, best val loss, and the first evaluation at or below
--target (its iteration and training time), '-' where the run never reached it.
"""

from __future__ import annotations

from pathlib import Path

from gpt2.errors import ConfigError, DataError
from gpt2.run.logger import read_metrics
from gpt2.run.record import RunSummary
from gpt2.run.script import add_force_option, check_output, finite_float, nonempty_path, run_script, script_parser


def curve(run_dir: Path) -> list[tuple[int, float, float]]:
    """(iteration, training seconds so far, val loss) at each evaluation."""
    summary = RunSummary.read(run_dir)
    if summary is None or not summary.get("iters"):
        raise DataError(f"{run_dir}: no summary.json with iterations: give the directory of a finished run")
    tokens_per_iter = summary["tokens_seen"] / max(1, summary["iters"])
    points, seconds, last = [], 0.0, 0
    for row in read_metrics(run_dir, fix="repair or delete the line"):
        if row.get("tokens_per_sec"):
            seconds += (row["iter"] - last) * tokens_per_iter / row["tokens_per_sec"]
            last = row["iter"]
        if row.get("val_loss") is not None:
            points.append((row["iter"], seconds, row["val_loss"]))
    if not points:
        raise DataError(f"{run_dir}: its metrics.jsonl holds no evaluation (no val_loss): nothing to draw")
    return points


def build_parser():
    parser = script_parser(__doc__)
    parser.add_argument("runs", nargs="+", type=nonempty_path)
    parser.add_argument("--out", type=nonempty_path, required=True)
    add_force_option(parser)
    parser.add_argument("--labels", default=None)
    parser.add_argument("--target", type=finite_float, default=None)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    check_output(args.out, "--out", args.force)
    labels = args.labels.split(",") if args.labels else [str(r) for r in args.runs]
    if len(labels) != len(args.runs):
        raise ConfigError(f"--labels: {len(labels)} labels for {len(args.runs)} runs")
    curves = [curve(r) for r in args.runs]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (by_iter, by_time) = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for label, points in zip(labels, curves):
        iters, seconds, losses = zip(*points)
        by_iter.plot(iters, losses, "o-", markersize=3, label=label)
        by_time.plot(seconds, losses, "o-", markersize=3, label=label)
    for ax, xlabel in ((by_iter, "iteration"), (by_time, "training time (s)")):
        if args.target is not None:
            ax.axhline(args.target, color="grey", linestyle="--", linewidth=1)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    by_iter.set_ylabel("validation loss")
    by_iter.set_ylim(top=min(3.0, max(p[2] for c in curves for p in c)))
    by_time.legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    print("| run | iterations | best val loss | first eval at or below target: iteration | training time |")
    print("| --- | --- | --- | --- | --- |")
    for label, points in zip(labels, curves):
        hit = next((p for p in points if args.target is not None and p[2] <= args.target), None)
        reached = f"{hit[0]} | {hit[1]:.1f} s" if hit else "- | -"
        print(f"| {label} | {points[-1][0]} | {min(p[2] for p in points):.4f} | {reached} |")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    run_script(main)
