"""Tests for the chapter-10 checks (grader/checks/open_models.py): weights_memory_gb, kv_cache_bytes,
absmax_quantize, dequantize, tokenizer_fertility.

What is tested (COURSE.md, "One set of checks, three consumers"):
- every check passes the reference solution (from the solutions notebook) and other correct ways
  of writing the answer;
- every check fails a stub with "not implemented yet";
- every check fails common wrong answers, written here the way a learner would write them, and its
  feedback names the mistake;
- the figures the checks use agree with real models (BLOOM's count from its shape, SmolLM2's config);
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

EXERCISES = ["weights_memory_gb", "kv_cache_bytes", "absmax_quantize", "dequantize", "tokenizer_fertility"]


def test_points():
    assert [grader.get_exercise(n).points for n in EXERCISES] == [1, 2, 3, 1, 2]


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
    assert (config.num_hidden_layers, config.num_key_value_heads, config.head_dim) == (30, 3, 64)
    label = checks.kv_cache_cases()[2].label
    assert "30 layers, 3 key/value heads of 64" in label


def test_opt_case_is_350_gb(reference):
    assert reference_fn(reference, "weights_memory_gb")(175e9, 2) == pytest.approx(350.0)
    assert "350 GB" in checks.weights_memory_cases()[0].label


def test_halfway_case_holds_exact_halves():
    case = checks.absmax_cases()[-1]
    x = case.args[0].double() / checks.absmax_scale(case.args[0], case.kwargs["bits"])
    assert (x - x.floor() == 0.5).sum() == 6


@pytest.mark.parametrize("case", checks.fertility_cases(), ids=lambda c: c.label[:40])
def test_every_fertility_case_is_other_than_one(case):
    assert checks.fertility(*case.args) != pytest.approx(1.0)


def test_toy_kv_case_tells_every_factor_apart():
    """On the toy case each named mistake gives its own number, none equal to the right one."""
    case = checks.kv_cache_cases()[-1]
    values = [case.call(m.make) for m in checks.kv_cache_mistakes()]
    assert len(set(values)) == len(values)
    assert checks.kv_cache(*case.args) not in values


# =============================================================== weights_memory_gb

# ---- correct

def memory_billions_times_bytes(n_params, bytes_per_param):
    return n_params / 1e9 * bytes_per_param


def memory_numpy(n_params, bytes_per_param):
    return np.multiply(n_params, bytes_per_param) / 10 ** 9  # a NumPy float: a plain float once returned


def memory_step_by_step(n_params, bytes_per_param):
    total_bytes = n_params * bytes_per_param
    bytes_per_gb = 1000 * 1000 * 1000
    return total_bytes / bytes_per_gb


# ---- wrong

def memory_gib(n_params, bytes_per_param):
    return n_params * bytes_per_param / 1024 ** 3


def memory_gigabits(n_params, bytes_per_param):
    bits = n_params * bytes_per_param * 8
    return bits / 1e9


def memory_bytes(n_params, bytes_per_param):
    return n_params * bytes_per_param


def memory_mb(n_params, bytes_per_param):
    return n_params * bytes_per_param / 1e6


def memory_floor(n_params, bytes_per_param):
    return n_params * bytes_per_param // 1e9


def memory_no_bytes(n_params, bytes_per_param):
    return n_params / 1e9


def memory_bytes_as_bits(n_params, bytes_per_param):
    return n_params * (bytes_per_param / 8) / 1e9


def memory_tensor(n_params, bytes_per_param):
    return torch.tensor(n_params * bytes_per_param / 1e9)


def memory_string(n_params, bytes_per_param):
    return f"{n_params * bytes_per_param / 1e9:.1f} GB"


MEMORY_CORRECT = [memory_billions_times_bytes, memory_numpy, memory_step_by_step]

MEMORY_MISTAKES = [
    pytest.param(memory_gib, "(GiB) instead of 1e9", id="GiB"),
    pytest.param(memory_gigabits, "returned gigabits", id="gigabits"),
    pytest.param(memory_bytes, "returned bytes", id="bytes"),
    pytest.param(memory_mb, "returned MB", id="MB"),
    pytest.param(memory_floor, "floor division", id="floor"),
    pytest.param(memory_no_bytes, "forgot bytes_per_param", id="no-bytes"),
    pytest.param(memory_bytes_as_bits, "treated bytes_per_param as bits", id="bytes-as-bits"),
    pytest.param(memory_tensor, "return a Python float (use .item())", id="tensor"),
    pytest.param(memory_string, "returned formatted text", id="string"),
]


@pytest.mark.parametrize("fn", MEMORY_CORRECT, ids=lambda f: f.__name__)
def test_memory_accepts_other_correct_answers(fn):
    result = check("weights_memory_gb", fn)
    assert result.passed, result.feedback


@pytest.mark.parametrize("fn, phrase", MEMORY_MISTAKES)
def test_memory_names_the_mistake(fn, phrase):
    assert_fails_naming(check("weights_memory_gb", fn), phrase)


def test_memory_feedback_gives_the_ratio():
    assert "1/1.074 of the expected value" in check("weights_memory_gb", memory_gib).feedback


# =============================================================== kv_cache_bytes

# ---- correct

def kv_per_token(n_layers, n_kv_heads, head_dim, seq_len, batch_size, bytes_per_value):
    per_token = 2 * n_layers * n_kv_heads * head_dim * bytes_per_value  # keys + values, every layer
    return per_token * seq_len * batch_size


def kv_loop_over_layers(n_layers, n_kv_heads, head_dim, seq_len, batch_size, bytes_per_value):
    total = 0
    for _ in range(n_layers):
        keys = batch_size * n_kv_heads * seq_len * head_dim * bytes_per_value
        values = batch_size * n_kv_heads * seq_len * head_dim * bytes_per_value
        total += keys + values
    return total


def kv_math_prod(n_layers, n_kv_heads, head_dim, seq_len, batch_size, bytes_per_value):
    return math.prod([2, n_layers, n_kv_heads, head_dim, seq_len, batch_size, bytes_per_value])


def kv_numpy_int(n_layers, n_kv_heads, head_dim, seq_len, batch_size, bytes_per_value):
    return np.prod(np.array([2, n_layers, n_kv_heads, head_dim, seq_len, batch_size, bytes_per_value],
                            dtype=np.int64))


# ---- wrong

def kv_only_keys(n_layers, n_kv_heads, head_dim, seq_len, batch_size, bytes_per_value):
    return n_layers * n_kv_heads * head_dim * seq_len * batch_size * bytes_per_value


def kv_one_layer(n_layers, n_kv_heads, head_dim, seq_len, batch_size, bytes_per_value):
    return 2 * n_kv_heads * head_dim * seq_len * batch_size * bytes_per_value


def kv_no_batch(n_layers, n_kv_heads, head_dim, seq_len, batch_size, bytes_per_value):
    return 2 * n_layers * n_kv_heads * head_dim * seq_len * bytes_per_value


def kv_values_not_bytes(n_layers, n_kv_heads, head_dim, seq_len, batch_size, bytes_per_value):
    return 2 * n_layers * n_kv_heads * head_dim * seq_len * batch_size


def kv_in_gb(n_layers, n_kv_heads, head_dim, seq_len, batch_size, bytes_per_value):
    return 2 * n_layers * n_kv_heads * head_dim * seq_len * batch_size * bytes_per_value / 1e9


def kv_float(n_layers, n_kv_heads, head_dim, seq_len, batch_size, bytes_per_value):
    return 2.0 * n_layers * n_kv_heads * head_dim * seq_len * batch_size * bytes_per_value


def kv_with_queries(n_layers, n_kv_heads, head_dim, seq_len, batch_size, bytes_per_value):
    q = k = v = n_layers * n_kv_heads * head_dim * seq_len * batch_size * bytes_per_value
    return q + k + v


KV_CORRECT = [kv_per_token, kv_loop_over_layers, kv_math_prod, kv_numpy_int]

KV_MISTAKES = [
    pytest.param(kv_only_keys, "only keys counted", id="only-keys"),
    pytest.param(kv_one_layer, "forgot n_layers", id="one-layer"),
    pytest.param(kv_no_batch, "forgot batch_size", id="no-batch"),
    pytest.param(kv_values_not_bytes, "multiply by bytes_per_value", id="values-not-bytes"),
    pytest.param(kv_in_gb, "returned GB", id="GB"),
    pytest.param(kv_float, "the number of bytes is an int", id="float"),
    pytest.param(kv_with_queries, "cached the queries too", id="queries"),
]


@pytest.mark.parametrize("fn", KV_CORRECT, ids=lambda f: f.__name__)
def test_kv_accepts_other_correct_answers(fn):
    result = check("kv_cache_bytes", fn)
    assert result.passed, result.feedback


@pytest.mark.parametrize("fn, phrase", KV_MISTAKES)
def test_kv_names_the_mistake(fn, phrase):
    assert_fails_naming(check("kv_cache_bytes", fn), phrase)


# =============================================================== absmax_quantize

# ---- correct

def absmax_multiply_by_inverse(w, bits=8):
    levels = 2 ** (bits - 1) - 1
    largest = float(w.abs().max())
    q = torch.round(w * (levels / largest))  # multiplies instead of dividing: differs in the last bit
    return q.to(torch.int8), largest / levels


def absmax_numpy(w, bits=8):
    levels = 2 ** (bits - 1) - 1
    scale = float(np.abs(w.numpy()).max()) / levels
    q = np.rint(w.numpy() / scale).astype(np.int8)  # rint: halves to even, like torch.round
    return torch.from_numpy(q), scale


def absmax_clamp_to_int8_range(w, bits=8):
    n = 2 ** (bits - 1) - 1
    scale = w.abs().amax().item() / n
    return (w / scale).round().clamp(-128, 127).to(torch.int8), scale


def absmax_float64(w, bits=8):
    scale = w.double().abs().max().item() / (2 ** (bits - 1) - 1)
    return (w.double() / scale).round().to(torch.int8), scale


# ---- wrong

def absmax_divides_by_128(w, bits=8):
    scale = w.abs().max().item() / 2 ** (bits - 1)
    return torch.round(w / scale).to(torch.int8), scale


def absmax_mean_scale(w, bits=8):
    n = 2 ** (bits - 1) - 1
    scale = w.abs().mean().item() / n
    return torch.round(w / scale).clamp(-n, n).to(torch.int8), scale


def absmax_float_q(w, bits=8):
    n = 2 ** (bits - 1) - 1
    scale = w.abs().max().item() / n
    return torch.round(w / scale), scale


def absmax_truncates(w, bits=8):
    n = 2 ** (bits - 1) - 1
    scale = w.abs().max().item() / n
    return (w / scale).to(torch.int8), scale


def absmax_half_up(w, bits=8):
    n = 2 ** (bits - 1) - 1
    scale = w.abs().max().item() / n
    return torch.floor(w / scale + 0.5).to(torch.int8), scale


def absmax_max_not_abs(w, bits=8):
    n = 2 ** (bits - 1) - 1
    scale = w.max().item() / n
    return torch.round(w / scale).clamp(-n, n).to(torch.int8), scale


def absmax_ignores_bits(w, bits=8):
    scale = w.abs().max().item() / 127
    return torch.round(w / scale).to(torch.int8), scale


def absmax_tensor_scale(w, bits=8):
    scale = w.abs().max() / (2 ** (bits - 1) - 1)
    return torch.round(w / scale).to(torch.int8), scale


def absmax_per_row(w, bits=8):
    scale = w.abs().amax(dim=-1, keepdim=True) / (2 ** (bits - 1) - 1)
    return torch.round(w / scale).to(torch.int8), scale


def absmax_unsigned(w, bits=8):
    scale = w.abs().max().item() / (2 ** (bits - 1) - 1)
    return torch.round(w / scale).to(torch.uint8), scale


def absmax_unsigned_range(w, bits=8):
    scale = w.abs().max().item() / (2 ** bits - 1)
    return torch.round(w / scale).to(torch.int8), scale


def absmax_python_round(w, bits=8):
    scale = w.abs().max().item() / (2 ** (bits - 1) - 1)
    return torch.tensor([round(x / scale) for x in w.flatten().tolist()]).view(w.shape), scale  # int64


def absmax_returns_the_round_trip(w, bits=8):
    scale = w.abs().max() / (2 ** (bits - 1) - 1)
    return torch.round(w / scale) * scale


ABSMAX_CORRECT = [absmax_multiply_by_inverse, absmax_numpy, absmax_clamp_to_int8_range, absmax_float64]

ABSMAX_MISTAKES = [
    pytest.param(absmax_divides_by_128, "one level outside the range; in int8, 128 overflows", id="divide-by-128"),
    pytest.param(absmax_mean_scale, "scale from the mean of |w| instead of the max", id="mean"),
    pytest.param(absmax_float_q, "returned a float tensor instead of int8", id="float-q"),
    pytest.param(absmax_truncates, "truncated instead of rounding", id="truncation"),
    pytest.param(absmax_half_up, "rounded halves up", id="half-up"),
    pytest.param(absmax_max_not_abs, "w.max() instead of w.abs().max()", id="max-not-abs"),
    pytest.param(absmax_ignores_bits, "ignored `bits`", id="ignores-bits"),
    pytest.param(absmax_tensor_scale, "return a Python float (scale.item())", id="tensor-scale"),
    pytest.param(absmax_per_row, "one scale per row or column", id="per-row"),
    pytest.param(absmax_unsigned, "stored q as unsigned (torch.uint8)", id="uint8"),
    pytest.param(absmax_unsigned_range, "that is the unsigned range", id="unsigned-range"),
    pytest.param(absmax_python_round, "q stored as torch.int64", id="int64"),
    pytest.param(absmax_returns_the_round_trip, "return the pair (q, scale)", id="round-trip"),
]


@pytest.mark.parametrize("fn", ABSMAX_CORRECT, ids=lambda f: f.__name__)
def test_absmax_accepts_other_correct_answers(fn):
    result = check("absmax_quantize", fn)
    assert result.passed, result.feedback


@pytest.mark.parametrize("fn, phrase", ABSMAX_MISTAKES)
def test_absmax_names_the_mistake(fn, phrase):
    assert_fails_naming(check("absmax_quantize", fn), phrase)


def test_absmax_divide_by_128_is_named_once_over_different_bits():
    result = check("absmax_quantize", absmax_divides_by_128)
    assert len(result.mistakes) == 1 and result.feedback.count("Likely mistake") == 1


def test_absmax_changing_w_in_place_fails():
    def in_place(w, bits=8):
        scale = w.abs().max().item() / (2 ** (bits - 1) - 1)
        w /= scale
        return w.round_().to(torch.int8), scale

    assert_fails_naming(check("absmax_quantize", in_place), "in place")


# =============================================================== dequantize

# ---- correct

def dequantize_mul(q, scale):
    return torch.mul(q.to(torch.float32), scale)


def dequantize_via_float64(q, scale):
    return (q.double() * scale).float()


def dequantize_tensor_scale(q, scale):
    return q * torch.tensor(scale, dtype=torch.float32)  # int8 * float32 promotes to float32


# ---- wrong

def dequantize_divides(q, scale):
    return q.float() / scale


def dequantize_no_scale(q, scale):
    return q.float()


def dequantize_float64(q, scale):
    return q.double() * scale


def dequantize_unsigned(q, scale):
    return q.to(torch.uint8).float() * scale


def dequantize_rounds(q, scale):
    return (q.float() * scale).round()


def dequantize_int(q, scale):
    return (q * scale).to(torch.int32)


def dequantize_in_place(q, scale):
    q *= scale
    return q


DEQUANTIZE_CORRECT = [dequantize_mul, dequantize_via_float64, dequantize_tensor_scale]

DEQUANTIZE_MISTAKES = [
    pytest.param(dequantize_divides, "divided by the scale", id="divides"),
    pytest.param(dequantize_no_scale, "forgot to multiply by the scale", id="no-scale"),
    pytest.param(dequantize_float64, "torch.float64 instead of float32", id="float64"),
    pytest.param(dequantize_unsigned, "read q as unsigned", id="uint8"),
    pytest.param(dequantize_rounds, "rounded the result", id="rounds"),
    pytest.param(dequantize_int, "returned integers", id="int"),
    pytest.param(dequantize_in_place, "cannot store floats", id="in-place"),
]


@pytest.mark.parametrize("fn", DEQUANTIZE_CORRECT, ids=lambda f: f.__name__)
def test_dequantize_accepts_other_correct_answers(fn):
    result = check("dequantize", fn)
    assert result.passed, result.feedback


@pytest.mark.parametrize("fn, phrase", DEQUANTIZE_MISTAKES)
def test_dequantize_names_the_mistake(fn, phrase):
    assert_fails_naming(check("dequantize", fn), phrase)


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

    table = {key(case.args + tuple(case.kwargs.values())): case.call(fn)
             for case in grader.get_exercise(name).make_cases()}
    fallback = {"absmax_quantize": lambda w, bits=8: (torch.zeros_like(w, dtype=torch.int8), 1.0),
                "dequantize": lambda q, s: torch.zeros(q.shape)}.get(name, lambda *a, **k: 0.0)

    def fitted(*args, **kwargs):
        found = table.get(key(args + tuple(kwargs.values())))
        return found if found is not None else fallback(*args, **kwargs)

    return fitted


@pytest.mark.parametrize("name", EXERCISES)
def test_fitted_answer_passes_the_visible_check(reference, name):
    assert check(name, _fitted(name, reference)).passed


@pytest.mark.parametrize("name", EXERCISES)
def test_hidden_checks_pass_other_correct_answers(hidden_dir, name, capsys):
    right = {"weights_memory_gb": memory_numpy, "kv_cache_bytes": kv_loop_over_layers,
             "absmax_quantize": absmax_multiply_by_inverse, "dequantize": dequantize_via_float64,
             "tokenizer_fertility": fertility_joined_words}[name]
    grader.hidden.run_hidden(name, right)
    assert "hidden tests passed" in capsys.readouterr().out


def test_hidden_checks_name_the_mistake(hidden_dir):
    with pytest.raises(AssertionError) as info:
        grader.hidden.run_hidden("kv_cache_bytes", kv_only_keys)
    assert "only keys counted" in str(info.value)


def test_hidden_fertility_cases_are_other_than_one(hidden_dir):
    for case in grader.hidden.load_hidden_cases("tokenizer_fertility", hidden_dir):
        assert checks.fertility(*case.args) != pytest.approx(1.0), case.label


# =============================================================== the chapter contract (tests/chapter_contract.py)

class TestChapterContract(ChapterContract):
    ASSIGNMENT = ASSIGNMENT
    EXERCISES = EXERCISES
    HIDDEN_WRONG_NAMES_A_MISTAKE = False  # a fitted answer returns a constant off the visible cases

    NAMED_MISTAKES = [  # less obvious mistakes: every failing case still names one
        pytest.param("weights_memory_gb", memory_gib, id="memory-GiB"),
        pytest.param("weights_memory_gb", memory_floor, id="memory-floor"),
        pytest.param("weights_memory_gb", memory_tensor, id="memory-tensor"),
        pytest.param("kv_cache_bytes", kv_only_keys, id="kv-only-keys"),
        pytest.param("kv_cache_bytes", kv_float, id="kv-float"),
        pytest.param("absmax_quantize", absmax_divides_by_128, id="absmax-128"),
        pytest.param("absmax_quantize", absmax_mean_scale, id="absmax-mean"),
        pytest.param("absmax_quantize", absmax_truncates, id="absmax-truncates"),
        pytest.param("absmax_quantize", absmax_float_q, id="absmax-float"),
        pytest.param("absmax_quantize", absmax_max_not_abs, id="absmax-max-not-abs"),
        pytest.param("absmax_quantize", absmax_half_up, id="absmax-half-up"),
        pytest.param("absmax_quantize", absmax_unsigned, id="absmax-uint8"),
        pytest.param("absmax_quantize", absmax_returns_the_round_trip, id="absmax-round-trip"),
        pytest.param("dequantize", dequantize_float64, id="dequantize-float64"),
        pytest.param("dequantize", dequantize_unsigned, id="dequantize-uint8"),
        pytest.param("tokenizer_fertility", fertility_mean_of_ratios, id="fertility-mean-of-ratios"),
        pytest.param("tokenizer_fertility", fertility_split_on_space, id="fertility-split-space"),
        pytest.param("tokenizer_fertility", fertility_per_character, id="fertility-per-character"),
    ]
    ALL_OR_NOTHING = [
        ("weights_memory_gb", memory_step_by_step, memory_gib),
        ("kv_cache_bytes", kv_per_token, kv_only_keys),
        ("absmax_quantize", absmax_numpy, absmax_truncates),
        ("dequantize", dequantize_mul, dequantize_divides),
        ("tokenizer_fertility", fertility_loop, fertility_per_character),
    ]
    GARBAGE = DEFAULT_GARBAGE + [A_MIXED_LIST]

    def hidden_wrong(self, exercise, reference):
        return _fitted(exercise, reference)
