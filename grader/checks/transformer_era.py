"""Chapter 01, the transformer era: transformer_param_count, training_flops, training_days, semantic_search.

The references are the published figures (GPT-2's four sizes, GPT-3's shape, GPT-3's 3.14e23 FLOPs)
and formulas written out term by term; each ``Mistake`` is a wrong answer learners often write, so
that a wrong output can be named, not just flagged.

Published figures, checked against real models in tests/checks/test_transformer_era.py: ``sum(p.numel())`` of
``GPT2LMHeadModel(GPT2Config(...))`` (the tied output layer counted once) gives 124,439,808 (small,
12 layers, d = 768), 354,823,168 (medium, 24, 1024), 774,030,080 (large, 36, 1280) and 1,557,611,200
(xl, 48, 1600); GPT-3's shape (96 layers, d = 12,288, context 2,048) gives 174,604,259,328.
"""

import itertools
import math

import numpy as np
import torch

from grader.compare import Mistake, Problem, name_mistake, with_mistake
from grader.core import Case, Exercise, register
from grader.numbers import is_number, number_problem, scalar_problem
from grader.values import Opaque, TensorData, describe

SECONDS_PER_DAY = 86_400
GPT2_VOCAB, GPT2_CONTEXT = 50_257, 1_024
GPT3_PARAMS_EXACT = 174_604_259_328  # transformer_param_count(96, 12288, 50257, 2048)
GPT3_FLOPS_PAPER = 3.14e23  # Brown et al. 2020, Table D.1
A100_PEAK = 312e12  # FLOP/s, fp16/bf16 tensor cores, dense
V100_PEAK = 125e12


# ---------------------------------------------------------------- transformer_param_count

def gpt_param_count(n_layers, d_model, vocab_size, n_positions, d_ff=None, *, token_embeddings=True,
                    position_embeddings=True, untied_output=False, output_bias=False, attention_biases=True,
                    ffn_biases=True, layer_norms_per_block=2, layer_norm_bias=True, final_layer_norm=True,
                    attention_projections=4, default_ff_ratio=4, ignore_d_ff=False) -> int:
    """GPT-2-style parameter count, with switches that reproduce the common mistakes."""
    d = d_model
    if d_ff is None or ignore_d_ff:
        d_ff = (4 if ignore_d_ff else default_ff_ratio) * d
    layer_norm = d * (2 if layer_norm_bias else 1)  # weight (+ bias)
    attention = attention_projections * (d * d + (d if attention_biases else 0))
    ffn = 2 * d * d_ff + ((d_ff + d) if ffn_biases else 0)
    block = attention + ffn + layer_norms_per_block * layer_norm
    embeddings = (vocab_size * d if token_embeddings else 0) + (n_positions * d if position_embeddings else 0)
    output = (vocab_size * d if untied_output else 0) + (vocab_size if output_bias else 0)
    return embeddings + n_layers * block + (layer_norm if final_layer_norm else 0) + output


# (description, switches): each changes one thing; two of them may be combined to name a double mistake
PARAM_COUNT_MISTAKES = [
    ("counted an untied output layer: GPT-2's output layer is the token-embedding matrix itself (tied), "
     "so its vocab_size * d_model weights count once", {"untied_output": True}),
    ("counted an untied output layer with a bias (vocab_size * d_model + vocab_size): GPT-2's output layer "
     "is tied to the token embedding and has no bias", {"untied_output": True, "output_bias": True}),
    ("forgot the position embeddings (n_positions * d_model: GPT-2 learns one vector per position)",
     {"position_embeddings": False}),
    ("forgot the token embeddings (vocab_size * d_model)", {"token_embeddings": False}),
    ("counted only the blocks: the token and position embeddings are missing",
     {"token_embeddings": False, "position_embeddings": False}),
    ("forgot the biases of the linear layers (per block: 4 * d_model in attention, d_ff + d_model in the FFN)",
     {"attention_biases": False, "ffn_biases": False}),
    ("forgot the attention biases (Q, K, V and output projections each have d_model biases)",
     {"attention_biases": False}),
    ("forgot the feed-forward biases (d_ff + d_model per block)", {"ffn_biases": False}),
    ("forgot the final LayerNorm (2 * d_model, after the last block)", {"final_layer_norm": False}),
    ("counted one LayerNorm per block instead of two (one before attention, one before the FFN)",
     {"layer_norms_per_block": 1}),
    ("counted one LayerNorm per block and no final LayerNorm: there are two per block and a final one",
     {"layer_norms_per_block": 1, "final_layer_norm": False}),
    ("counted LayerNorms with a weight only: each has a weight and a bias (2 * d_model)",
     {"layer_norm_bias": False}),
    ("forgot the LayerNorms (two per block, weight and bias each, and a final one)",
     {"layer_norms_per_block": 0, "final_layer_norm": False}),
    ("counted attention as 3 projections (Q, K, V): there is also the output projection, "
     "d_model * d_model + d_model per block", {"attention_projections": 3}),
    ("d_ff defaults to d_model: when d_ff is None the FFN width is 4 * d_model", {"default_ff_ratio": 1}),
    ("d_ff defaults to 2 * d_model: when d_ff is None the FFN width is 4 * d_model", {"default_ff_ratio": 2}),
    ("ignored the d_ff argument (always used 4 * d_model): use d_ff when it is given", {"ignore_d_ff": True}),
]


