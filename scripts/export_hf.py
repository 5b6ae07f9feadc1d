"""Export a trained GPT-2 BPE model to a Hugging Face folder that transformers loads.

Usage: python scripts/export_hf.py RUN_DIR_OR_CHECKPOINT --out DIR [--data-dir data] [--force]

An --out folder that holds anything is refused unless --force (an earlier export is never
replaced by mistake). The files are written all or none: an export that fails midway (a full disk,
Ctrl-C) leaves what --out held as it was.

Writes DIR/config.json, DIR/model.safetensors and the GPT-2 tokenizer files (vocab.json,
merges.txt), so that `GPT2LMHeadModel.from_pretrained(DIR)` and `AutoTokenizer.from_pretrained(DIR)`
load it, and `model.init_from=DIR` or scripts/sample.py DIR read it back. A run directory exports its
ckpt/best.pt (else ckpt/last.pt). A char-level model is refused: transformers has no tokenizer for it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gpt2.data.download import GPT2_ENCODER_JSON, GPT2_VOCAB_BPE, fetch
from gpt2.errors import CheckpointError
from gpt2.train.checkpoint import checkpoint_of
from gpt2.model.pretrained import export_pretrained
from gpt2.run.script import (add_force_option, check_output, nonempty_path, nonempty_str, run_script,
                             script_parser)
from gpt2.train.checkpoint import load_model


def build_parser() -> argparse.ArgumentParser:
    """Every value is checked as the flags are read: an empty --out ('' from an unset shell variable) is
    refused, not read as the current directory."""
    parser = script_parser(__doc__)
    parser.add_argument("model", type=nonempty_str, help="a run directory or a checkpoint file")
    parser.add_argument("--out", type=nonempty_path, required=True, help="the folder to write (created if needed)")
    parser.add_argument("--data-dir", type=nonempty_str, default="data", help="where the GPT-2 BPE files are kept")
    parser.add_argument("--mirror", type=nonempty_str, default=None,
                        help="offline copy of the BPE files (default: $GPT2_DATA_MIRROR)")
    add_force_option(parser)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    check_output(args.out, "--out", args.force, folder=True)
    path = checkpoint_of(Path(args.model))
    model, state = load_model(path)
    if state["tokenizer"]["name"] != "gpt2":
        raise CheckpointError(f"{path} is a {state['tokenizer']['name']}-level model: only GPT-2 BPE models export "
                              f"to Hugging Face's GPT-2 format (transformers has no tokenizer for it)")
    fetch(GPT2_VOCAB_BPE, args.data_dir, args.mirror)
    bpe = fetch(GPT2_ENCODER_JSON, args.data_dir, args.mirror).parent
    export_pretrained(model, args.out, tokenizer_files=bpe)
    print(f"wrote {args.out}: {model.num_params(False) / 1e6:.2f}M parameters from {path} "
          f"(load it with GPT2LMHeadModel.from_pretrained({str(args.out)!r}))")


if __name__ == "__main__":
    run_script(main)
