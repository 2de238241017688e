"""Hidden cases for chapter 06 (instructor's tree only: never released, never shown in feedback).

They test the same behaviour as the visible checks on other models, tokenizers, vectors and numbers, so
that an answer fitted to the visible cases fails. ``grader.hidden.run_hidden`` judges them with the
visible judge.
"""

import torch

from grader.checks.bias_and_cost import LogitsOnly, ToyCausalLM, ToyTokenizer
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
    return [
        Case("hidden: float64 tensors, X 9, Y 4, A 7, B 5",
             (words(9, 12, 0.3 * (a - b), 0.8).double(), words(4, 12, -0.3 * (a - b), 0.8).double(),
              words(7, 12, a, 0.8).double(), words(5, 12, b, 0.8).double()), atol=1e-6, rtol=1e-6),
        Case("hidden: NumPy arrays, a weak negative effect, d = 64",
             tuple(t.numpy() for t in (words(6, 64, -lean, 1.0), words(6, 64, lean, 1.0),
                                       words(3, 64, big[0], 1.0), words(8, 64, big[1], 1.0))), atol=1e-5, rtol=1e-4),
    ]


def training_energy_mwh_cases():
    return [
        Case("hidden: 2,048 TPU chips for 400 hours at 200 W, PUE 1.09", (2_048 * 400, 200, 1.09)),
        Case("hidden: 12.5 device-hours at 450 W, PUE 1.4", (12.5, 450, 1.4)),
    ]


def training_emissions_tco2e_cases():
    return [
        Case("hidden: 789 MWh at 0.38 kg per kWh", (789, 0.38)),
        Case("hidden: 0.002 MWh at 0.7 kg per kWh", (0.002, 0.7)),
    ]


CASES = {
    "pronoun_log_odds": pronoun_log_odds_cases,
    "weat_effect_size": weat_effect_size_cases,
    "training_energy_mwh": training_energy_mwh_cases,
    "training_emissions_tco2e": training_emissions_tco2e_cases,
}
