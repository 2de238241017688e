"""Hidden cases for chapter 10 (instructor's tree only: never released, never shown in feedback).

They test the same behaviour as the visible checks on other shapes and values, so that an answer
fitted to the visible cases fails. ``grader.hidden.run_hidden`` judges them with the visible judge.
"""

import torch

from grader.checks.open_models import CharacterTokenizer, IdTokenizer, PieceTokenizer, PunctuationTokenizer
from grader.core import Case


def weights_memory_gb_cases():
    return [
        Case("GPT-3 in bf16", (174_604_259_328, 2)),
        Case("a 70B model in int4 with integer parameter count", (70_000_000_000, 0.5)),
        Case("three parameters in fp64", (3, 8)),
    ]


def kv_cache_bytes_cases():
    return [
        Case("one layer, one head, one token", (1, 1, 1, 1, 1, 1)),
        Case("a long context with grouped-query attention", (32, 8, 128, 32_768, 2, 2)),
        Case("MiniLM-sized encoder shape as a decoder", (6, 12, 32, 512, 16, 4)),
    ]


def absmax_quantize_cases():
    g = torch.Generator().manual_seed(7010)
    spiky = torch.randn(33, 17, generator=g) * 0.05
    spiky[0, 16] = -1.5
    return [
        Case("bits=3 on a wide matrix", (torch.randn(4, 100, generator=g),), {"bits": 3}),
        Case("a negative spike, default bits", (spiky,)),
        Case("bits=5 on a 1-D tensor of 50", (torch.rand(50, generator=g) * 2 - 1,), {"bits": 5}),
        Case("halves at 4 bits", (torch.tensor([7.0, 0.5, -3.5, 4.5, -6.5, 2.0]),), {"bits": 4}),
        Case("bits=7 on a (3, 2, 5) tensor", (torch.randn(3, 2, 5, generator=g) * 3,), {"bits": 7}),
    ]


def dequantize_cases():
    g = torch.Generator().manual_seed(7011)
    return [
        Case("a large scale on 3-bit levels", (torch.randint(-3, 4, (9, 9), generator=g, dtype=torch.int8), 12.5)),
        Case("a tiny scale on a 1-D tensor", (torch.randint(-127, 128, (40,), generator=g, dtype=torch.int8), 3e-6)),
        Case("a 4-D tensor of levels", (torch.randint(-128, 128, (2, 2, 3, 3), generator=g, dtype=torch.int8), 0.7)),
    ]


def tokenizer_fertility_cases():
    return [
        Case("pieces of 1 (a character tokenizer by another name)", (PieceTokenizer(1), ["ab cd", "efg"])),
        Case("ids of pieces of 2 over four unequal texts",
             (IdTokenizer(2), ["one", "two words", "three short words", "a much longer text than the others here"])),
        Case("punctuation-heavy texts", (PunctuationTokenizer(), ["(a), [b]; {c}!", "x -- y ... z?"])),
        Case("characters across newlines", (CharacterTokenizer(), ["line one\nline two", "\tindented words"])),
    ]


CASES = {
    "weights_memory_gb": weights_memory_gb_cases,
    "kv_cache_bytes": kv_cache_bytes_cases,
    "absmax_quantize": absmax_quantize_cases,
    "dequantize": dequantize_cases,
    "tokenizer_fertility": tokenizer_fertility_cases,
}
