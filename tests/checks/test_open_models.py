"""Tests for the chapter-10 checks (grader/checks/open_models.py): largest_batch, tokenizer_fertility,
dequantize, absmax_quantize.

What is tested (COURSE.md, "One set of checks, three consumers"):
- every check passes the reference solution (from the solutions notebook) and other correct ways
  of writing the answer;
- every check fails a stub with "not implemented yet";
- every check fails common wrong answers, written here the way a learner would write them, and its
  feedback names the mistake;
- the figures the checks use agree with real models (BLOOM's count from its shape, SmolLM2's config), and
  largest_batch's cases stay clear of boundaries that float rounding decides;
- the per-block quantizer agrees with GGUF's own Q8_0 where their rules agree;
- the hidden checks pass the reference and fail an answer fitted to the visible cases.

The wrong answers are deliberately written out by hand, not taken from the grader's own list of
mistakes, so that a mistake the grader models differently from how learners write it shows up here.
"""

import math

import numpy as np
import pytest
import torch
from chapter_contract import A_MIXED_LIST, DEFAULT_GARBAGE, ChapterContract, assert_fails_naming, reference_fn

import grader
import grader.hidden
from grader import check
from grader.checks import open_models as checks

ASSIGNMENT = "10-open-models"

EXERCISES = ["largest_batch", "tokenizer_fertility", "dequantize", "absmax_quantize"]


def test_points():
    assert [grader.get_exercise(n).points for n in EXERCISES] == [2, 2, 2, 4]


# =============================================================== the figures the checks use

def test_bloom_count_is_its_shape():
    """BLOOM-176B: 70 layers of width 14,336, a vocabulary padded to 250,880, tied output, LayerNorm on the
    embeddings: embeddings + 70 x (12 h^2 + 13 h) + two LayerNorms."""
    h, layers, vocab = 14_336, 70, 250_880
    assert vocab * h + layers * (12 * h * h + 13 * h) + 2 * (2 * h) == checks.BLOOM_176B


def test_smollm2_count_and_shape_match_the_shipped_config():
    from transformers import AutoConfig, AutoModelForCausalLM

    from llmcourse.models import CAUSAL_LMS, DEFAULT_CAUSAL_LM, resolve

    config = AutoConfig.from_pretrained(resolve(None, CAUSAL_LMS, DEFAULT_CAUSAL_LM))
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    assert sum(p.numel() for p in model.parameters()) == checks.SMOLLM2_135M
    assert (config.num_hidden_layers, config.num_key_value_heads, config.head_dim) == checks.SMOLLM2_SHAPE


def _all_batch_cases(hidden_dir):
    return checks.largest_batch_cases() + grader.hidden.load_hidden_cases("largest_batch", hidden_dir)


def test_batch_cases_stay_clear_of_float_boundaries(hidden_dir):
    """Every case but the one built of exact integers on the boundary is at least 1e-4 sequences away from a
    whole number, so a float computation in any order gives the exact answer."""
    for case in _all_batch_cases(hidden_dir):
        quotient = checks.batch_quotient(*case.args, **case.kwargs)
        if "exactly on the boundary" in case.label:
            assert quotient.denominator == 1 and all(isinstance(a, int) for a in case.args), case.label
            continue
        assert abs(quotient - round(quotient)) > 1e-4, case.label


def test_batch_cases_cover_each_rule(hidden_dir):
    answers = [checks.largest_batch_exact(*c.args, **c.kwargs) for c in checks.largest_batch_cases()]
    quotients = [checks.batch_quotient(*c.args, **c.kwargs) for c in checks.largest_batch_cases()]
    assert any(q < 0 for q in quotients)  # the weights alone do not fit
    assert any(0 <= q < 1 for q in quotients)  # the weights fit, one sequence does not
    assert any(q - math.floor(q) >= 0.5 for q in quotients if q > 1)  # rounding to nearest differs
    assert any(c.args[1] != c.args[6] for c in checks.largest_batch_cases())  # weights' and cache's formats differ
    assert any("overhead_gb" in c.kwargs for c in checks.largest_batch_cases())
    assert 0 in answers and max(answers) > 100


def test_halfway_cases_hold_exact_halves():
    for case in checks.absmax_cases():
        if "halves" in case.label:
            x, _ = checks.absmax_levels(case)
            assert (x - np.floor(x) == 0.5).sum() >= 6, case.label


def test_block_cases_run_across_rows():
    """At least one visible block case has blocks that do not fit in a row, so that cutting rows fails."""
    assert any(c.kwargs.get("block_size") and c.args[0].shape[-1] % c.kwargs["block_size"]
               for c in checks.absmax_cases())
    assert any(c.kwargs.get("block_size") and c.args[0].shape[-1] % c.kwargs["block_size"]
               for c in checks.dequantize_cases())


