"""Report a sweep: a table of its jobs sorted by best val loss, and a PNG of val loss per swept parameter.

Usage: python scripts/sweep_report.py MULTIRUN_DIR [--png PATH]
Works on Hydra multirun directories (jobs 0/, 1/, ...) and Optuna studies (trial_NNN/ folders); the
'overrides' column shows only the parameters whose values differ between jobs. A stored study continued
in other multirun directories is reported whole (its storage records every trial's directory; each trial
once). A job whose summary.json is damaged is left out with a warning on stderr; the others are still
reported. The PNG draws a key log-scaled when the study drew it so (`log: true`) or its values span a
decade or more, and whole-number keys with whole-number ticks.
"""

import logging

from gpt2.errors import HarnessError
from gpt2.run.script import nonempty_path, run_script, script_parser
from gpt2.sweep.report import collect_jobs, format_table, plot_sweep


def build_parser():
    parser = script_parser(__doc__)
    parser.add_argument("sweep_dir", type=nonempty_path)
    parser.add_argument("--png", type=nonempty_path, default=None, help="default: SWEEP_DIR/sweep_report.png")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(format="warning: %(message)s", level=logging.WARNING)  # damaged jobs' files
    if not args.sweep_dir.is_dir():
        state = "is not a directory" if args.sweep_dir.exists() else "does not exist"
        raise HarnessError(f"{args.sweep_dir} {state}: give the sweep's multirun (or Optuna study) directory")
    png = args.png or args.sweep_dir / "sweep_report.png"
    if png.suffix.lower() != ".png" or png.is_dir() or not png.parent.is_dir():
        raise HarnessError(f"--png {png}: give a .png file path in an existing directory")
    jobs = collect_jobs(args.sweep_dir)
    if not jobs:
        raise HarnessError(f"no summary.json under {args.sweep_dir}: is it a sweep directory?")
    print(format_table(jobs))
    plot_sweep(jobs, png)  # any other OSError (a read-only disk...) is one line too, from run_script
    print(f"plot: {png}")


if __name__ == "__main__":
    run_script(main)
