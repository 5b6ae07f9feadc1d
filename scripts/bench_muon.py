"""What Muon's orthogonalisation costs per optimizer step, against the forward and backward it follows.

Usage: python scripts/bench_muon.py [--preset gpt2|baby|char] [--micro-batch 1] [--tokens-per-step 524288]
           [--world 1,8] [--repeats 3] [--device auto]

Times (fastest of --repeats, after a warm-up) on one device: the Newton-Schulz iteration over every
block matrix of the preset's model, one matrix at a time (torch.optim.Muon) and batched by shape (ours);
and a forward + backward of --micro-batch windows in the device's autocast dtype. From the time per
token, the forward and backward of one step of --tokens-per-step tokens on each of --world processes,
and the share of the step each rank spends orthogonalising when every rank repeats it for all matrices
(what DDP does here), against sharing the matrices out over the ranks and gathering the results
(modded-nanogpt's distributed Muon; ignoring the gather's time). Presets: gpt2 (124M, context 1024),
baby (6/6/384, context 256), char (4/4/128, context 64).
"""

from __future__ import annotations

import time

import torch

from gpt2.model.gpt import GPT, GPTConfig
from gpt2.run.script import check_device, int_list, positive_int, run_script, script_parser
from gpt2.train.muon import orthogonalise
from gpt2.train.runtime import resolve_device

PRESETS = {
    "gpt2": GPTConfig(bias=False),
    "baby": GPTConfig(n_layer=6, n_head=6, n_embd=384, vocab_size=65, block_size=256, bias=False),
    "char": GPTConfig(n_layer=4, n_head=4, n_embd=128, vocab_size=65, block_size=64, bias=False),
}
NS = ((3.4445, -4.7750, 2.0315), 5, 1e-7)


def fastest(fn, repeats: int, device: torch.device) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times)


def build_parser():
    parser = script_parser(__doc__)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="gpt2")
    parser.add_argument("--micro-batch", type=positive_int, default=1)
    parser.add_argument("--tokens-per-step", type=positive_int, default=524_288)
    parser.add_argument("--world", default="1,8")
    parser.add_argument("--repeats", type=positive_int, default=3)
    parser.add_argument("--device", default="auto")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    worlds = int_list(args.world, "--world")
    check_device(args.device)
    device = resolve_device(args.device)
    config = PRESETS[args.preset]
    model = GPT(config).to(device)
    matrices = [p for n, p in model.named_parameters() if n.startswith("transformer.h.") and p.dim() == 2]
    grads = [torch.randn_like(p) for p in matrices]
    by_shape: dict = {}
    for g in grads:
        by_shape.setdefault(g.shape, []).append(g)
    stacks = [torch.stack(gs) for gs in by_shape.values()]
    one_by_one = fastest(lambda: [orthogonalise(g, *NS) for g in grads], args.repeats, device)
    batched = fastest(lambda: [orthogonalise(s, *NS) for s in stacks], args.repeats, device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    x = torch.randint(0, config.vocab_size, (args.micro_batch, config.block_size), device=device)

    def forward_backward():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            _, loss = model(x, x)
        loss.backward()

    per_token = fastest(forward_backward, args.repeats, device) / x.numel()
    print(f"{args.preset}: {len(matrices)} matrices in {len(stacks)} shapes, on {device} "
          f"(forward/backward in {str(dtype).removeprefix('torch.')})")
    print(f"  Newton-Schulz, one matrix at a time: {one_by_one * 1e3:.1f} ms; batched by shape: "
          f"{batched * 1e3:.1f} ms ({one_by_one / batched:.2f}x)")
    print(f"  forward + backward: {per_token * 1e6:.2f} us per token")
    print("  | processes | tokens per rank | fwd+bwd per rank | Muon share, every rank repeats it | shared out |")
    print("  | --- | --- | --- | --- | --- |")
    for world in worlds:
        compute = per_token * args.tokens_per_step / world
        shared = batched / world
        print(f"  | {world} | {args.tokens_per_step // world:,} | {compute:.3g} s | "
              f"{batched / (compute + batched):.1%} | {shared / (compute + shared):.1%} |")


if __name__ == "__main__":
    run_script(main)
