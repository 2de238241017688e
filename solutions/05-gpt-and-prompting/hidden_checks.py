"""Hidden cases for chapter 05 (instructor's tree only: never released, never shown in feedback).

They test the same behaviour as the visible checks on other models, prompts and settings, so that an
answer fitted to the visible cases fails. ``grader.hidden.run_hidden`` judges them with the visible judge.
"""

import torch

from grader.checks.gpt_and_prompting import (CLASSIFY_PROMPT, RaisesCase, ClassifyCase, SamplingCase,
                                             ToyTokenizer, _sampling_logits, _toy_lm, extreme_lm, random_lm,
                                             tied_toy_lm)
from grader.core import Case


def _ids(*tokens):
    return torch.tensor([tokens], dtype=torch.long)


def sequence_logprob_cases():
    lm = random_lm(1060, 15, n_contexts=40)
    return [
        RaisesCase("a long continuation", (lm, _ids(*[i % 15 for i in range(2, 40, 3)]), 2)),
        RaisesCase("the last token only", (lm, _ids(4, 9, 1, 14), 3)),
        RaisesCase("a negative prompt length", (lm, _ids(4, 9, 1), -1)),
        RaisesCase("logits far apart", (extreme_lm(), _ids(1, 3, 0, 2, 4, 0, 2), 1)),
    ]


def greedy_decode_cases():
    lm = random_lm(1070, 12, n_contexts=60, eos_token_id=5)
    return [
        Case("a longer run with an EOS id", (lm, _ids(0, 1, 2, 3), 12), {"eos_token_id": 5}),
        Case("EOS passed positionally", (random_lm(1071, 9, n_contexts=30), _ids(8,), 7, 3)),
        Case("a lone greedy step", (lm, _ids(11,), 1)),
    ]


def beam_search_cases():
    return [
        Case("five beams over a flat vocabulary", (random_lm(1080, 12, n_contexts=60, spread=0.8), _ids(3, 1), 5, 4)),
        Case("two beams, long", (random_lm(1081, 6, n_contexts=20, spread=1.2), _ids(0,), 2, 7)),
        Case("more beams than tokens at the first step", (random_lm(1082, 4, n_contexts=8), _ids(2,), 6, 3)),
    ]


def top_k_filter_cases():
    g = torch.Generator().manual_seed(1090)
    ties = torch.tensor([[0.5, 2.0, 2.0, 2.0, -1.0, 3.0], [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]])
    return [
        Case("4-D logits", (torch.randn(2, 2, 3, 16, generator=g) * 4, 6)),
        Case("ties in two rows", (ties, 3)),
        Case("k above V", (torch.randn(5, generator=g), 9)),
        Case("k above V in a batch", (torch.randn(3, 4, generator=g), 5)),
        Case("float64 logits", (torch.randn(3, 11, generator=g, dtype=torch.float64), 4)),
    ]


def top_p_filter_cases():
    g = torch.Generator().manual_seed(1091)
    return [
        Case("a wide flat distribution", (torch.randn(2, 50, generator=g) * 0.3, 0.5)),
        Case("a peaked distribution", (torch.tensor([8.0, 1.0, 0.5, 0.0, -1.0, 2.0]), 0.95)),
        Case("4-D logits, p = 0.3", (torch.randn(2, 1, 3, 9, generator=g) * 2, 0.3)),
        Case("three tied at the threshold", (torch.log(torch.tensor([[0.3, 0.1, 0.2, 0.2, 0.2], [0.5, 0.25, 0.05, 0.15,
                                                                                                   0.05]])), 0.4)),
        Case("p = 1 in a batch", (torch.tensor([[12.0, 0.0, -30.0, -100.0, 1.0], [0.0, 0.1, 0.2, -0.1, -95.0]]), 1.0)),
    ]


def sample_next_token_cases():
    logits = _sampling_logits([0.22, 0.05, 0.31, 0.12, 0.18, 0.07, 0.05], offset=-3.0)
    return [
        SamplingCase("temperature 1.3 and top_k 5", (logits,), {"temperature": 1.3, "top_k": 5}, seed=11),
        SamplingCase("temperature 0.8 and top_p 0.75", (logits,), {"temperature": 0.8, "top_p": 0.75}, seed=12),
        SamplingCase("argmax with filters", (logits,), {"temperature": 0, "top_k": 3, "top_p": 0.5}, seed=13,
                     n_draws=20),
    ]


def classify_by_likelihood_cases():
    return [
        ClassifyCase("three two-token labels", (_toy_lm(1100), ToyTokenizer(), CLASSIFY_PROMPT.format("it was fine"),
                                                ["not good", "very good", "not bad"])),
        ClassifyCase("one label", (_toy_lm(1101), ToyTokenizer(), "Input: music\nOutput:", ["fun"])),
        ClassifyCase("five labels", (_toy_lm(1102), ToyTokenizer(), "Review: the acting\nSentiment:",
                                     ["great", "good", "okay", "bad", "awful"])),
        ClassifyCase("a tie between the second and last labels", (tied_toy_lm(1103, ":", ("awful", "good")),
                                                                   ToyTokenizer(), "Review: the plot\nSentiment:",
                                                                   ["bad", "awful", "okay", "good"])),
    ]


CASES = {
    "sequence_logprob": sequence_logprob_cases,
    "greedy_decode": greedy_decode_cases,
    "beam_search": beam_search_cases,
    "top_k_filter": top_k_filter_cases,
    "top_p_filter": top_p_filter_cases,
    "sample_next_token": sample_next_token_cases,
    "classify_by_likelihood": classify_by_likelihood_cases,
}
