"""Hidden cases for chapter 01 (instructor's tree only: never released, never shown in feedback).

They test the same behaviour as the visible checks on other shapes and values, so that an answer
fitted to the visible cases fails. ``grader.hidden.run_hidden`` judges them with the visible judge.
"""

import math

import torch

from grader.core import Case


def transformer_param_count_cases():
    return [
        Case("tiny decoder with d_ff None passed explicitly", (1, 2, 3, 4), {"d_ff": None}),
        Case("MiniLM-sized decoder", (6, 384, 30522, 512)),
        Case("wide FFN, long context", (4, 96, 777, 4096), {"d_ff": 1000}),
    ]


def training_flops_cases():
    return [
        Case("one parameter, one token", (1, 1)),
        Case("a 7e9-parameter model on 1e12 tokens", (6.7e9, 1.0e12)),
        Case("float parameters, integer tokens", (3.5e5, 12_345)),
    ]


def training_days_cases():
    return [
        Case("many devices at high utilization", (5.88e23, 2_048, 312e12, 0.55)),
        Case("a laptop-sized run", (3.0e15, 1, 2.0e12, 0.15)),
        Case("integer device count and peak", (1.0e21, 64, 100_000_000_000_000, 0.33)),
    ]


def semantic_search_cases():
    g = torch.Generator().manual_seed(7001)

    def documents(n, d, dtype=torch.float32):
        directions = torch.randn(n, d, generator=g, dtype=dtype)
        lengths = torch.exp(torch.empty(n, 1, dtype=dtype).uniform_(math.log(0.1), math.log(8.0), generator=g))
        return directions / directions.norm(dim=-1, keepdim=True) * lengths  # (n, d)

    return [
        Case("float64 embeddings, many documents", (torch.randn(24, generator=g, dtype=torch.float64),
                                                    documents(40, 24, torch.float64), 7)),
        Case("two documents, k of two", (torch.randn(3, generator=g), documents(2, 3), 2)),
        Case("MiniLM-sized vectors", (torch.randn(384, generator=g), documents(12, 384), 4)),
    ]


CASES = {
    "transformer_param_count": transformer_param_count_cases,
    "training_flops": training_flops_cases,
    "training_days": training_days_cases,
    "semantic_search": semantic_search_cases,
}
