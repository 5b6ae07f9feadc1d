"""Report a sweep: a table of its jobs sorted by best val loss, and a PNG of val loss per swept parameter.

Usage: python scripts/sweep_report.py MULTIRUN_DIR [--png PATH]
Works on Hydra multirun directories (jobs 0/, 1/, ...) and Optuna studies (trial_NNN/ folders); the
'overrides' column shows only the parameters whose values differ between jobs.
"""

import argparse
from pathlib import Path

from gpt2.errors import HarnessError, run_script
from gpt2.sweep.report import collect_jobs, format_table, plot_sweep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--png", type=Path, default=None, help="default: SWEEP_DIR/sweep_report.png")
    args = parser.parse_args()
    jobs = collect_jobs(args.sweep_dir)
    if not jobs:
        raise HarnessError(f"no summary.json under {args.sweep_dir}: is it a sweep directory?")
    print(format_table(jobs))
    png = args.png or args.sweep_dir / "sweep_report.png"
    plot_sweep(jobs, png)
    print(f"plot: {png}")


if __name__ == "__main__":
    run_script(main)