def _approximation_12ld2(n_layers, d_model, vocab_size, n_positions, d_ff=None):
    return 12 * n_layers * d_model ** 2


def _approximation_12ld2_embeddings(n_layers, d_model, vocab_size, n_positions, d_ff=None):
    return 12 * n_layers * d_model ** 2 + (vocab_size + n_positions) * d_model


def param_count_mistakes() -> list:
    """Named wrong counts, each with the arguments of ``transformer_param_count``."""
    mistakes = [Mistake(description, lambda *a, s=switches, **k: gpt_param_count(*a, **k, **s))
                for description, switches in PARAM_COUNT_MISTAKES]
    mistakes += [
        Mistake("used the approximation 12 * n_layers * d_model**2 (the blocks' weight matrices only): "
                "count every term exactly", _approximation_12ld2),
        Mistake("used the approximation 12 * n_layers * d_model**2 plus the embeddings: count the biases and "
                "LayerNorms exactly too", _approximation_12ld2_embeddings),
    ]
    return mistakes


def _two_mistakes(out, case) -> str | None:
    """Two of the single mistakes at once (for example untied output and no position embeddings).

    Named only when exactly one pair gives that count: on small shapes different pairs coincide.
    """
    matches = [(d1, d2) for (d1, s1), (d2, s2) in itertools.combinations(PARAM_COUNT_MISTAKES, 2)
               if not set(s1) & set(s2) and out == gpt_param_count(*case.args, **case.kwargs, **s1, **s2)]
    if len(matches) != 1:
        return None
    return "two mistakes at once:\n  - {}\n  - {}".format(*matches[0])


def param_count_cases() -> list:
    v, p = GPT2_VOCAB, GPT2_CONTEXT
    return [
        Case("GPT-2 small: 12 layers, d_model 768, vocab 50,257, 1,024 positions (published: 124,439,808)",
             (12, 768, v, p)),
        Case("GPT-2 medium: 24 layers, d_model 1024", (24, 1024, v, p)),
        Case("GPT-2 large: 36 layers, d_model 1280", (36, 1280, v, p)),
        Case("GPT-2 xl: 48 layers, d_model 1600", (48, 1600, v, p)),
        Case("GPT-2 small's shape with d_ff=2048 (not the default 4 * d_model)", (12, 768, v, p), {"d_ff": 2048}),
        Case("a toy model: 2 layers, d_model 8, vocab 100, 16 positions, d_ff 20 (positional)", (2, 8, 100, 16, 20)),
        Case(f"GPT-3 175B's shape: 96 layers, d_model 12,288, vocab 50,257, 2,048 positions "
             f"({GPT3_PARAMS_EXACT:,}, the '175B')",
             (96, 12288, v, 2048)),
    ]


def judge_param_count(case: Case, out) -> str | None:
    expected = gpt_param_count(*case.args, **case.kwargs)
    if isinstance(out, float) and out == expected:
        return f"returned the float {out:,.1f}: a parameter count is an int (use // instead of /, or int(...))"
    problem = scalar_problem(out, expected, "the count", "int")
    if problem:
        return problem
    if not isinstance(out, int):
        return f"returned the float {out!r}; expected the int {expected:,}"
    if out == expected:
        return None
    diff = out - expected
    problem = (f"returned {out:,}; expected {expected:,} (yours is {abs(diff):,} "
               f"{'more' if diff > 0 else 'fewer'})")
    mistake = name_mistake(out, case, param_count_mistakes()) or _two_mistakes(out, case)
    return Problem(problem, mistake)