def test_eight_bit_blocks_match_ggufs_q8_0_where_the_rules_agree(reference):
    """GGUF's Q8_0 (blocks of 32, absmax / 127) gives the same levels as absmax_quantize(w, 8, 32), except where
    the two rules differ: it stores the scale in fp16, multiplies by its inverse, and rounds halves away from
    zero. With weights whose block maxima are exact in fp16 and no value near a half, every level agrees."""
    from gguf import GGMLQuantizationType, quants

    g = torch.Generator().manual_seed(10)
    w = torch.randint(-127, 128, (8, 64), generator=g).float() / 64  # levels of 1/64: exact in fp16
    w.view(-1, 32)[:, 0] = 127 / 64  # every block's largest |w| is 127/64: its scale 1/64 is exact
    q, scale = reference_fn(reference, "absmax_quantize")(w, 8, 32)
    packed = quants.quantize(w.numpy(), GGMLQuantizationType.Q8_0).reshape(-1, 34)  # (blocks, 2 + 32 bytes)
    gguf_scale = packed[:, :2].copy().view(np.float16)[:, 0].astype(np.float32)
    gguf_levels = packed[:, 2:].copy().view(np.int8)
    np.testing.assert_array_equal(scale.numpy(), gguf_scale)
    np.testing.assert_array_equal(q.reshape(-1, 32).numpy(), gguf_levels)


# =============================================================== largest_batch

# ---- correct

def batch_loop(n_params, bytes_per_param, n_layers, n_kv_heads, head_dim, seq_len, kv_bytes_per_value, memory_gb,
               overhead_gb=0.0):
    """Adds sequences one at a time while they fit (slow for big batches, but the cases stay below 1,000)."""
    per_sequence = 2 * n_layers * n_kv_heads * head_dim * seq_len * kv_bytes_per_value
    used = n_params * bytes_per_param + overhead_gb * 1e9
    budget = memory_gb * 1e9
    if used > budget:
        return 0
    batch = 0
    while used + (batch + 1) * per_sequence <= budget:
        batch += 1
    return batch


def batch_in_gb(n_params, bytes_per_param, n_layers, n_kv_heads, head_dim, seq_len, kv_bytes_per_value, memory_gb,
                overhead_gb=0.0):
    weights_gb = n_params * bytes_per_param / 1e9
    cache_gb = n_layers * n_kv_heads * head_dim * seq_len * kv_bytes_per_value * 2 / 1e9
    return max(0, math.floor((memory_gb - overhead_gb - weights_gb) / cache_gb))


def batch_numpy(n_params, bytes_per_param, n_layers, n_kv_heads, head_dim, seq_len, kv_bytes_per_value, memory_gb,
                overhead_gb=0.0):
    room = memory_gb * 1e9 - overhead_gb * 1e9 - n_params * bytes_per_param
    per_sequence = np.prod([2, n_layers, n_kv_heads, head_dim, seq_len, kv_bytes_per_value], dtype=np.float64)
    return int(np.clip(np.floor(room / per_sequence), 0, None))  # a NumPy int64 would become a plain int too


# ---- wrong

