"""Hidden cases for chapter 03 (instructor's tree only: never released, never shown in feedback).

They test the same behaviour as the visible checks on other shapes and values, so that an answer
fitted to the visible cases fails. ``grader.hidden.run_hidden`` judges them with the visible judge.
"""

import torch

from grader.checks.multi_head_attention import RaisesCase, bert_params, ffn_weights, mha_params
from grader.core import Case


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def split_heads_cases():
    g = _gen(1003)
    return [
        Case("wide heads", (torch.randn(3, 4, 30, generator=g), 2)),
        Case("many heads of one feature", (torch.randn(2, 6, 9, generator=g), 9)),
        Case("long sequence", (torch.randn(1, 11, 20, generator=g), 4)),
        RaisesCase("not divisible, fewer features than heads", (torch.randn(2, 3, 6, generator=g), 4)),
    ]


def merge_heads_cases():
    g = _gen(2003)
    return [
        Case("wide heads", (torch.randn(3, 2, 4, 15, generator=g),)),
        Case("many heads of one feature", (torch.randn(2, 9, 6, 1, generator=g),)),
        Case("long sequence", (torch.randn(1, 4, 11, 5, generator=g),)),
    ]


def multi_head_attention_cases():
    g = _gen(3003)
    x, memory = torch.randn(3, 7, 20, generator=g), torch.randn(2, 5, 18, generator=g)
    keys_mask = torch.rand(2, 1, 4, 5, generator=g) > 0.4
    keys_mask[..., 0] = True  # every query keeps at least one key
    return [
        Case("self-attention, causal, 4 heads of 5",
             (x, x, x, mha_params(g, 20), 4), {"mask": torch.tril(torch.ones(7, 7, dtype=torch.bool))}),
        Case("cross-attention with a random per-query mask, 3 heads of 6",
             (torch.randn(2, 4, 18, generator=g), memory, memory, mha_params(g, 18), 3), {"mask": keys_mask}),
        Case("key and value differ, 6 heads of 2",
             (torch.randn(1, 3, 12, generator=g), torch.randn(1, 8, 12, generator=g),
              torch.randn(1, 8, 12, generator=g), mha_params(g, 12), 6)),
    ]


def layer_norm_cases():
    g = _gen(4003)
    return [
        Case("a single 1-D vector", (torch.randn(9, generator=g) * 4 + 2, torch.randn(9, generator=g),
                                     torch.randn(9, generator=g))),
        Case("4-D input, eps 1e-2", (torch.randn(2, 3, 2, 4, generator=g), torch.randn(4, generator=g),
                                     torch.randn(4, generator=g)), {"eps": 1e-2}),
        Case("tiny variance", (torch.randn(5, 3, generator=g) * 2e-3 + 1, torch.randn(3, generator=g),
                               torch.randn(3, generator=g))),
    ]


def feed_forward_cases():
    g = _gen(5003)
    return [
        Case("wide hidden layer, gelu", (torch.randn(2, 3, 10, generator=g), *ffn_weights(g, 10, 40))),
        Case("relu on 4-D input", (torch.randn(2, 2, 3, 5, generator=g), *ffn_weights(g, 5, 7)),
             {"activation": "relu"}),
        Case("narrow hidden layer, gelu", (torch.randn(6, 8, generator=g), *ffn_weights(g, 8, 3))),
    ]


def bert_layer_cases():
    g = _gen(6003)
    ragged = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]])
    return [
        Case("padding, 4 heads", (torch.randn(2, 6, 20, generator=g), ragged, bert_params(g, 20, 32), 4),
             atol=2e-5),
        Case("one sequence, 1 head", (torch.randn(1, 4, 6, generator=g), torch.ones(1, 4, dtype=torch.long),
                                      bert_params(g, 6, 24), 1), atol=2e-5),
        Case("eps 1e-3 with small states", (torch.randn(2, 3, 12, generator=g) * 1e-2,
                                            torch.ones(2, 3, dtype=torch.long),
                                            bert_params(g, 12, 16, bias_scale=1e-2), 3), {"eps": 1e-3}, atol=2e-5),
    ]


CASES = {
    "split_heads": split_heads_cases,
    "merge_heads": merge_heads_cases,
    "multi_head_attention": multi_head_attention_cases,
    "layer_norm": layer_norm_cases,
    "feed_forward": feed_forward_cases,
    "bert_layer": bert_layer_cases,
}
