"""Hidden cases for chapter 02 (instructor's tree only: never released, never shown in feedback).

They test the same behaviour as the visible checks on other shapes and values, so that an answer
fitted to the visible cases fails. ``grader.hidden.run_hidden`` judges them with the visible judge.
"""

import torch

from grader.core import Case


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def softmax_cases():
    g = _gen(1002)
    return [
        Case("4-D, dim=2", (torch.randn(2, 3, 5, 4, generator=g) * 4,), {"dim": 2}),
        Case("float64, dim=-2", (torch.randn(6, 3, generator=g, dtype=torch.float64),), {"dim": -2}),
        Case("very negative inputs near -1e4", (torch.randn(3, 7, generator=g) - 1e4,)),
        Case("a single entry", (torch.tensor([[3.0]]),)),
    ]


def causal_mask_cases():
    return [Case(f"n = {n}", (n,)) for n in (2, 13)]


def sdpa_cases():
    g = _gen(2002)

    def rand(*shape):
        return torch.randn(*shape, generator=g)

    causal = torch.tril(torch.ones(6, 6, dtype=torch.bool))
    keys_mask = torch.rand(3, 1, 9, generator=g) > 0.3
    keys_mask[..., 0] = True  # every query keeps at least one key
    return [
        Case("3 heads, one query each", (rand(3, 1, 12), rand(3, 9, 12), rand(3, 9, 2))),
        Case("batch 2 x heads 2, causal 6 x 6", (rand(2, 2, 6, 32), rand(2, 2, 6, 32), rand(2, 2, 6, 7)),
             {"mask": causal}),
        Case("random key mask per batch", (rand(3, 4, 5), rand(3, 9, 5), rand(3, 9, 5)), {"mask": keys_mask}),
    ]


def self_attention_cases():
    g = _gen(3002)

    def rand(*shape):
        return torch.randn(*shape, generator=g)

    return [
        Case("batch 3, wide projections", (rand(3, 4, 5), rand(5, 10), rand(5, 10), rand(5, 3))),
        Case("causal, one sequence", (rand(7, 16), rand(16, 8), rand(16, 8), rand(16, 8)),
             {"mask": torch.tril(torch.ones(7, 7, dtype=torch.bool))}),
    ]


CASES = {
    "softmax": softmax_cases,
    "causal_mask": causal_mask_cases,
    "scaled_dot_product_attention": sdpa_cases,
    "self_attention": self_attention_cases,
}
