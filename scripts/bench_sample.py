"""Decoding speed with and without the KV cache: tokens/s and the speed-up.

Usage: python scripts/bench_sample.py [--models char,baby,gpt2] [--batch 1,3] [--tokens 256]
           [--temperature 0] [--repeats 3] [--model RUN_DIR_OR_CHECKPOINT] [--device auto] [--threads N]

For each model and batch size, generates --tokens tokens from a 1-token prompt three ways: with the KV
cache and without it (`--no-cache`: the same windows; past the context the window restarts from its
last half), and nanoGPT's sample.py loop (every token recomputes the last block_size tokens); it
reports the fastest of --repeats of each (the first call of a process also pays one-time set-up).
Models: `char` (nanoGPT's CPU model: 4/4/128, context 64, 65 characters), `baby` (6/6/384, context
256), `gpt2` (124M, context 1024), random weights (speed does not depend on them); or --model for a
trained one. Greedy outputs (--temperature 0) are checked identical with and without the cache.
"""

from __future__ import annotations

from gpt2.run.script import script_parser, stop_on_ctrl_c

if __name__ == "__main__":  # not when a test imports the script
    stop_on_ctrl_c()  # before the slow imports: a Ctrl-C while torch loads is one line too

import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from gpt2.eval.inference import load_for_inference  # noqa: E402
from gpt2.model.gpt import GPT, GPTConfig, next_token  # noqa: E402
from gpt2.run.script import (add_device_options, apply_device_options, comma_choices,  # noqa: E402
                             int_list, nonempty_str, nonnegative_float, positive_int, run_script)
from gpt2.train.runtime import resolve_device  # noqa: E402

WAYS = ("cache", "no cache", "nanogpt")
MODELS = {
    "char": GPTConfig(n_layer=4, n_head=4, n_embd=128, vocab_size=65, block_size=64, bias=False),
    "baby": GPTConfig(n_layer=6, n_head=6, n_embd=384, vocab_size=65, block_size=256, bias=False),
    "gpt2": GPTConfig(),
}


@torch.inference_mode()
def nanogpt_generate(model: GPT, idx: torch.Tensor, tokens: int, temperature: float, generator) -> torch.Tensor:
    """nanoGPT's sample.py loop: every token recomputes the last block_size tokens (a sliding window)."""
    for _ in range(tokens):
        logits, _ = model(idx[:, -model.block_size:])
        idx = torch.cat([idx, next_token(logits[:, -1, :], temperature, 200, None, generator)], dim=1)
    return idx


def timed(model: GPT, batch: int, args, how: str) -> tuple[float, torch.Tensor]:
    idx = torch.zeros((batch, 1), dtype=torch.long, device=next(model.parameters()).device)
    generator = torch.Generator(device=idx.device).manual_seed(1337)
    start = time.perf_counter()
    if how == "nanogpt":
        out = nanogpt_generate(model, idx, args.tokens, args.temperature, generator)
    else:
        out = model.generate(idx, args.tokens, temperature=args.temperature, top_k=200, generator=generator,
                             use_cache=how == "cache")
    if idx.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, out


def bench(name: str, model: GPT, batch: int, args) -> None:
    times: dict[str, list[float]] = {how: [] for how in WAYS}
    for _ in range(args.repeats):
        outs = {}
        for how in WAYS:
            seconds, outs[how] = timed(model, batch, args, how)
            times[how].append(seconds)
        if args.temperature == 0 and not torch.equal(outs["cache"], outs["no cache"]):
            raise SystemExit(f"{name}: greedy outputs differ with and without the cache")
    rate = {how: batch * args.tokens / min(times[how]) for how in WAYS}
    cached = rate["cache"]
    print(f"| {name} | {batch} | {cached:,.0f} | {rate['no cache']:,.0f} | {cached / rate['no cache']:.1f}x | "
          f"{rate['nanogpt']:,.0f} | {cached / rate['nanogpt']:.1f}x |", flush=True)


def build_parser():
    parser = script_parser(__doc__)
    parser.add_argument("--models", type=comma_choices(*MODELS), default=["char", "baby"],
                        help=f"comma-separated, of {', '.join(MODELS)}")
    parser.add_argument("--model", type=nonempty_str, default=None,
                        help="a run directory, checkpoint or Hugging Face folder instead")
    parser.add_argument("--batch", default="1,3", help="comma-separated batch sizes (samples drawn at once)")
    parser.add_argument("--tokens", type=positive_int, default=256)
    parser.add_argument("--temperature", type=nonnegative_float, default=0.0,
                        help="0: greedy (outputs checked identical)")
    parser.add_argument("--repeats", type=positive_int, default=3)
    add_device_options(parser)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    apply_device_options(args)
    batches = int_list(args.batch, "--batch")
    device = resolve_device(args.device)
    if args.model:
        models = {args.model: load_for_inference(Path(args.model), device)[0]}
    else:
        torch.manual_seed(0)
        models = {name: GPT(MODELS[name]).to(device).eval() for name in args.models}
    print(f"{args.tokens} new tokens from a 1-token prompt, temperature {args.temperature}, top-k 200, "
          f"{device}, torch {torch.__version__}, {torch.get_num_threads()} threads; fastest of {args.repeats}\n")
    print("| model | batch | KV cache (tokens/s) | no cache, same windows | speed-up | nanoGPT's loop (sliding "
          "window) | speed-up |\n| --- | --- | --- | --- | --- | --- | --- |")
    for name, model in models.items():
        for batch in batches:
            bench(name, model, batch, args)


if __name__ == "__main__":
    run_script(main)