def explain_param_count_error(case: Case, outcome) -> str | None:
    if "NoneType" in outcome.message:
        return "d_ff=None means the default 4 * d_model: replace None by that number before using d_ff"
    return None


register(Exercise(
    name="transformer_param_count", chapter="01",
    signature="(n_layers, d_model, vocab_size, n_positions, d_ff=None)", points=3,
    make_cases=param_count_cases, judge=judge_param_count, explain_error=explain_param_count_error,
))


# ---------------------------------------------------------------- training_flops

def flops_mistakes() -> list:
    return [
        Mistake("2 N D counts the forward pass only: training adds the backward pass (about twice the "
                "forward), 6 N D in all", lambda n, d: 2 * n * d),
        Mistake("4 N D counts the backward pass only: training is forward (2 N D) + backward (4 N D) = 6 N D",
                lambda n, d: 4 * n * d),
        Mistake("6 N is the cost of one token: multiply by the number of tokens D", lambda n, d: 6 * n),
        Mistake("6 D forgets the number of parameters N", lambda n, d: 6 * d),
        Mistake("N D forgets the factor 6 (2 FLOPs per parameter and token forward, 4 backward)",
                lambda n, d: n * d),
        Mistake("added instead of multiplied: 6 (N + D); the cost is 6 * N * D", lambda n, d: 6 * (n + d)),
        Mistake("returned petaflop/s-days (FLOPs / 8.64e19): return plain FLOPs",
                lambda n, d: 6 * n * d / (1e15 * SECONDS_PER_DAY)),
        Mistake("returned PFLOPs (divided by 1e15): return plain FLOPs", lambda n, d: 6 * n * d / 1e15),
        Mistake("returned 6 N D in units of 1e9 (GFLOPs): return plain FLOPs", lambda n, d: 6 * n * d / 1e9),
    ]


def flops_cases() -> list:
    return [
        Case(f"GPT-3: 175e9 parameters, 300e9 tokens (the paper, Table D.1: {GPT3_FLOPS_PAPER:.3g} FLOPs)",
             (175e9, 300e9)),
        Case("a toy run: 1,000 parameters, 50 tokens", (1_000, 50)),
        Case("GPT-2 small: 124,439,808 parameters, 10e9 tokens (ints)", (124_439_808, 10_000_000_000)),
        Case("BERT-base: 110e6 parameters, 1,000,000 steps x 256 x 512 tokens", (110e6, 1_000_000 * 256 * 512)),
        Case("Chinchilla: 70e9 parameters, 1.4e12 tokens", (70e9, 1.4e12)),
    ]


def judge_flops(case: Case, out) -> str | None:
    n, d = case.args
    return number_problem(case, out, 6 * n * d, "the FLOPs", flops_mistakes(), "FLOPs")


register(Exercise(
    name="training_flops", chapter="01", signature="(n_params, n_tokens)", points=1,
    make_cases=flops_cases, judge=judge_flops,
))


# ---------------------------------------------------------------- training_days

