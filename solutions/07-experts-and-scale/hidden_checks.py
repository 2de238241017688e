"""Hidden cases for chapter 07 (instructor's tree only: never released, never shown in feedback).

They test the same behaviour as the visible checks on other shapes and values, so that an answer
fitted to the visible cases fails. ``grader.hidden.run_hidden`` judges them with the visible judge.
"""

import torch

from grader.checks.experts_and_scale import GradientCase, MoECase, RaisesCase, make_experts
from grader.core import Case


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def top_k_gating_cases():
    g = _gen(1007)
    return [
        RaisesCase("many experts, k = 4", (torch.randn(12, 16, generator=g), 4)),
        RaisesCase("one token, k = 2", (torch.randn(1, 5, generator=g) * 3, 2)),
        RaisesCase("float64 logits", (torch.randn(7, 6, generator=g, dtype=torch.float64), 3)),
        RaisesCase("tied logits, k = 3", (torch.tensor([[0.0, 1.0, 1.0, 1.0, 1.0], [2.0, 2.0, 0.0, 0.0, 2.0]]), 3)),
        RaisesCase("k = 0", (torch.randn(4, 3, generator=g), 0)),
        RaisesCase("k above the number of experts", (torch.randn(2, 6, generator=g), 7)),
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


def pipeline_schedule_cases():
    return [
        RaisesCase("GPipe, more stages than micro-batches", (5, 3)),
        RaisesCase("1F1B, a long run", (6, 10), {"schedule": "1f1b"}),
        RaisesCase("1F1B, two stages, one micro-batch", (2, 1), {"schedule": "1f1b"}),
        RaisesCase("GPipe, deep and long", (8, 12), {"schedule": "gpipe"}),
        RaisesCase("negative micro-batches", (4, -2)),
        RaisesCase("a schedule name in capitals", (3, 3), {"schedule": "GPipe"}),
    ]


CASES = {
    "top_k_gating": top_k_gating_cases,
    "moe_forward": moe_forward_cases,
    "load_balancing_loss": load_balancing_loss_cases,
    "moe_param_counts": moe_param_counts_cases,
    "pipeline_schedule": pipeline_schedule_cases,
}