def batch_only_keys(n_params, bytes_per_param, n_layers, n_kv_heads, head_dim, seq_len, kv_bytes_per_value, memory_gb,
                    overhead_gb=0.0):
    per_sequence = n_layers * n_kv_heads * head_dim * seq_len * kv_bytes_per_value
    room = (memory_gb - overhead_gb) * 1e9 - n_params * bytes_per_param
    return max(0, int(room // per_sequence))


def batch_gib(n_params, bytes_per_param, n_layers, n_kv_heads, head_dim, seq_len, kv_bytes_per_value, memory_gb,
              overhead_gb=0.0):
    per_sequence = 2 * n_layers * n_kv_heads * head_dim * seq_len * kv_bytes_per_value
    room = (memory_gb - overhead_gb) * 1024 ** 3 - n_params * bytes_per_param
    return max(0, int(room // per_sequence))


def batch_no_overhead(n_params, bytes_per_param, n_layers, n_kv_heads, head_dim, seq_len, kv_bytes_per_value,
                      memory_gb, overhead_gb=0.0):
    per_sequence = 2 * n_layers * n_kv_heads * head_dim * seq_len * kv_bytes_per_value
    return max(0, int((memory_gb * 1e9 - n_params * bytes_per_param) // per_sequence))


def batch_rounds(n_params, bytes_per_param, n_layers, n_kv_heads, head_dim, seq_len, kv_bytes_per_value, memory_gb,
                 overhead_gb=0.0):
    per_sequence = 2 * n_layers * n_kv_heads * head_dim * seq_len * kv_bytes_per_value
    room = (memory_gb - overhead_gb) * 1e9 - n_params * bytes_per_param
    return max(0, round(room / per_sequence))


def batch_strict(n_params, bytes_per_param, n_layers, n_kv_heads, head_dim, seq_len, kv_bytes_per_value, memory_gb,
                 overhead_gb=0.0):
    per_sequence = 2 * n_layers * n_kv_heads * head_dim * seq_len * kv_bytes_per_value
    used = n_params * bytes_per_param + overhead_gb * 1e9
    batch = 0
    while used + (batch + 1) * per_sequence < memory_gb * 1e9:
        batch += 1
    return batch


def batch_negative(n_params, bytes_per_param, n_layers, n_kv_heads, head_dim, seq_len, kv_bytes_per_value, memory_gb,
                   overhead_gb=0.0):
    per_sequence = 2 * n_layers * n_kv_heads * head_dim * seq_len * kv_bytes_per_value
    return int(((memory_gb - overhead_gb) * 1e9 - n_params * bytes_per_param) // per_sequence)


def batch_weights_format_for_cache(n_params, bytes_per_param, n_layers, n_kv_heads, head_dim, seq_len,
                                   kv_bytes_per_value, memory_gb, overhead_gb=0.0):
    per_sequence = 2 * n_layers * n_kv_heads * head_dim * seq_len * bytes_per_param
    room = (memory_gb - overhead_gb) * 1e9 - n_params * bytes_per_param
    return max(0, int(room // per_sequence))


def batch_float(n_params, bytes_per_param, n_layers, n_kv_heads, head_dim, seq_len, kv_bytes_per_value, memory_gb,
                overhead_gb=0.0):
    per_sequence = 2 * n_layers * n_kv_heads * head_dim * seq_len * kv_bytes_per_value
    return max(0.0, ((memory_gb - overhead_gb) * 1e9 - n_params * bytes_per_param) // per_sequence)


BATCH_CORRECT = [batch_loop, batch_in_gb, batch_numpy]

BATCH_MISTAKES = [
    pytest.param(batch_only_keys, "only keys counted", id="only-keys"),
    pytest.param(batch_gib, "GiB", id="GiB"),
    pytest.param(batch_no_overhead, "left out overhead_gb", id="no-overhead"),
    pytest.param(batch_rounds, "rounded the batch to the nearest whole number", id="rounds"),
    pytest.param(batch_strict, "equality taken as not fitting", id="strict"),
    pytest.param(batch_negative, "returned a negative batch", id="negative"),
    pytest.param(batch_weights_format_for_cache, "sized the KV cache with bytes_per_param", id="weights-format"),
    pytest.param(batch_float, "a batch size is a whole number of sequences, an int", id="float"),
]


@pytest.mark.parametrize("fn", BATCH_CORRECT, ids=lambda f: f.__name__)
def test_batch_accepts_other_correct_answers(fn):
    result = check("largest_batch", fn)
    assert result.passed, result.feedback


@pytest.mark.parametrize("fn, phrase", BATCH_MISTAKES)
def test_batch_names_the_mistake(fn, phrase):
    assert_fails_naming(check("largest_batch", fn), phrase)


# =============================================================== tokenizer_fertility

# ---- correct

def fertility_loop(tokenize, texts):
    tokens = words = 0
    for text in texts:
        tokens += len(tokenize(text))
        words += len(text.split())
    return tokens / words


def fertility_joined_words(tokenize, texts):
    n_tokens = sum(map(len, map(tokenize, texts)))
    return n_tokens / len(" ".join(texts).split())


def fertility_numpy(tokenize, texts):
    counts = np.array([[len(tokenize(t)), len(t.split())] for t in texts])
    return counts[:, 0].sum() / counts[:, 1].sum()  # a NumPy float: a plain float once returned


# ---- wrong

def fertility_per_character(tokenize, texts):
    return sum(len(tokenize(t)) for t in texts) / sum(len(t) for t in texts)


def fertility_mean_of_ratios(tokenize, texts):
    ratios = [len(tokenize(t)) / len(t.split()) for t in texts]
    return sum(ratios) / len(ratios)


def fertility_split_on_space(tokenize, texts):
    return sum(len(tokenize(t)) for t in texts) / sum(len(t.split(" ")) for t in texts)


def fertility_inverted(tokenize, texts):
    return sum(len(t.split()) for t in texts) / sum(len(tokenize(t)) for t in texts)


def fertility_return_in_loop(tokenize, texts):
    tokens = words = 0
    for text in texts:
        tokens += len(tokenize(text))
        words += len(text.split())
        return tokens / words


def fertility_distinct(tokenize, texts):
    return sum(len(set(tokenize(t))) for t in texts) / sum(len(t.split()) for t in texts)


def fertility_floor(tokenize, texts):
    return sum(len(tokenize(t)) for t in texts) // sum(len(t.split()) for t in texts)


def fertility_tokenizes_the_list(tokenize, texts):
    return len(tokenize(texts)) / sum(len(t.split()) for t in texts)


FERTILITY_CORRECT = [fertility_loop, fertility_joined_words, fertility_numpy]

FERTILITY_MISTAKES = [
    pytest.param(fertility_per_character, "fertility per character instead of per word", id="per-character"),
    pytest.param(fertility_mean_of_ratios, "averaged each text's tokens per word", id="mean-of-ratios"),
    pytest.param(fertility_split_on_space, "counted words with split(' ')", id="split-space"),
    pytest.param(fertility_inverted, "words per token", id="inverted"),
    pytest.param(fertility_return_in_loop, "only the first text counted", id="return-in-loop"),
    pytest.param(fertility_distinct, "counted distinct tokens", id="distinct"),
    pytest.param(fertility_floor, "floor division", id="floor"),
    pytest.param(fertility_tokenizes_the_list, "call it on each text", id="tokenizes-the-list"),
]


@pytest.mark.parametrize("fn", FERTILITY_CORRECT, ids=lambda f: f.__name__)
def test_fertility_accepts_other_correct_answers(fn):
    result = check("tokenizer_fertility", fn)
    assert result.passed, result.feedback


@pytest.mark.parametrize("fn, phrase", FERTILITY_MISTAKES)
def test_fertility_names_the_mistake(fn, phrase):
    assert_fails_naming(check("tokenizer_fertility", fn), phrase)


# =============================================================== dequantize

# ---- correct

def dequantize_repeat_interleave(q, scale, block_size=None):
    if block_size is None:
        if isinstance(scale, torch.Tensor):
            raise ValueError("a tensor of scales needs a block_size")
        return torch.mul(q.to(torch.float32), scale)
    if not torch.is_tensor(scale) or q.numel() % block_size or len(scale) * block_size != q.numel():
        raise ValueError("scale and block_size do not match q")
    return (q.flatten().float() * scale.repeat_interleave(block_size)).view(q.shape)


def dequantize_loop_over_blocks(q, scale, block_size=None):
    if block_size is None:
        if not isinstance(scale, (int, float)):
            raise ValueError("per tensor, scale is one number")
        return (q.double() * scale).float()
    if isinstance(scale, float) or q.numel() % block_size != 0 or scale.numel() != q.numel() // block_size:
        raise ValueError("scale and block_size do not match q")
    flat = q.flatten().float()
    out = torch.empty_like(flat)
    for i in range(len(scale)):
        out[i * block_size:(i + 1) * block_size] = flat[i * block_size:(i + 1) * block_size] * scale[i]
    return out.reshape(q.shape)


# ---- wrong

def dequantize_divides(q, scale, block_size=None):
    if block_size is None:
        if not isinstance(scale, float):
            raise ValueError("float")
        return q.float() / scale
    if not isinstance(scale, torch.Tensor) or q.numel() % block_size or scale.numel() != q.numel() // block_size:
        raise ValueError("blocks")
    return (q.reshape(-1, block_size).float() / scale[:, None]).reshape(q.shape)


def dequantize_tiled(q, scale, block_size=None):
    if block_size is None:
        if not isinstance(scale, float):
            raise ValueError("float")
        return q.float() * scale
    if not isinstance(scale, torch.Tensor) or q.numel() % block_size or scale.numel() != q.numel() // block_size:
        raise ValueError("blocks")
    return (q.flatten().float() * scale.repeat(block_size)).reshape(q.shape)


def dequantize_no_checks(q, scale, block_size=None):
    if block_size is None:
        return q.float() * scale
    return (q.reshape(-1, block_size).float() * scale[:, None]).reshape(q.shape)


def dequantize_per_row_blocks(q, scale, block_size=None):
    if block_size is None:
        if not isinstance(scale, float):
            raise ValueError("float")
        return q.float() * scale
    if not isinstance(scale, torch.Tensor) or q.numel() % block_size or scale.numel() != q.numel() // block_size:
        raise ValueError("blocks")
    blocks = q.reshape(*q.shape[:-1], -1, block_size).float()  # cuts each row: fails when a block crosses rows
    return (blocks * scale.reshape(*blocks.shape[:-1], 1)).reshape(q.shape)


def dequantize_float64(q, scale, block_size=None):
    if block_size is None:
        if not isinstance(scale, float):
            raise ValueError("float")
        return q.double() * scale
    if not isinstance(scale, torch.Tensor) or q.numel() % block_size or scale.numel() != q.numel() // block_size:
        raise ValueError("blocks")
    return (q.reshape(-1, block_size).double() * scale.double()[:, None]).reshape(q.shape)


def dequantize_unsigned(q, scale, block_size=None):
    if block_size is None:
        if not isinstance(scale, float):
            raise ValueError("float")
        return q.to(torch.uint8).float() * scale
    if not isinstance(scale, torch.Tensor) or q.numel() % block_size or scale.numel() != q.numel() // block_size:
        raise ValueError("blocks")
    return (q.to(torch.uint8).reshape(-1, block_size).float() * scale[:, None]).reshape(q.shape)


def dequantize_in_place(q, scale, block_size=None):
    if block_size is None:
        if not isinstance(scale, float):
            raise ValueError("float")
        q *= scale
        return q
    if not isinstance(scale, torch.Tensor) or q.numel() % block_size or scale.numel() != q.numel() // block_size:
        raise ValueError("blocks")
    return (q.reshape(-1, block_size).float() * scale[:, None]).reshape(q.shape)


DEQUANTIZE_CORRECT = [dequantize_repeat_interleave, dequantize_loop_over_blocks]

DEQUANTIZE_MISTAKES = [
    pytest.param(dequantize_divides, "divided by the scale", id="divides"),
    pytest.param(dequantize_tiled, "each scale applied to every n_blocks-th element", id="tiled"),
    pytest.param(dequantize_no_checks, "raise ValueError yourself", id="no-checks"),
    pytest.param(dequantize_per_row_blocks, "a block need not fit in a row", id="per-row"),
    pytest.param(dequantize_float64, "torch.float64 instead of float32", id="float64"),
    pytest.param(dequantize_unsigned, "read q as unsigned", id="uint8"),
    pytest.param(dequantize_in_place, "cannot store floats", id="in-place"),
]


@pytest.mark.parametrize("fn", DEQUANTIZE_CORRECT, ids=lambda f: f.__name__)
def test_dequantize_accepts_other_correct_answers(fn):
    result = check("dequantize", fn)
    assert result.passed, result.feedback


@pytest.mark.parametrize("fn, phrase", DEQUANTIZE_MISTAKES)
def test_dequantize_names_the_mistake(fn, phrase):
    assert_fails_naming(check("dequantize", fn), phrase)


# =============================================================== absmax_quantize

# ---- correct

def absmax_multiply_by_inverse(w, bits=8, block_size=None):
    levels = 2 ** (bits - 1) - 1
    if block_size is None:
        largest = float(w.abs().max())
        if largest == 0:
            return torch.zeros_like(w, dtype=torch.int8), 0.0
        return torch.round(w * (levels / largest)).to(torch.int8), largest / levels  # the last bit may differ
    if w.numel() % block_size:
        raise ValueError("not whole blocks")
    blocks = w.flatten().view(-1, block_size)
    scale = blocks.abs().max(dim=1).values / levels
    inverse = torch.where(scale == 0, torch.zeros_like(scale), 1 / scale)
    return torch.round(blocks * inverse[:, None]).to(torch.int8).view(w.shape), scale


def absmax_numpy(w, bits=8, block_size=None):
    top = 2 ** (bits - 1) - 1
    a = w.numpy()
    groups = a.reshape(1, -1) if block_size is None else a.reshape(-1, block_size) if a.size % block_size == 0 else None
    if groups is None:
        raise ValueError("w does not split into whole blocks")
    scale = (np.abs(groups).max(axis=1) / top).astype(np.float64 if block_size is None else np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        q = np.nan_to_num(np.rint(groups / scale[:, None]))  # rint: halves to even, like torch.round
    q = torch.from_numpy(q.astype(np.int8).reshape(a.shape))
    return (q, float(scale[0])) if block_size is None else (q, torch.from_numpy(scale))


def absmax_loop_over_blocks(w, bits=8, block_size=None):
    n = 2 ** (bits - 1) - 1
    flat = w.flatten()
    size = flat.numel() if block_size is None else block_size
    if flat.numel() % size:
        raise ValueError("not whole blocks")
    q = torch.zeros(flat.shape, dtype=torch.int8)
    scales = []
    for start in range(0, flat.numel(), size):
        block = flat[start:start + size]
        scale = block.abs().max() / n
        if scale > 0:
            q[start:start + size] = (block / scale).round().clamp(-128, 127).to(torch.int8)
        scales.append(scale)
    if block_size is None:
        return q.view(w.shape), scales[0].item()
    return q.view(w.shape), torch.stack(scales)


def absmax_float64(w, bits=8, block_size=None):
    top = 2 ** (bits - 1) - 1
    if block_size is None:
        scale = w.double().abs().max().item() / top
        return (w.double() / scale).nan_to_num().round().to(torch.int8), scale
    if w.numel() % block_size:
        raise ValueError("not whole blocks")
    blocks = w.double().reshape(-1, block_size)
    scale = (blocks.abs().amax(dim=1) / top).float()
    q = (blocks / scale.double()[:, None]).nan_to_num().round().to(torch.int8)
    return q.reshape(w.shape), scale


# ---- wrong (each written in full, the way a learner would, with the rest right)

def _absmax(w, bits=8, block_size=None, divisor=None, rounding=torch.round, layout="flat", scale_dtype=torch.float32,
            one_scale=False):
    divisor = 2 ** (bits - 1) - 1 if divisor is None else divisor
    if block_size is None or one_scale:
        largest = w.abs().max().item()
        scale = largest / divisor
        q = rounding(w / scale) if largest else torch.zeros_like(w)
        return q.to(torch.int8), scale
    if w.numel() % block_size:
        raise ValueError("not whole blocks")
    blocks = {"flat": lambda: w.reshape(-1, block_size), "columns": lambda: w.T.reshape(-1, block_size),
              "strided": lambda: w.reshape(block_size, -1).T}[layout]()
    scale = blocks.abs().amax(dim=1) / divisor
    step = torch.where(scale > 0, scale, torch.ones_like(scale))[:, None]
    q = rounding(blocks / step).to(torch.int8)
    q = {"flat": lambda: q.reshape(w.shape), "columns": lambda: q.reshape(w.T.shape).T,
         "strided": lambda: q.T.reshape(w.shape)}[layout]()
    return q, scale.to(scale_dtype)


def absmax_divides_by_128(w, bits=8, block_size=None):
    return _absmax(w, bits, block_size, divisor=2 ** (bits - 1))


def absmax_one_scale(w, bits=8, block_size=None):
    if block_size is not None and w.numel() % block_size:
        raise ValueError("not whole blocks")
    return _absmax(w, bits, block_size, one_scale=True)


def absmax_columns(w, bits=8, block_size=None):
    if w.dim() != 2:
        return _absmax(w, bits, block_size)
    return _absmax(w, bits, block_size, layout="columns")


def absmax_strided(w, bits=8, block_size=None):
    return _absmax(w, bits, block_size, layout="strided")


def absmax_per_row(w, bits=8, block_size=None):
    if block_size is None:
        return _absmax(w, bits)
    if w.numel() % block_size:
        raise ValueError("not whole blocks")
    rows = w.reshape(w.shape[0], -1)
    scale = rows.abs().amax(dim=1) / (2 ** (bits - 1) - 1)
    q = torch.round(rows / torch.where(scale > 0, scale, torch.ones_like(scale))[:, None])
    return q.to(torch.int8).reshape(w.shape), scale


def absmax_half_away(w, bits=8, block_size=None):
    return _absmax(w, bits, block_size, rounding=lambda x: torch.sign(x) * torch.floor(x.abs() + 0.5))


def absmax_scale_float64(w, bits=8, block_size=None):
    return _absmax(w, bits, block_size, scale_dtype=torch.float64)


def absmax_truncates(w, bits=8, block_size=None):
    return _absmax(w, bits, block_size, rounding=lambda x: x)  # .to(torch.int8) truncates toward zero


def absmax_half_up(w, bits=8, block_size=None):
    return _absmax(w, bits, block_size, rounding=lambda x: torch.floor(x + 0.5))


def absmax_q4_0(w, bits=8, block_size=None):
    """GGUF's Q4_0 rule at every bits: the signed extreme over -2^(bits-1), levels -2^(bits-1)..2^(bits-1)-1."""
    top = 2 ** (bits - 1)
    groups = w.reshape(1, -1) if block_size is None else w.reshape(-1, block_size)
    extreme = groups.gather(1, groups.abs().argmax(dim=1, keepdim=True))[:, 0]
    scale = extreme / -top
    step = torch.where(scale != 0, scale, torch.ones_like(scale))[:, None]
    q = torch.round(groups / step).clamp(-top, top - 1).to(torch.int8).reshape(w.shape)
    return (q, scale.item()) if block_size is None else (q, scale)


def absmax_zero_block_nan(w, bits=8, block_size=None):
    """0 / 0 in an all-zero block, the NaN levels cast to int8 as some platforms do (to -128)."""
    n = 2 ** (bits - 1) - 1
    if block_size is None:
        scale = w.abs().max().item() / n
        return torch.round(w / scale).nan_to_num(-128.0).to(torch.int8), scale
    if w.numel() % block_size:
        raise ValueError("not whole blocks")
    blocks = w.reshape(-1, block_size)
    scale = blocks.abs().amax(dim=1) / n
    q = torch.round(blocks / scale[:, None]).nan_to_num(-128.0).to(torch.int8)
    return q.reshape(w.shape), scale


def absmax_zero_block_scale_one(w, bits=8, block_size=None):
    q, scale = _absmax(w, bits, block_size)
    if block_size is not None:
        scale = torch.where(scale == 0, torch.ones_like(scale), scale)
    return q, scale


def absmax_no_value_error(w, bits=8, block_size=None):
    if block_size is None:
        return _absmax(w, bits)
    flat = w.flatten()
    pad = (-flat.numel()) % block_size
    padded = torch.cat([flat, flat.new_zeros(pad)])
    q, scale = _absmax(padded, bits, block_size)
    return q[:flat.numel()].reshape(w.shape), scale


def absmax_mean_scale(w, bits=8, block_size=None):
    n = 2 ** (bits - 1) - 1
    scale = w.abs().mean().item() / n
    return torch.round(w / scale).clamp(-n, n).to(torch.int8), scale


def absmax_float_q(w, bits=8, block_size=None):
    q, scale = _absmax(w, bits, block_size)
    return q.float(), scale


def absmax_max_not_abs(w, bits=8, block_size=None):
    n = 2 ** (bits - 1) - 1
    if block_size is None:
        scale = w.max().item() / n
        return torch.round(w / scale).clamp(-n, n).to(torch.int8), scale
    return _absmax(w, bits, block_size)


def absmax_ignores_bits(w, bits=8, block_size=None):
    return _absmax(w, 8, block_size)


def absmax_tensor_scale(w, bits=8, block_size=None):
    q, scale = _absmax(w, bits, block_size)
    return q, torch.tensor(scale) if block_size is None else scale


def absmax_unsigned(w, bits=8, block_size=None):
    q, scale = _absmax(w, bits, block_size)
    return q.to(torch.uint8), scale


def absmax_returns_the_round_trip(w, bits=8, block_size=None):
    q, scale = _absmax(w, bits, block_size)
    return q.float() * (scale if block_size is None else scale.repeat_interleave(block_size).view(w.shape))


ABSMAX_CORRECT = [absmax_multiply_by_inverse, absmax_numpy, absmax_loop_over_blocks, absmax_float64]

ABSMAX_MISTAKES = [
    pytest.param(absmax_divides_by_128, "one level outside the range; in int8, 128 overflows", id="divide-by-128"),
    pytest.param(absmax_one_scale, "one scale for the whole tensor although block_size was given", id="one-scale"),
    pytest.param(absmax_columns, "blocks cut down the columns", id="columns"),
    pytest.param(absmax_strided, "blocks of every n_blocks-th element", id="strided"),
    pytest.param(absmax_per_row, "one scale per row instead of per block", id="per-row"),
    pytest.param(absmax_half_away, "rounded halves away from zero", id="half-away"),
    pytest.param(absmax_scale_float64, "scales stored as torch.float64", id="scale-float64"),
    pytest.param(absmax_truncates, "truncated instead of rounding", id="truncation"),
    pytest.param(absmax_half_up, "rounded halves up", id="half-up"),
    pytest.param(absmax_q4_0, "Q4_0's rule", id="q4_0"),
    pytest.param(absmax_zero_block_nan, "divided 0 by 0", id="zero-block-nan"),
    pytest.param(absmax_zero_block_scale_one, "an all-zero block got a nonzero scale", id="zero-block-scale"),
    pytest.param(absmax_no_value_error, "no check that w splits into whole blocks", id="no-value-error"),
    pytest.param(absmax_mean_scale, "scale from the mean of |w|", id="mean"),
    pytest.param(absmax_float_q, "returned a float tensor instead of int8", id="float-q"),
    pytest.param(absmax_max_not_abs, "the largest w instead of the largest |w|", id="max-not-abs"),
    pytest.param(absmax_ignores_bits, "ignored `bits`", id="ignores-bits"),
    pytest.param(absmax_tensor_scale, "without block_size it is a Python float", id="tensor-scale"),
    pytest.param(absmax_unsigned, "stored q as unsigned (torch.uint8)", id="uint8"),
    pytest.param(absmax_returns_the_round_trip, "return the pair (q, scale)", id="round-trip"),
]


@pytest.mark.parametrize("fn", ABSMAX_CORRECT, ids=lambda f: f.__name__)
def test_absmax_accepts_other_correct_answers(fn):
    result = check("absmax_quantize", fn)
    assert result.passed, result.feedback


@pytest.mark.parametrize("fn, phrase", ABSMAX_MISTAKES)
def test_absmax_names_the_mistake(fn, phrase):
    assert_fails_naming(check("absmax_quantize", fn), phrase)


def test_absmax_divide_by_128_is_named_once_over_different_bits_and_modes():
    result = check("absmax_quantize", absmax_divides_by_128)
    assert len(result.mistakes) == 1 and result.feedback.count("Likely mistake") == 1


def test_the_old_signature_is_told_to_take_block_size():
    def absmax_quantize(w, bits=8):
        return _absmax(w, bits)

    def dequantize(q, scale):
        return q.float() * scale

    assert_fails_naming(check("absmax_quantize", absmax_quantize), "the function takes block_size")
    assert_fails_naming(check("dequantize", dequantize), "the function takes block_size")


def test_absmax_changing_w_in_place_fails():
    def in_place(w, bits=8, block_size=None):
        q, scale = _absmax(w, bits, block_size)
        w.zero_()
        return q, scale

    assert_fails_naming(check("absmax_quantize", in_place), "in place")


@pytest.mark.parametrize("call", [
    lambda w, bits, scale: torch.quantize_per_tensor(w, scale, 0, torch.qint8).int_repr(),
    lambda w, bits, scale: torch.from_numpy(__import__("gguf").quants.quantize(
        w.reshape(-1, 32).numpy(), __import__("gguf").GGMLQuantizationType.Q8_0)),
    lambda w, bits, scale: torch.from_numpy(__import__("gguf").quants.Q8_0.quantize(w.reshape(-1, 32).numpy())),
], ids=["torch", "gguf", "gguf-Q8_0"])
def test_absmax_refuses_the_library_quantizers(call):
    def absmax_quantize(w, bits=8, block_size=None):
        scale = w.abs().max().item() / (2 ** (bits - 1) - 1)
        return call(w, bits, scale), scale

    result = check("absmax_quantize", absmax_quantize)
    assert not result.passed
    assert any("which this exercise asks you to build yourself" in m for m in result.mistakes), result.feedback


def test_the_gguf_quantizers_are_restored_after_a_check(reference):
    from gguf import quants

    before = (quants.quantize, vars(quants.Q8_0).get("quantize"), vars(quants.Q4_0).get("quantize"))
    check("absmax_quantize", reference_fn(reference, "absmax_quantize"))
    assert (quants.quantize, vars(quants.Q8_0).get("quantize"), vars(quants.Q4_0).get("quantize")) == before


def test_case_tokenizers_pickle():
    """Cases are built in the grading process and sent to a child process."""
    import pickle

    for case in checks.fertility_cases():
        tokenize, texts = pickle.loads(pickle.dumps(case.args))
        assert tokenize(texts[0]) == case.args[0](texts[0])


# =============================================================== the API around a check

def test_checks_are_fast(reference):
    import time

    start = time.perf_counter()
    for name in EXERCISES:
        check(name, reference_fn(reference, name))
    assert time.perf_counter() - start < 10  # generous: the machine may be shared


# =============================================================== hidden checks

def _fitted(name, reference):
    """An answer fitted to the visible cases: it looks up their results and returns something else otherwise."""
    fn = reference_fn(reference, name)

    def key(args):
        return repr([(tuple(a.shape), round(float(a.double().sum()), 4)) if isinstance(a, torch.Tensor)
                     else (a if isinstance(a, (int, float, str, list)) else type(a).__name__) for a in args])

    def lookup(case):
        try:
            return case.call(fn)
        except ValueError as err:
            return err

    table = {key(case.args + tuple(case.kwargs.values())): lookup(case)
             for case in grader.get_exercise(name).make_cases()}
    fallback = {"absmax_quantize": lambda w, bits=8, block_size=None: (torch.zeros_like(w, dtype=torch.int8), 1.0),
                "dequantize": lambda q, s, block_size=None: torch.zeros(q.shape),
                "largest_batch": lambda *a, **k: 3}.get(name, lambda *a, **k: 0.0)

    def fitted(*args, **kwargs):
        found = table.get(key(args + tuple(kwargs.values())))
        if isinstance(found, ValueError):
            raise found
        return found if found is not None else fallback(*args, **kwargs)

    return fitted


@pytest.mark.parametrize("name", EXERCISES)
def test_fitted_answer_passes_the_visible_check(reference, name):
    assert check(name, _fitted(name, reference)).passed


@pytest.mark.parametrize("name", EXERCISES)
def test_hidden_checks_pass_other_correct_answers(hidden_dir, name, capsys):
    right = {"largest_batch": batch_numpy, "tokenizer_fertility": fertility_joined_words,
             "dequantize": dequantize_loop_over_blocks, "absmax_quantize": absmax_multiply_by_inverse}[name]
    grader.hidden.run_hidden(name, right)
    assert "hidden tests passed" in capsys.readouterr().out


@pytest.mark.parametrize("name, wrong, phrase", [
    ("largest_batch", batch_only_keys, "only keys counted"),
    ("dequantize", dequantize_tiled, "each scale applied to every n_blocks-th element"),
    ("absmax_quantize", absmax_one_scale, "one scale for the whole tensor although block_size was given"),
    ("absmax_quantize", absmax_divides_by_128, "one level outside the range"),
])
def test_hidden_checks_name_the_mistake(hidden_dir, name, wrong, phrase):
    with pytest.raises(AssertionError) as info:
        grader.hidden.run_hidden(name, wrong)
    assert phrase in str(info.value)


def test_hidden_fertility_cases_are_other_than_one(hidden_dir):
    for case in grader.hidden.load_hidden_cases("tokenizer_fertility", hidden_dir):
        assert checks.fertility(*case.args) != pytest.approx(1.0), case.label


# =============================================================== the chapter contract (tests/chapter_contract.py)

class TestChapterContract(ChapterContract):
    ASSIGNMENT = ASSIGNMENT
    EXERCISES = EXERCISES
    HIDDEN_WRONG_NAMES_A_MISTAKE = False  # a fitted answer returns a constant off the visible cases

    NAMED_MISTAKES = [  # less obvious mistakes: every failing case still names one
        pytest.param("largest_batch", batch_only_keys, id="batch-only-keys"),
        pytest.param("largest_batch", batch_gib, id="batch-GiB"),
        pytest.param("largest_batch", batch_rounds, id="batch-rounds"),
        pytest.param("largest_batch", batch_negative, id="batch-negative"),
        pytest.param("largest_batch", batch_float, id="batch-float"),
        pytest.param("tokenizer_fertility", fertility_mean_of_ratios, id="fertility-mean-of-ratios"),
        pytest.param("tokenizer_fertility", fertility_split_on_space, id="fertility-split-space"),
        pytest.param("tokenizer_fertility", fertility_per_character, id="fertility-per-character"),
        pytest.param("dequantize", dequantize_tiled, id="dequantize-tiled"),
        pytest.param("dequantize", dequantize_no_checks, id="dequantize-no-checks"),
        pytest.param("dequantize", dequantize_per_row_blocks, id="dequantize-per-row"),
        pytest.param("dequantize", dequantize_float64, id="dequantize-float64"),
        pytest.param("dequantize", dequantize_unsigned, id="dequantize-uint8"),
        pytest.param("absmax_quantize", absmax_divides_by_128, id="absmax-128"),
        pytest.param("absmax_quantize", absmax_one_scale, id="absmax-one-scale"),
        pytest.param("absmax_quantize", absmax_columns, id="absmax-columns"),
        pytest.param("absmax_quantize", absmax_strided, id="absmax-strided"),
        pytest.param("absmax_quantize", absmax_per_row, id="absmax-per-row"),
        pytest.param("absmax_quantize", absmax_half_away, id="absmax-half-away"),
        pytest.param("absmax_quantize", absmax_scale_float64, id="absmax-scale-float64"),
        pytest.param("absmax_quantize", absmax_q4_0, id="absmax-q4_0"),
        pytest.param("absmax_quantize", absmax_zero_block_nan, id="absmax-zero-block-nan"),
        pytest.param("absmax_quantize", absmax_no_value_error, id="absmax-no-value-error"),
        pytest.param("absmax_quantize", absmax_truncates, id="absmax-truncates"),
        pytest.param("absmax_quantize", absmax_float_q, id="absmax-float"),
        pytest.param("absmax_quantize", absmax_unsigned, id="absmax-uint8"),
        pytest.param("absmax_quantize", absmax_returns_the_round_trip, id="absmax-round-trip"),
    ]
    ALL_OR_NOTHING = [
        ("largest_batch", batch_loop, batch_only_keys),
        ("tokenizer_fertility", fertility_loop, fertility_per_character),
        ("dequantize", dequantize_repeat_interleave, dequantize_divides),
        ("absmax_quantize", absmax_numpy, absmax_truncates),
    ]
    GARBAGE = DEFAULT_GARBAGE + [A_MIXED_LIST]

    def hidden_wrong(self, exercise, reference):
        return _fitted(exercise, reference)