def days_mistakes() -> list:
    def days(flops, n, peak, u, seconds=SECONDS_PER_DAY):
        return flops / (n * peak * u) / seconds

    return [
        Mistake("forgot the utilization: the devices sustain only `utilization` of their peak, so divide by "
                "n_devices * peak * utilization", lambda f, n, p, u: f / (n * p) / SECONDS_PER_DAY),
        Mistake("multiplied by the utilization instead of dividing: lower utilization must mean *more* days",
                lambda f, n, p, u: f * u / (n * p) / SECONDS_PER_DAY),
        Mistake("forgot n_devices: the work is shared by all the devices, so divide by their number too "
                "(without it you get device-days, not wall-clock days)", lambda f, n, p, u: days(f, 1, p, u)),
        Mistake("multiplied by n_devices instead of dividing (that is device-days times devices)",
                lambda f, n, p, u: f * n / (p * u) / SECONDS_PER_DAY),
        Mistake("returned seconds: divide by 86,400 seconds per day", lambda f, n, p, u: days(f, n, p, u, 1)),
        Mistake("returned hours: divide by 86,400 seconds per day, not 3,600",
                lambda f, n, p, u: days(f, n, p, u, 3_600)),
        Mistake("returned minutes: divide by 86,400 seconds per day, not 60", lambda f, n, p, u: days(f, n, p, u, 60)),
        Mistake("divided by 86,400 twice", lambda f, n, p, u: days(f, n, p, u, SECONDS_PER_DAY ** 2)),
        Mistake("divided by 24 only (hours -> days) but the FLOP/s rate gives seconds: divide by 86,400",
                lambda f, n, p, u: days(f, n, p, u, 24)),
        Mistake("returned years: divide by 86,400 seconds per day, not by the seconds in a year",
                lambda f, n, p, u: days(f, n, p, u, 365 * SECONDS_PER_DAY)),
        Mistake("treated the utilization as a percentage (divided by utilization * 100): it is a fraction",
                lambda f, n, p, u: days(f, n, p, u * 100)),
        Mistake("used // (floor division): days are a float; use /",
                lambda f, n, p, u: float(f // (n * p * u) // SECONDS_PER_DAY)),
    ]


def days_cases() -> list:
    return [
        Case("GPT-3: 3.15e23 FLOPs on 1,024 A100s (312 TFLOP/s peak) at 40 % utilization: about 28.5 days",
             (3.15e23, 1_024, A100_PEAK, 0.4)),
        Case("GPT-3 on 1,024 V100s (125 TFLOP/s peak) at 30 % utilization", (3.15e23, 1_024, V100_PEAK, 0.3)),
        Case("one device of 1e12 FLOP/s at 50 %, 1e18 FLOPs", (1e18, 1, 1e12, 0.5)),
        Case("BERT-large: 2.7e20 FLOPs on 16 devices of 45e12 FLOP/s at 25 %", (2.7e20, 16, 45e12, 0.25)),
    ]


def judge_days(case: Case, out) -> str | None:
    f, n, peak, u = case.args
    expected = f / (n * peak * u) / SECONDS_PER_DAY
    return number_problem(case, out, expected, "the number of days", days_mistakes(), "days")


register(Exercise(
    name="training_days", chapter="01", signature="(total_flops, n_devices, peak_flops_per_device, utilization)",
    points=1, make_cases=days_cases, judge=judge_days,
))


# ---------------------------------------------------------------- semantic_search

def cosine_scores(query, documents) -> torch.Tensor:
    """Cosine similarity of the query (d,) with each document (n, d), in float64: (n,)."""
    q = query.double() / query.double().norm()
    docs = documents.double() / documents.double().norm(dim=-1, keepdim=True)
    return docs @ q  # (n,)


def _best_first(scores, k, descending=True) -> list:
    return torch.sort(scores, descending=descending).indices[:k].tolist()


def search_mistakes() -> list:
    def dot(q, docs):
        return docs.double() @ q.double()

    def distance(q, docs):
        return (docs.double() - q.double()).norm(dim=-1)

    def cols_normalised(q, docs):
        return (docs.double() / docs.double().norm(dim=0, keepdim=True)) @ q.double()

    return [
        Mistake("ranked by the dot product, not the cosine similarity: long document vectors win; "
                "normalise the vectors (or divide by their norms) first",
                lambda q, docs, k: _best_first(dot(q, docs), k)),
        Mistake("ranked by Euclidean distance (smallest first), not cosine similarity: on vectors of different "
                "lengths they disagree", lambda q, docs, k: _best_first(distance(q, docs), k, descending=False)),
        Mistake("ranked by the largest Euclidean distance: that is the least similar, and not cosine anyway",
                lambda q, docs, k: _best_first(distance(q, docs), k)),
        Mistake("returned the worst matches first (sorted ascending): best first means descending similarity",
                lambda q, docs, k: _best_first(cosine_scores(q, docs), k, descending=False)),
        Mistake("returned the k best in reverse order (worst of the k first): best first",
                lambda q, docs, k: _best_first(cosine_scores(q, docs), k)[::-1]),
        Mistake("returned k + 1 documents: slice [:k]",
                lambda q, docs, k: _best_first(cosine_scores(q, docs), k + 1)),
        Mistake("returned k - 1 documents: slice [:k], not [:k - 1]",
                lambda q, docs, k: _best_first(cosine_scores(q, docs), k - 1)),
        Mistake("returned every document in order instead of only the k best",
                lambda q, docs, k: _best_first(cosine_scores(q, docs), len(docs))),
        Mistake("off by one: the indices start at 1; Python indices start at 0",
                lambda q, docs, k: [i + 1 for i in _best_first(cosine_scores(q, docs), k)]),
        Mistake("sorted the chosen indices themselves: keep them in order of similarity, best first",
                lambda q, docs, k: sorted(_best_first(cosine_scores(q, docs), k))),
        Mistake("normalised the documents along dim 0 (each feature over the documents) instead of each "
                "document's vector (dim=-1)", lambda q, docs, k: _best_first(cols_normalised(q, docs), k)),
    ]


def search_cases() -> list:
    """Documents of very different lengths, so that cosine, dot product and distance rank them differently."""
    g = torch.Generator().manual_seed(101)

    def documents(n, d):
        directions = torch.randn(n, d, generator=g)
        lengths = torch.exp(torch.empty(n, 1).uniform_(math.log(0.2), math.log(5.0), generator=g))
        return directions / directions.norm(dim=-1, keepdim=True) * lengths  # (n, d)

    hand = torch.tensor([[3.0, 3.0], [0.5, 0.1], [0.0, 1.0], [-1.0, 0.0], [2.0, 0.5]])
    return [
        Case("2-D by hand: query [1, 0], 5 documents, k = 3 (cosine, dot product and distance disagree)",
             (torch.tensor([1.0, 0.0]), hand, 3)),
        Case("8 documents of dimension 16 with lengths 0.2 to 5, k = 3", (torch.randn(16, generator=g) * 2,
                                                                         documents(8, 16), 3)),
        Case("20 documents of dimension 32, k = 5", (torch.randn(32, generator=g), documents(20, 32), 5)),
        Case("k = 1: 6 documents of dimension 4", (torch.randn(4, generator=g) * 0.3, documents(6, 4), 1)),
        Case("k = the number of documents (5): rank them all", (torch.randn(8, generator=g), documents(5, 8), 5)),
    ]


def _as_index_list(out):
    """(list of ints, None), or (None, what is wrong with the type)."""
    if isinstance(out, TensorData):
        if out.array.dtype.kind in "iub":
            return None, (f"returned a tensor ({out.dtype}) of shape {out.shape}: return a list of Python ints "
                          f"(use .tolist())")
        return None, None  # floats: judged by value below (similarities?)
    if isinstance(out, np.ndarray):
        return None, "returned a NumPy array: return a list of Python ints (use .tolist())"
    if not isinstance(out, (list, tuple)):
        return None, f"expected a list of document indices (Python ints); got {describe(out)}"
    if any(isinstance(i, TensorData) for i in out):
        return None, "returned a list of tensors: return Python ints (use indices.tolist())"
    if all(is_number(i) for i in out) and not all(isinstance(i, int) for i in out):
        return None, None  # floats: judged by value below (similarities?)
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in out):
        kinds = sorted({type(i).__name__ if not isinstance(i, Opaque) else i.type_name for i in out})
        return None, f"returned a list holding {', '.join(kinds)}: the indices should be Python ints"
    return list(out), None


def judge_search(case: Case, out) -> str | None:
    query, docs, k = case.args
    scores = cosine_scores(query, docs)
    expected = _best_first(scores, k)
    top_scores = scores[expected].numpy()
    indices, problem = _as_index_list(out)
    if problem:
        return problem
    if indices is None:  # floats: the similarities themselves?
        values = np.asarray(out.array if isinstance(out, TensorData) else out, dtype=np.float64).ravel()
        if values.shape == top_scores.shape and np.allclose(values, top_scores, atol=1e-4):
            return ("returned the similarity scores of the k best documents, not their indices: "
                    "return the indices (for example torch.topk(...).indices.tolist())")
        return f"expected a list of {k} document indices (Python ints); got {describe(out)} of floats"
    if indices == expected:
        return None
    if len(indices) != k:
        problem = f"returned {len(indices)} indices; expected k = {k}"
    elif any(not 0 <= i < len(docs) for i in indices):
        problem = f"returned {indices}: indices must be between 0 and {len(docs) - 1}"
    else:
        problem = f"returned {indices}; expected {expected} (the {k} highest cosine similarities, best first)"
    return with_mistake(problem, indices, case, search_mistakes())


def explain_search_error(case: Case, outcome) -> str | None:
    if "selected index k out of range" in outcome.message or "out of range" in outcome.message:
        return "k is at most the number of documents, document_embeddings.shape[0]"
    if "shape" in outcome.message or "size" in outcome.message or "Dimension" in outcome.message:
        return ("query_embedding is 1-D (d,), document_embeddings 2-D (n, d): the similarities are "
                "document_embeddings @ query_embedding, shape (n,), after normalising each vector")
    return None


register(Exercise(
    name="semantic_search", chapter="01", signature="(query_embedding, document_embeddings, k)", points=2,
    make_cases=search_cases, judge=judge_search, explain_error=explain_search_error,
))
