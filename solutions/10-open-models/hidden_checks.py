"""Hidden cases for chapter 10 (instructor's tree only: never released, never shown in feedback).

They test the same behaviour as the visible checks on other shapes and values, so that an answer
fitted to the visible cases fails. ``grader.hidden.run_hidden`` judges them with the visible judge.
Every largest_batch case stays clear of a boundary that float rounding could decide.
"""

import torch

from grader.checks.open_models import (CharacterTokenizer, IdTokenizer, PieceTokenizer, PunctuationTokenizer,
                                       RaisesCase, batch_case)
from grader.core import Case


def largest_batch_cases():
    return [
        batch_case("GPT-3-sized in bf16 on 16 x 80 GB with an fp16 cache of 2,048 tokens", 174_604_259_328, 2,
                   (96, 96, 128), 2_048, 2, 1_280),
        batch_case("a 7B model in int4 on a 24 GB card, int8 cache of 4,096 tokens, overhead 1.25 GB",
                   7e9, 0.5, (32, 32, 128), 4_096, 1, 24, 1.25),
        batch_case("a fractional budget that leaves room for exactly one sequence", 1e9, 2, (24, 16, 64), 2_048, 2,
                   2.3),
        batch_case("the overhead alone exceeds what the weights leave", 3e9, 2, (26, 8, 128), 8_192, 2, 8, 2.5),
        batch_case("GQA at long context: 80 layers, 8 KV heads of 128, 32,768 tokens, fp16 weights and cache, 8 x 80 GB",
                   70e9, 2, (80, 8, 128), 32_768, 2, 640),
    ]


def tokenizer_fertility_cases():
    return [
        Case("pieces of 1 (a character tokenizer by another name)", (PieceTokenizer(1), ["ab cd", "efg"])),
        Case("ids of pieces of 2 over four unequal texts",
             (IdTokenizer(2), ["one", "two words", "three short words", "a much longer text than the others here"])),
        Case("punctuation-heavy texts", (PunctuationTokenizer(), ["(a), [b]; {c}!", "x -- y ... z?"])),
        Case("characters across newlines", (CharacterTokenizer(), ["line one\nline two", "\tindented words"])),
    ]


def dequantize_cases():
    g = torch.Generator().manual_seed(7011)

    def levels(*shape, n=127):
        return torch.randint(-n, n + 1, shape, generator=g, dtype=torch.int8)

    return [
        Case("a large scale on 3-bit levels", (levels(9, 9, n=3), 12.5)),
        Case("a tiny scale on a 1-D tensor", (levels(40), 3e-6)),
        Case("blocks of 6 across the rows of (4, 9)", (levels(4, 9), torch.rand(6, generator=g) + 0.5),
             {"block_size": 6}),
        Case("blocks of 32 on a 4-D tensor", (levels(2, 2, 4, 8), torch.rand(4, generator=g) * 1e-3),
             {"block_size": 32}),
        RaisesCase("a float with a block size", (levels(4, 8), 0.25), {"block_size": 8}),
        RaisesCase("one scale too few", (levels(4, 8), torch.rand(3, generator=g)), {"block_size": 8}),
    ]


def absmax_quantize_cases():
    g = torch.Generator().manual_seed(7010)
    spiky = torch.randn(33, 17, generator=g) * 0.05
    spiky[0, 16] = -1.5
    outliers = torch.randn(8, 48, generator=g) * 0.02
    outliers[2, 5], outliers[6, 40] = 0.9, -0.7
    zeros = torch.randn(3, 4, 6, generator=g)
    zeros[1] = 0.0  # blocks 3 and 4 of 6 (blocks of 12): all zeros
    return [
        Case("bits=3 per tensor on a wide matrix", (torch.randn(4, 100, generator=g),), {"bits": 3}),
        Case("a negative spike per tensor, default bits", (spiky,)),
        Case("halves at 4 bits per tensor", (torch.tensor([7.0, 0.5, -3.5, 4.5, -6.5, 2.0]),), {"bits": 4}),
        Case("blocks of 16 at 4 bits on (8, 48) with two outliers", (outliers,), {"bits": 4, "block_size": 16}),
        Case("blocks of 32 at 8 bits on a 1-D tensor of 256", (torch.rand(256, generator=g) * 2 - 1,),
             {"block_size": 32}),
        Case("blocks of 8 at 5 bits across rows of 6", (torch.randn(4, 6, generator=g),), {"bits": 5, "block_size": 8}),
        Case("blocks of 12 at 3 bits with two all-zero blocks", (zeros,), {"bits": 3, "block_size": 12}),
        Case("halves in blocks of 3 at 4 bits", (torch.tensor([-7.0, 2.5, -4.5, 0.5, 7.0, -5.5]),),
             {"bits": 4, "block_size": 3}),
        RaisesCase("30 elements in blocks of 8", (torch.randn(5, 6, generator=g),), {"block_size": 8}),
    ]


CASES = {
    "largest_batch": largest_batch_cases,
    "tokenizer_fertility": tokenizer_fertility_cases,
    "dequantize": dequantize_cases,
    "absmax_quantize": absmax_quantize_cases,
}
