"""Sample text from a trained model: a run directory (its ckpt/best.pt, else ckpt/last.pt), a
checkpoint, or a Hugging Face GPT-2 folder (scripts/export_hf.py writes one; OpenAI's gpt2 is one).

Usage: python scripts/sample.py RUN_DIR_OR_CHECKPOINT [--prompt TEXT | --prompt @FILE] [--num-samples 3]
           [--max-new-tokens 256] [--temperature 0.8] [--top-k 200] [--top-p P] [--seed 1337]
           [--no-cache] [--device auto] [--threads N]

The samples are drawn as one batch, with a KV cache (--no-cache recomputes the whole window for every
token, as nanoGPT's sample.py does; greedy output, --temperature 0, is the same either way). Past the
model's context the window restarts from its last half. Prints each sample and the tokens/s.

On a CPU it decodes with one thread unless --threads says otherwise: on a 2-core CPU one thread is as
fast as torch's default (one per core) when the machine is idle, and 2-12x faster when another process
(a training run, say) shares it (docs/results.md, 2026-12-07). A large model on a many-core CPU may
gain from --threads N.
"""

from __future__ import annotations

from gpt2.run.script import script_parser, stop_on_ctrl_c

if __name__ == "__main__":  # not when a test imports the script
    stop_on_ctrl_c()  # before the slow imports: a Ctrl-C while torch loads is one line too

import argparse  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from gpt2.errors import DataError  # noqa: E402
from gpt2.eval.inference import load_for_inference  # noqa: E402
from gpt2.run.script import (add_device_options, apply_device_options, check_input_file,  # noqa: E402
                             integer, nonempty_str, nonnegative_float, nonnegative_int,
                             positive_int, probability, run_script)
from gpt2.train.runtime import resolve_device  # noqa: E402


def read_prompt(prompt: str) -> str:
    if not prompt.startswith("@"):
        return prompt
    path = check_input_file(Path(prompt[1:]), "--prompt")
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"--prompt {prompt}: cannot read the file ({exc})") from None


def encode_prompt(encoder, text: str) -> list[int]:
    try:
        ids = encoder.encode(text) if text else []
    except ValueError as exc:  # a character the char vocabulary lacks
        raise DataError(f"--prompt: {exc}") from None
    if ids:
        return ids
    return [getattr(encoder, "eot_token", 0)]  # no prompt: GPT-2 starts from <|endoftext|>


def build_parser() -> argparse.ArgumentParser:
    """Every value is checked as the flags are read: '--top-p: must be in (0, 1], got 1.5'."""
    parser = script_parser(__doc__)
    parser.add_argument("model", type=nonempty_str,
                        help="a run directory, a checkpoint file or a Hugging Face GPT-2 folder")
    parser.add_argument("--prompt", default="", help="the text to continue, or @FILE (default: none)")
    parser.add_argument("--num-samples", type=positive_int, default=3)
    parser.add_argument("--max-new-tokens", type=positive_int, default=256)
    parser.add_argument("--temperature", type=nonnegative_float, default=0.8, help="0: greedy")
    parser.add_argument("--top-k", type=nonnegative_int, default=200, help="0: no top-k")
    parser.add_argument("--top-p", type=probability, default=None,
                        help="nucleus sampling: keep this much probability, in (0, 1]")
    parser.add_argument("--seed", type=integer, default=1337)
    parser.add_argument("--no-cache", action="store_true", help="recompute the window for every token")
    parser.add_argument("--data-dir", type=nonempty_str, default="data", help="where the GPT-2 BPE files are kept")
    add_device_options(parser, threads_help="1 on a CPU, see above; torch's elsewhere")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    apply_device_options(args)
    device = resolve_device(args.device)
    if args.threads is None and device.type == "cpu":
        torch.set_num_threads(1)  # as fast idle, far faster beside another process (docs/results.md)
    model, encoder = load_for_inference(Path(args.model), device, args.data_dir)
    prompt = encode_prompt(encoder, read_prompt(args.prompt))
    idx = torch.tensor([prompt] * args.num_samples, dtype=torch.long, device=device)
    generator = torch.Generator(device=device).manual_seed(args.seed)
    start = time.perf_counter()
    out = model.generate(idx, args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                         top_p=args.top_p, generator=generator, use_cache=not args.no_cache)
    seconds = time.perf_counter() - start
    shown = encoder.decode(prompt) if args.prompt else ""
    for row in out[:, len(prompt):].tolist():
        print(shown + encoder.decode(row))
        print("---------------")
    new = args.num_samples * args.max_new_tokens
    threads = torch.get_num_threads()
    on = f"{device}, {threads} thread{'s' if threads > 1 else ''}" if device.type == "cpu" else str(device)
    print(f"{new} tokens in {seconds:.2f} s: {new / seconds:,.0f} tokens/s "
          f"({'no cache' if args.no_cache else 'KV cache'}, {on})")


if __name__ == "__main__":
    run_script(main)
