"""Hidden cases for chapter 06 (instructor's tree only: never released, never shown in feedback).

They test the same behaviour as the visible checks on other models, tokenizers, vectors and numbers, so
that an answer fitted to the visible cases fails. ``grader.hidden.run_hidden`` judges them with the
visible judge.
"""

import torch

from grader.checks.bias_and_cost import LogitsOnly, RaisesCase, ToyCausalLM, ToyTokenizer, _chip, _grid
from grader.core import Case


def pronoun_log_odds_cases():
    he_split = ToyTokenizer((" she", " the", " cook", " baker", " said", " that", " and", "he"))  # " he" -> " h" + "e"
    bos_both = ToyTokenizer((" the", "The", " clerk", " guard", " replied", "he", "she"), add_bos=True)
    prompts = ["The cook said that", "Yesterday the baker said that", "The guard replied that", "and then"]
    return [
        Case("hidden: ' he' split in two, ' she' whole; four prompts",
             (ToyCausalLM(len(he_split), seed=6101), he_split, prompts)),
        Case("hidden: a BOS tokenizer and both pronouns split",
             (ToyCausalLM(len(bos_both), seed=6102), bos_both, prompts[::-1])),
        Case("hidden: a plain callable model, prompts of very different lengths",
             (LogitsOnly(ToyCausalLM(len(he_split), seed=6103)), he_split,
              ["The clerk replied", "When the cook and the baker had finished, the guard said that"])),
    ]


def weat_effect_size_cases():
    g = torch.Generator().manual_seed(6201)

    def words(n, d, lean, spread):
        return (torch.randn(n, d, generator=g) + lean) * torch.exp(torch.empty(n, 1).uniform_(-spread, spread,
                                                                                              generator=g))

    a, b = torch.randn(12, generator=g), torch.randn(12, generator=g)
    big = torch.randn(64, generator=g), torch.randn(64, generator=g)
    lean = 0.05 * (big[0] - big[1])
    zero = words(4, 12, a, 0.8)
    return [
        RaisesCase("hidden: float64 tensors, X 9, Y 4, A 7, B 5",
             (words(9, 12, 0.3 * (a - b), 0.8).double(), words(4, 12, -0.3 * (a - b), 0.8).double(),
              words(7, 12, a, 0.8).double(), words(5, 12, b, 0.8).double()), atol=1e-6, rtol=1e-6),
        RaisesCase("hidden: NumPy arrays, a weak negative effect, d = 64",
             tuple(t.numpy() for t in (words(6, 64, -lean, 1.0), words(6, 64, lean, 1.0),
                                       words(3, 64, big[0], 1.0), words(8, 64, big[1], 1.0))), atol=1e-5, rtol=1e-4),
        RaisesCase("hidden: A and B the same words (NumPy), zero spread",
                   tuple(t.numpy() for t in (words(3, 12, a, 0.5), words(5, 12, b, 0.5), zero, zero.clone()))),
    ]


def lowest_carbon_plan_cases():
    h100, a100 = (989e12, 700), (312e12, 400)
    hardware = {"A100 x 2048": _chip(2048, *a100, 0.45), "H100 x 1024": _chip(1024, *h100, 0.4),
                "H100 x 256": _chip(256, *h100, 0.4)}
    regions = {"Norway": _grid(1.15, 0.03), "Poland": _grid(1.08, 0.66), "Ireland": _grid(1.25, 0.3)}
    return [
        RaisesCase("hidden: three clusters, three grids, a deadline of 5 days that only the two larger clusters meet",
                   (6e22, hardware, regions, 5.0)),
        RaisesCase("hidden: two grids tied (PUE 1.5 x 0.2 and 1.2 x 0.25), one cluster: alphabetical region",
                   (8e21, {"A100 x 512": _chip(512, *a100, 0.35)},
                    {"zeta": _grid(1.5, 0.2), "alpha": _grid(1.2, 0.25), "mid": _grid(1.1, 0.4)}, 60)),
        RaisesCase("hidden: no plan within 1.5 days", (6e22, hardware, regions, 1.5)),
        RaisesCase("hidden: no hardware, several regions", (3e20, {}, regions, 10)),
    ]


CASES = {
    "pronoun_log_odds": pronoun_log_odds_cases,
    "weat_effect_size": weat_effect_size_cases,
    "lowest_carbon_plan": lowest_carbon_plan_cases,
}
