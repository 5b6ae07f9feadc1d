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

from gpt2.errors import ConfigError, DataError  # noqa: E402
from gpt2.eval.inference import load_for_inference  # noqa: E402
from gpt2.run.script import (add_threads_option, apply_threads, check_device, check_input_file,  # noqa: E402
                             require_positive, run_script)
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


def check_options(args: argparse.Namespace) -> None:
    """Refuse a bad value in one line naming its flag: '--top-p: must be in (0, 1], got 1.5'."""
    require_positive(args, "--num-samples", "--max-new-tokens")
    if not args.temperature >= 0:  # NaN too
        raise ConfigError(f"--temperature: must be >= 0 (0: greedy), got {args.temperature}")
    if args.top_k < 0:
        raise ConfigError(f"--top-k: must be >= 0 (0: no top-k), got {args.top_k}")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        raise ConfigError(f"--top-p: must be in (0, 1], got {args.top_p}")
    check_device(args.device)


def main() -> None:
    parser = script_parser(__doc__)
    parser.add_argument("model", help="a run directory, a checkpoint file or a Hugging Face GPT-2 folder")
    parser.add_argument("--prompt", default="", help="the text to continue, or @FILE (default: none)")
    parser.add_argument("--num-samples", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=0.8, help="0: greedy")
    parser.add_argument("--top-k", type=int, default=200, help="0: no top-k")
    parser.add_argument("--top-p", type=float, default=None, help="nucleus sampling: keep this much probability")
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--no-cache", action="store_true", help="recompute the window for every token")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--data-dir", default="data", help="where the GPT-2 BPE files are kept")
    add_threads_option(parser, default_help="1 on a CPU, see above; torch's elsewhere")
    args = parser.parse_args()
    check_options(args)
    apply_threads(args)
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
