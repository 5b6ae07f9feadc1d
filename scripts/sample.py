"""Sample text from a trained model: a run directory (its ckpt/best.pt, else ckpt/last.pt), a
checkpoint, or a Hugging Face GPT-2 folder (scripts/export_hf.py writes one; OpenAI's gpt2 is one).

Usage: python scripts/sample.py RUN_DIR_OR_CHECKPOINT [--prompt TEXT | --prompt @FILE] [--num-samples 3]
           [--max-new-tokens 256] [--temperature 0.8] [--top-k 200] [--top-p P] [--seed 1337]
           [--no-cache] [--device auto]

The samples are drawn as one batch, with a KV cache (--no-cache recomputes the whole window for every
token, as nanoGPT's sample.py does; greedy output, --temperature 0, is the same either way). Past the
model's context the window restarts from its last half. Prints each sample and the tokens/s.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from gpt2.errors import ConfigError, DataError
from gpt2.eval.inference import load_for_inference
from gpt2.run.script import require_positive, run_script
from gpt2.train.runtime import resolve_device


def read_prompt(prompt: str) -> str:
    if not prompt.startswith("@"):
        return prompt
    try:
        return Path(prompt[1:]).expanduser().read_text()
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    args = parser.parse_args()
    require_positive(args, "--num-samples", "--max-new-tokens")
    if args.temperature < 0 or args.top_k < 0 or (args.top_p is not None and not 0 < args.top_p <= 1):
        raise ConfigError("--temperature and --top-k must be >= 0 and --top-p in (0, 1]")
    device = resolve_device(args.device)
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
    print(f"{new} tokens in {seconds:.2f} s: {new / seconds:,.0f} tokens/s "
          f"({'no cache' if args.no_cache else 'KV cache'}, {device})")


if __name__ == "__main__":
    run_script(main)
