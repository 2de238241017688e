"""Hidden cases for chapter 07 (instructor's tree only: never released, never shown in feedback).

They test the same behaviour as the visible checks on other shapes and values, so that an answer
fitted to the visible cases fails. ``grader.hidden.run_hidden`` judges them with the visible judge.
"""

import torch

from grader.checks.experts_and_scale import GradientCase, MoECase, make_experts
from grader.core import Case


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def top_k_gating_cases():
    g = _gen(1007)
    return [
        Case("many experts, k = 4", (torch.randn(12, 16, generator=g), 4)),
        Case("one token, k = 2", (torch.randn(1, 5, generator=g) * 3, 2)),
        Case("float64 logits", (torch.randn(7, 6, generator=g, dtype=torch.float64), 3)),
    ]


def moe_forward_cases():
    g = _gen(2007)
    return [
        MoECase("more experts than tokens", (torch.randn(3, 4, generator=g), torch.randn(4, 6, generator=g),
                                            make_experts(g, 6, 4), 2)),
        MoECase("wide tokens, k = 3", (torch.randn(9, 8, generator=g), torch.randn(8, 5, generator=g),
                                       make_experts(g, 5, 8), 3)),
    ]


def load_balancing_loss_cases():
    g = _gen(3007)
    return [
        GradientCase("two experts, many tokens", (torch.randn(50, 2, generator=g), 2)),
        GradientCase("sixteen experts, sharp router", (torch.randn(40, 16, generator=g) * 4, 16)),
    ]


def moe_param_counts_cases():
    return [
        Case("GLaM 8B/64E-like shape", (4096, 16384, 64, 2, 32)),
        Case("odd depth, every third layer", (24, 96, 6, 2, 10, 3)),
        Case("two layers, top-1", (10, 40, 3, 1, 2)),
    ]


def model_flops_utilization_cases():
    return [
        Case("a laptop run", (25_000_000, 3_000.0, 1.2e12)),
        Case("a pod", (62e9, 1.1e6, 3072 * 275e12)),
    ]


def pipeline_bubble_fraction_cases():
    return [
        Case("two stages, two micro-batches", (2, 2)),
        Case("deep pipeline, few micro-batches", (16, 4)),
        Case("many micro-batches", (6, 1000)),
    ]


CASES = {
    "top_k_gating": top_k_gating_cases,
    "moe_forward": moe_forward_cases,
    "load_balancing_loss": load_balancing_loss_cases,
    "moe_param_counts": moe_param_counts_cases,
    "model_flops_utilization": model_flops_utilization_cases,
    "pipeline_bubble_fraction": pipeline_bubble_fraction_cases,
}
