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


def plan_training_cases():
    from grader.checks.transformer_era import PlanCase

    gpt3_family = {"GPT-3 Small": 125e6, "GPT-3 XL": 1.3e9, "GPT-3 2.7B": 2.7e9, "GPT-3 6.7B": 6.7e9,
                   "GPT-3 13B": 13e9, "GPT-3 175B": 175e9}
    shuffled = {"m3": 3_000_000, "m1": 1_000_000, "m9": 9_000_000, "m1-bis": 1_000_000, "m27": 27_000_000}
    return [
        PlanCase("GPT-3's family at GPT-3's budget, 20 tokens per parameter",
                 (gpt3_family, 10_000, 125e12, 0.213, 14.8)),
        PlanCase("utilization 1.0 is allowed: the peak itself", (shuffled, 1, 1e12, 1.0, 0.5), {"tokens_per_param": 5}),
        PlanCase("utilization 0 is not a fraction in (0, 1]", (shuffled, 4, 1e12, 0.0, 3)),
        PlanCase("integers everywhere, one model", ({"only": 7_000_000}, 3, 2_000_000_000_000, 0.25, 2)),
        PlanCase("a negative utilization", ({"x": 10}, 1, 1e9, -0.3, 1)),
        PlanCase("equal sizes, given out of order, half a day", (shuffled, 16, 5e11, 0.35, 0.5),
                 {"tokens_per_param": 100}),
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
        Case("k far beyond the number of documents", (torch.randn(5, generator=g), documents(3, 5), 10)),
        Case("ties: one direction repeated at three lengths", (torch.tensor([0.0, 2.0, 1.0]), torch.tensor(
            [[0.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.5, 0.5], [0.0, 4.0, 4.0], [0.0, 1.0, 0.0]]), 3)),
    ]


CASES = {
    "transformer_param_count": transformer_param_count_cases,
    "plan_training": plan_training_cases,
    "semantic_search": semantic_search_cases,
}
