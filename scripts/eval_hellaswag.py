"""HellaSwag accuracy of a model (completion-style scoring, as build-nanogpt's hellaswag.py).

Usage: python scripts/eval_hellaswag.py RUN_DIR | CHECKPOINT | HF_FOLDER [--data FILE] [--limit N]
           [--device auto] [--data-dir data] [--mirror DIR] [--threads N]

Without --data it scores rowanz/hellaswag's validation file (data/hellaswag_val.jsonl, 10,042
examples), fetched into --data-dir as hellaswag/hellaswag_val.jsonl like every download: from --mirror
(default: $GPT2_DATA_MIRROR) or the network, verified by its git blob id. OpenAI's GPT-2 124M scores
acc_norm 0.2955 on it. Prints acc (lowest summed loss of the ending) and acc_norm (lowest mean loss
per ending token).
"""

from __future__ import annotations

from gpt2.run.script import script_parser, stop_on_ctrl_c

if __name__ == "__main__":  # not when a test imports the script
    stop_on_ctrl_c()  # before the slow imports: a Ctrl-C while torch loads is one line too

import argparse  # noqa: E402
import time  # noqa: E402
from collections import deque  # noqa: E402
from itertools import islice  # noqa: E402
from pathlib import Path  # noqa: E402

from gpt2.eval.inference import load_for_inference  # noqa: E402
from gpt2.run.script import (add_device_options, apply_device_options, check_input_file,  # noqa: E402
                             nonempty_path, nonempty_str, nonnegative_int, run_script)
from gpt2.train.hellaswag import evaluate_file, fetch_file, read_examples  # noqa: E402
from gpt2.train.runtime import resolve_device  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    """Every value is checked as the flags are read: '--limit: must be >= 0, got -1'."""
    parser = script_parser(__doc__)
    parser.add_argument("model", type=nonempty_str,
                        help="a run directory, a checkpoint file or a Hugging Face GPT-2 folder")
    parser.add_argument("--data", type=nonempty_path, default=None, help="a file in hellaswag_val.jsonl's format "
                        "(default: hellaswag_val.jsonl, fetched into --data-dir)")
    parser.add_argument("--limit", type=nonnegative_int, default=0, help="score only the first N examples (0: all)")
    parser.add_argument("--data-dir", type=nonempty_str, default="data", help="where downloads are kept: the GPT-2 "
                        "BPE files, hellaswag/hellaswag_val.jsonl (as data.data_dir)")
    parser.add_argument("--mirror", type=nonempty_str, default=None,
                        help="offline copy of the downloads (default: $GPT2_DATA_MIRROR)")
    add_device_options(parser)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    apply_device_options(args)
    # the data first: a missing file, or a line that is not an example, is said before the model is loaded
    data = check_input_file(args.data, "--data") if args.data else fetch_file(args.data_dir, args.mirror,
                                                                             mirror_option="--mirror")
    deque(islice(read_examples(data), args.limit or None), maxlen=0)  # each line checked, the first --limit
    device = resolve_device(args.device)
    model, encoder = load_for_inference(Path(args.model), device, args.data_dir, args.mirror)
    start = time.perf_counter()
    score = evaluate_file(model, encoder, data, device, args.limit)
    print(f"HellaSwag {data}: {score.examples} examples, acc {score.acc:.4f}, acc_norm {score.acc_norm:.4f} "
          f"({time.perf_counter() - start:.1f} s on {device})")


if __name__ == "__main__":
    run_script(main)
