"""Lesson 10 on this machine: SmolLM2's speed and memory, and its perplexity under each quantization; prints tables.

    .venv/bin/python benchmarks/open_models.py [--tokens 4096] [--new-tokens 64]

First table: generation at batch 1 with the KV cache, for a short and a long prompt (prefill and decode
tokens per second) and the perplexity forward pass (tokens per second), with the model's memory. Second
table: the perplexity of held-out Shakespeare as shipped and after absmax round trips of every linear
weight of the 30 blocks (per tensor at 8 and 4 bits, per block of 32 at 4 bits), with the seconds each took.
Use it to size HELDOUT_TOKENS in the lesson: it reads the held-out tokens once per row.
"""

import argparse
import time

import torch

from llmcourse.models import load_causal_lm
from llmcourse.open_models import (causal_lm_perplexity, generation_speed, heldout_token_ids, parameter_bytes,
                                   resident_memory_mb, weights_replaced)

WINDOW = 512
BLOCK = 32


def round_trip(w, bits, block=None):
    """round(w / scale) * scale with one absmax scale per tensor (block None) or per `block` weights."""
    q_max = 2 ** (bits - 1) - 1
    groups = w.reshape(1, -1) if block is None else w.reshape(-1, block)  # (groups, size)
    scale = groups.abs().amax(dim=1, keepdim=True) / q_max  # (groups, 1)
    return (torch.round(groups / scale) * scale).reshape(w.shape)


VARIANTS = {
    "as shipped (Q4_1, dequantized)": None,
    "8-bit absmax per tensor": lambda w: round_trip(w, 8),
    "4-bit absmax per tensor": lambda w: round_trip(w, 4),
    f"4-bit absmax per block of {BLOCK}": lambda w: round_trip(w, 4, BLOCK),
}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=4096, help="held-out tokens per perplexity")
    parser.add_argument("--new-tokens", type=int, default=64, help="tokens generated per speed run")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    tokenizer, model = load_causal_lm()
    print(f"loaded SmolLM2 in {time.perf_counter() - start:.1f} s; {parameter_bytes(model) / 1e6:,.0f} MB of "
          f"parameters; process resident memory {resident_memory_mb():,.0f} MB; {torch.get_num_threads()} threads")
    ids = heldout_token_ids(tokenizer, max(args.tokens, 256))

    print(f"\n{'run':<34} {'prefill tok/s':>14} {'decode tok/s':>13}")
    for n_prompt in (8, 256):
        speed = generation_speed(model, ids[None, :n_prompt], args.new_tokens)
        print(f"{f'prompt {n_prompt}, {args.new_tokens} new tokens':<34} "
              f"{speed['prefill_tokens_per_s']:>14.1f} {speed['decode_tokens_per_s']:>13.1f}")
    start = time.perf_counter()
    causal_lm_perplexity(model, ids[:2 * WINDOW], WINDOW, progress=False)
    print(f"{f'perplexity forward, windows of {WINDOW}':<34} {2 * WINDOW / (time.perf_counter() - start):>14.1f}")

    print(f"\n{'weights':<34} {'perplexity':>12} {'seconds':>8}   ({args.tokens:,} held-out tokens)")
    for name, transform in VARIANTS.items():
        start = time.perf_counter()
        if transform is None:
            ppl = causal_lm_perplexity(model, ids[:args.tokens], WINDOW, progress=False)
        else:
            with weights_replaced(model, transform):
                ppl = causal_lm_perplexity(model, ids[:args.tokens], WINDOW, progress=False)
        print(f"{name:<34} {ppl:>12,.1f} {time.perf_counter() - start:>8.1f}")
    print(f"process resident memory at the end: {resident_memory_mb():,.0f} MB")


if __name__ == "__main__":
    main()
