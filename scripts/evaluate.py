"""The validation loss and bits per byte of a model, without training.

Usage: python scripts/evaluate.py MODEL [data overrides] [--batches N] [--out FILE] [--device auto]
           [--dtype D] [--threads N]

MODEL: a run directory (its ckpt/best.pt, else ckpt/last.pt), a checkpoint of ours, a nanoGPT ckpt.pt,
a Hugging Face GPT-2 folder, or gpt2 / gpt2-medium / ... (OpenAI's, from the Hub). The data is the
model's own run's (our checkpoints record it; else the default data), changed by Hydra-style data
overrides as train.py takes them:

    python scripts/evaluate.py runs/char                                  # its run's validation split
    python scripts/evaluate.py runs/char data.path=other.txt              # another char text
    python scripts/evaluate.py gpt2 data=bin data.dir=data/owt --batches 200
    python scripts/evaluate.py out/ckpt.pt data=shakespeare_char data.block_size=64   # nanoGPT's

--batches N scores the first N fixed validation batches (the trainer's with trainer.eval_iters=N, so a
checkpoint gets the val loss its run logged); without it, every validation token once. Prints one
line on stderr and the result as JSON on stdout (--out FILE writes it there too; an existing FILE only with --force). Data in other tokens
than the model's is refused in one line.
"""

from __future__ import annotations

from gpt2.run.script import script_parser, stop_on_ctrl_c

if __name__ == "__main__":  # not when a test imports the script
    stop_on_ctrl_c()  # before the slow imports: a Ctrl-C while torch loads is one line too

import json  # noqa: E402
import sys  # noqa: E402

from gpt2.eval.evaluation import data_config, evaluate_model  # noqa: E402
from gpt2.files import atomic_write_text, strict_json  # noqa: E402
from gpt2.run.script import (add_force_option, add_device_options, apply_device_options,  # noqa: E402
                             check_output, nonempty_path, nonempty_str, positive_int, run_script)
from gpt2.train.model_source import open_model  # noqa: E402


def build_parser():
    parser = script_parser(__doc__)
    parser.add_argument("model", type=nonempty_str, help="a run directory, a checkpoint (ours or nanoGPT's), a "
                        "Hugging Face GPT-2 folder, or gpt2 / gpt2-medium / gpt2-large / gpt2-xl")
    parser.add_argument("overrides", nargs="*", help="data overrides: data=NAME, data.KEY=VALUE")
    parser.add_argument("--batches", type=positive_int, default=None, help="the first N fixed validation batches "
                        "(default: every validation token once)")
    parser.add_argument("--out", type=nonempty_path, default=None, help="also write the JSON here")
    parser.add_argument("--dtype", default=None, help="default: the model's run's trainer.dtype, else auto")
    add_device_options(parser)
    add_force_option(parser)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    apply_device_options(args)
    if args.out is not None:
        check_output(args.out, "--out", args.force)
    source = open_model(args.model)
    result = evaluate_model(source, data_config(source, args.overrides), args.device, args.dtype, args.batches)
    scope = "every validation token" if args.batches is None else f"{result['batches']} fixed batches"
    print(f"{args.model}: val loss {result['val_loss']:.4f}, {result['val_bpb']:.4f} bits per byte "
          f"({scope} of {result['data']}, {result['tokenizer']} tokens, {result['device']} {result['dtype']})",
          file=sys.stderr)
    text = json.dumps(json.loads(strict_json(result)), indent=2)
    print(text)
    if args.out is not None:
        atomic_write_text(args.out, text + "\n")


if __name__ == "__main__":
    run_script(main)
