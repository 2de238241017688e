"""Chapter 01, the transformer era: transformer_param_count, plan_training, semantic_search.

The references are the published figures (GPT-2's four sizes, GPT-3's shape, GPT-3's budget as Patterson
et al. 2021 give it) and counts written out term by term; each ``Mistake`` is a wrong answer learners often
write, so that a wrong output can be named, not just flagged.

Published figures, checked against real models in tests/checks/test_transformer_era.py: ``sum(p.numel())`` of
``GPT2LMHeadModel(GPT2Config(...))`` (the tied output layer counted once) gives 124,439,808 (small,
12 layers, d = 768), 354,823,168 (medium, 24, 1024), 774,030,080 (large, 36, 1280) and 1,557,611,200
(xl, 48, 1600); GPT-3's shape (96 layers, d = 12,288, context 2,048) gives 174,604,259,328.
"""

import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch

from grader.compare import Mistake, Problem, name_mistake, with_mistake
from grader.core import Case, Exercise, RaisesCase, raised, register
from grader.forbidden import COSINE, GPT2_MODEL, SEARCH_RANKING, SEARCH_SCORES, TRAINING_COST
from grader.numbers import is_number, ratio_hint, scalar_problem
from grader.values import Opaque, TensorData, describe

SECONDS_PER_DAY = 86_400
GPT2_VOCAB, GPT2_CONTEXT = 50_257, 1_024
GPT3_PARAMS_EXACT = 174_604_259_328  # transformer_param_count(96, 12288, 50257, 2048)
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
    ("counted an untied output layer with a bias: GPT-2's output layer is tied to the token embedding and "
     "has no bias", {"untied_output": True, "output_bias": True}),
    ("forgot the position embeddings: GPT-2 learns one vector of width d_model per position",
     {"position_embeddings": False}),
    ("forgot the token embeddings: one learned vector of width d_model per vocabulary entry",
     {"token_embeddings": False}),
    ("counted only the blocks: the token and position embeddings are missing",
     {"token_embeddings": False, "position_embeddings": False}),
    ("forgot the biases of the linear layers: each of the four attention projections and the two feed-forward "
     "layers of every block has one",
     {"attention_biases": False, "ffn_biases": False}),
    ("forgot the attention biases: the query, key, value and output projections each have a bias",
     {"attention_biases": False}),
    ("forgot the feed-forward biases: both linear layers of the feed-forward network have one",
     {"ffn_biases": False}),
    ("forgot the final LayerNorm, after the last block (a weight and a bias, like every LayerNorm)",
     {"final_layer_norm": False}),
    ("counted one LayerNorm per block instead of two (one before attention, one before the FFN)",
     {"layer_norms_per_block": 1}),
    ("counted one LayerNorm per block and no final LayerNorm: there are two per block and a final one",
     {"layer_norms_per_block": 1, "final_layer_norm": False}),
    ("counted LayerNorms with a weight only: each has a weight and a bias",
     {"layer_norm_bias": False}),
    ("forgot the LayerNorms (two per block, weight and bias each, and a final one)",
     {"layer_norms_per_block": 0, "final_layer_norm": False}),
    ("counted attention as 3 projections (Q, K, V): there is also the output projection, a fourth linear "
     "layer with a bias in every block", {"attention_projections": 3}),
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
        return f"returned the float {out:,.1f}: a parameter count is an int (keep to integer arithmetic)"
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
    forbidden=(GPT2_MODEL,),
))


# ---------------------------------------------------------------- plan_training

FLOPS_PER_PARAM_TOKEN = 6  # forward 2 (a multiply and an add), backward about twice the forward


def reference_plan(models, n_devices, peak_flops_per_device, utilization, days, tokens_per_param=20.0, *,
                   flops_per_param_token=FLOPS_PER_PARAM_TOKEN, use_utilization="fraction", use_devices=True,
                   seconds_per_day=SECONDS_PER_DAY, threshold="per_param", order="largest", values="tokens"):
    """The plan ``plan_training`` returns, with switches that reproduce the common mistakes."""
    if not 0 < utilization <= 1:
        raise ValueError(f"utilization must be a fraction in (0, 1]; got {utilization}")
    sustained = {"fraction": utilization, "ignored": 1.0, "divided": 1 / utilization,
                 "percent": utilization / 100}[use_utilization]
    seconds = days * seconds_per_day
    budget = (n_devices if use_devices else 1) * peak_flops_per_device * sustained * seconds  # FLOPs
    tokens = {name: budget / (flops_per_param_token * n) for name, n in models.items()}
    kept = {"per_param": lambda name: tokens[name] >= tokens_per_param * models[name],
            "ratio_only": lambda name: tokens[name] >= tokens_per_param,
            "at_most": lambda name: tokens[name] <= tokens_per_param * models[name],
            "none": lambda name: True}[threshold]
    names = [name for name in models if kept(name)]
    if order == "largest":
        names.sort(key=lambda name: -models[name])  # stable: equal sizes keep the order of models
    elif order == "smallest":
        names.sort(key=lambda name: models[name])
    elif order == "by_name":
        names.sort(reverse=True)
    elif order == "reversed_ties":
        names.sort(key=lambda name: models[name])
        names.reverse()
    return {name: tokens[name] / (models[name] if values == "per_param" else 1) for name in names}


PLAN_MISTAKES = [  # (description, switches)
    ("counted 2 FLOPs per parameter and token: that is the forward pass alone; training also runs the "
     "backward pass, which costs about twice the forward (the lesson's count is 6 in all)",
     {"flops_per_param_token": 2}),
    ("counted 4 FLOPs per parameter and token: that is the backward pass alone; the forward pass adds 2 more",
     {"flops_per_param_token": 4}),
    ("counted 1 FLOP per parameter and token: a multiply and an add are 2 FLOPs in the forward pass, and the "
     "backward pass costs about twice the forward", {"flops_per_param_token": 1}),
    ("counted 8 FLOPs per parameter and token (the forward pass recomputed, as Narayanan et al. count): "
     "this exercise uses the lesson's count, forward plus backward", {"flops_per_param_token": 8}),
    ("forgot the utilization: the devices sustain only that fraction of their peak, so the budget buys "
     "fewer tokens than the peak would", {"use_utilization": "ignored"}),
    ("divided by the utilization: a lower utilization must buy fewer tokens, not more",
     {"use_utilization": "divided"}),
    ("treated the utilization as a percentage (divided it by 100): it is already a fraction of the peak",
     {"use_utilization": "percent"}),
    ("forgot n_devices: the budget is the whole cluster's, every device working for the same days",
     {"use_devices": False}),
    ("treated the days as seconds: a FLOP/s rate needs the time in seconds, 86,400 per day",
     {"seconds_per_day": 1}),
    ("converted the days to hours only: a FLOP/s rate needs the time in seconds, 86,400 per day",
     {"seconds_per_day": 24}),
    ("converted the days to minutes only: a FLOP/s rate needs the time in seconds, 86,400 per day",
     {"seconds_per_day": 24 * 60}),
    ("used 3,600 seconds per day (that is an hour): a day has 86,400 seconds", {"seconds_per_day": 3_600}),
    ("compared the tokens with tokens_per_param itself: the threshold is per parameter, so a larger model "
     "needs more tokens", {"threshold": "ratio_only"}),
    ("kept the models that see at most tokens_per_param tokens per parameter: the ones worth training see at "
     "least that many", {"threshold": "at_most"}),
    ("returned every model: keep only those that see at least tokens_per_param tokens per parameter",
     {"threshold": "none"}),
    ("listed the smallest model first: the plan lists the largest model first", {"order": "smallest"}),
    ("kept the order of `models`: the plan lists the largest model first", {"order": "given"}),
    ("sorted the models by name (sorting the dict's items compares the names first): sort by the number of "
     "parameters, the largest first", {"order": "by_name"}),
    ("put models of equal size in reverse order: equal sizes keep the order of `models` (reversing a "
     "smallest-first sort reverses them; a stable sort from the largest keeps them)", {"order": "reversed_ties"}),
    ("returned tokens per parameter: return the number of training tokens of each model", {"values": "per_param"}),
]


def plan_mistakes() -> list:
    return [Mistake(description, lambda *a, s=switches, **k: reference_plan(*a, **k, **s))
            for description, switches in PLAN_MISTAKES]


@dataclass
class PlanCase(RaisesCase):
    """A plan_training case: a ValueError comes back as a plain value, for the judge to say whether it was due."""

    @property
    def budget(self) -> dict:
        names = ["models", "n_devices", "peak_flops_per_device", "utilization", "days", "tokens_per_param"]
        return dict(zip(names, self.args), **self.kwargs)


GPT2_SIZES = {"gpt2-small": 124_439_808, "gpt2-medium": 354_823_168, "gpt2-large": 774_030_080,
              "gpt2-xl": 1_557_611_200}  # transformer_param_count of the four shapes


def plan_cases() -> list:
    gpt2_mixed = {name: GPT2_SIZES[name] for name in ["gpt2-medium", "gpt2-xl", "gpt2-small", "gpt2-large"]}
    toy = {"a": 1_000_000, "b": 20_000_000, "c": 1_000_000, "d": 50_000_000}
    giants = {"Megatron-Turing NLG": 530e9, "GPT-3": GPT3_PARAMS_EXACT, "Chinchilla": 70e9}
    return [
        PlanCase("GPT-2's four sizes (listed in no particular order) on one A100 (312 TFLOP/s) at 40 % for 7 days, "
                 "20 tokens per parameter", (gpt2_mixed, 1, A100_PEAK, 0.4, 7)),
        PlanCase("GPT-2's four sizes on 1,024 A100s at 45 % for 30 days: all of them, largest first",
                 (gpt2_mixed, 1_024, A100_PEAK, 0.45, 30)),
        PlanCase("GPT-3's budget: 10,000 V100s (125 TFLOP/s) at 21.3 % for 14.8 days, GPT-3's own 1.7 tokens "
                 "per parameter", (giants, 10_000, V100_PEAK, 0.213, 14.8), {"tokens_per_param": 1.7}),
        PlanCase("by hand: 2 devices of 1e12 FLOP/s at 50 % for 1 day; a and c have the same size (keep their order)",
                 (toy, 2, 1e12, 0.5, 1)),
        PlanCase("0 days: nothing can be trained, an empty dict", (toy, 8, 1e12, 0.5, 0)),
        PlanCase("utilization = 40 (meant as 40 %): not a fraction in (0, 1], so ValueError",
                 (GPT2_SIZES, 8, A100_PEAK, 40, 10)),
    ]


def _same_plan(a, b) -> bool:
    """Same models in the same order, tokens within a relative 1e-9 (or the same ValueError verdict)."""
    if isinstance(a, tuple) or isinstance(b, tuple):
        return isinstance(a, tuple) and isinstance(b, tuple) and a[:1] == b[:1]
    return (isinstance(a, dict) and list(a) == list(b)
            and all(is_number(a[k]) and math.isclose(a[k], b[k], rel_tol=1e-9) for k in b))


def _name_plan_mistake(out, case: Case) -> str | None:
    """The known mistake that gives ``out``; several when this case alone cannot tell them apart (an empty
    plan, for instance, is what every slip that buys far too few tokens returns)."""
    matches = [m.description for m in plan_mistakes() if _same_plan(out, case.call(m.make))]
    if len(matches) <= 1:
        return matches[0] if matches else None
    return "one of these mistakes (this case alone cannot tell them apart):\n" + "\n".join(
        f"  - {description}" for description in matches)


def _plan_shape_problem(out) -> str | None:
    """Why ``out`` is not a dict {model name: tokens as a Python number}, or None."""
    if not isinstance(out, dict):
        return f"expected a dict {{model name: tokens}}; got {describe(out)}"
    for name, tokens in out.items():
        if isinstance(tokens, TensorData):
            return f"the tokens of {name!r} are a tensor ({tokens.dtype}): return Python numbers (use .item())"
        if not is_number(tokens):
            return f"the tokens of {name!r} should be a Python number; got {describe(tokens)}"
    return None


def judge_plan(case: PlanCase, out) -> str | None:
    budget = case.budget
    expected = case.call(reference_plan)
    if isinstance(expected, tuple):  # the utilization is out of range
        if raised(out):
            return None
        return Problem(f"utilization = {budget['utilization']} is not a fraction in (0, 1], so plan_training must "
                       f"raise ValueError; it returned {describe(out)}.",
                       "accepted a utilization outside (0, 1]: a value such as 40 is a percentage, not a fraction "
                       "of the peak; raise ValueError so that the caller notices")
    if raised(out):
        return f"raised ValueError ({out[1]}) for a valid utilization = {budget['utilization']}"
    problem = _plan_shape_problem(out)
    if problem:
        return problem
    if _same_plan(out, expected):
        return None
    ratio = budget.get("tokens_per_param", 20.0)
    common = [name for name in expected if name in out]
    off = next((name for name in common if not math.isclose(out[name], expected[name], rel_tol=1e-9)), None)
    if set(out) != set(expected):
        problem = (f"returned the models {list(out)}; expected {list(expected)} (those that see at least {ratio:g} "
                   f"tokens per parameter, largest first)")
        if off is not None:
            problem += (f"; the tokens of {off!r} are {out[off]:.6g}, expected {expected[off]:.6g}"
                        f"{ratio_hint(out[off], expected[off])}")
    elif off is not None:
        problem = (f"the tokens of {off!r} are {out[off]:.6g}; expected {expected[off]:.6g}"
                   f"{ratio_hint(out[off], expected[off])}")
    else:
        problem = (f"the right models and tokens, in the order {list(out)}; expected {list(expected)} (the largest "
                   f"model first, equal sizes in the order of `models`)")
    return Problem(problem, _name_plan_mistake(out, case))


def explain_plan_error(case: PlanCase, outcome) -> str | None:
    if outcome.error_type == "AssertionError":
        return ("use `raise ValueError(...)` for a utilization outside (0, 1], not assert (assertions can be "
                "switched off)")
    if outcome.error_type == "ZeroDivisionError":
        return ("a division by zero: 0 days is a valid budget (it trains nothing); divide by the cost per token, "
                "not by the time")
    if outcome.error_type in ("TypeError", "AttributeError") and "dict" in outcome.message:
        return "`models` is a dict {name: number of parameters}: go through its items"
    return None


register(Exercise(
    name="plan_training", chapter="01",
    signature="(models, n_devices, peak_flops_per_device, utilization, days, tokens_per_param=20.0)", points=3,
    make_cases=plan_cases, judge=judge_plan, explain_error=explain_plan_error,
    forbidden=(TRAINING_COST,),
))


# ---------------------------------------------------------------- semantic_search

def cosine_scores(query, documents) -> torch.Tensor:
    """Cosine similarity of the query (d,) with each document (n, d), in float64: (n,)."""
    q = query.double() / query.double().norm()
    docs = documents.double() / documents.double().norm(dim=-1, keepdim=True)
    return docs @ q  # (n,)


def _best_first(scores, k, descending=True) -> list:
    """The first k indices by score; equal scores keep the lower index first (a stable sort)."""
    return torch.sort(scores, descending=descending, stable=True).indices[:k].tolist()


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
        Mistake("returned k + 1 documents: return exactly k (all of them when k is more than the number of "
                "documents)", lambda q, docs, k: _best_first(cosine_scores(q, docs), k + 1)),
        Mistake("returned k - 1 documents: return exactly k (all of them when k is more than the number of "
                "documents)", lambda q, docs, k: _best_first(cosine_scores(q, docs), k - 1)),
        Mistake("returned every document in order instead of only the k best (all of them only when k is at "
                "least the number of documents)",
                lambda q, docs, k: _best_first(cosine_scores(q, docs), len(docs))),
        Mistake("off by one: the indices start at 1; Python indices start at 0",
                lambda q, docs, k: [i + 1 for i in _best_first(cosine_scores(q, docs), k)]),
        Mistake("sorted the chosen indices themselves: keep them in order of similarity, best first",
                lambda q, docs, k: sorted(_best_first(cosine_scores(q, docs), k))),
        Mistake("normalised the documents along dim 0 (each feature over the documents) instead of each "
                "document's vector (dim=-1)", lambda q, docs, k: _best_first(cols_normalised(q, docs), k)),
    ]


TIE_ORDER = ("documents of equal similarity were not put lower index first: torch.topk (and a reverse sort of "
             "(similarity, index) pairs) does not keep the lower index first among equals; a stable sort does")


def search_cases() -> list:
    """Documents of very different lengths, so that cosine, dot product and distance rank them differently."""
    g = torch.Generator().manual_seed(101)

    def documents(n, d):
        directions = torch.randn(n, d, generator=g)
        lengths = torch.exp(torch.empty(n, 1).uniform_(math.log(0.2), math.log(5.0), generator=g))
        return directions / directions.norm(dim=-1, keepdim=True) * lengths  # (n, d)

    hand = torch.tensor([[3.0, 3.0], [0.5, 0.1], [0.0, 1.0], [-1.0, 0.0], [2.0, 0.5]])
    # documents 0, 1 and 3 point the same way (1 is 0 doubled, 3 is 0 again): exactly equal cosines
    tied = torch.tensor([[1.0, 1.0, 0.0], [2.0, 2.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0], [3.0, 0.5, 0.0],
                         [-1.0, 0.5, 0.0]])
    return [
        Case("2-D by hand: query [1, 0], 5 documents, k = 3 (cosine, dot product and distance disagree)",
             (torch.tensor([1.0, 0.0]), hand, 3)),
        Case("8 documents of dimension 16 with lengths 0.2 to 5, k = 3", (torch.randn(16, generator=g) * 2,
                                                                         documents(8, 16), 3)),
        Case("20 documents of dimension 32, k = 5", (torch.randn(32, generator=g), documents(20, 32), 5)),
        Case("k = 1: 6 documents of dimension 4", (torch.randn(4, generator=g) * 0.3, documents(6, 4), 1)),
        Case("k = the number of documents (5): rank them all", (torch.randn(8, generator=g), documents(5, 8), 5)),
        Case("k = 7 but only 4 documents: all 4, best first", (torch.randn(6, generator=g), documents(4, 6), 7)),
        Case("ties: documents 0, 1 and 3 have the same direction, so equal cosines: lower index first, k = 4",
             (torch.tensor([1.0, 0.0, 0.0]), tied, 4)),
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
                    "return the positions of those documents in document_embeddings")
        return f"expected a list of {k} document indices (Python ints); got {describe(out)} of floats"
    if indices == expected:
        return None
    if len(indices) == len(expected) and len(set(indices)) == len(indices) and \
            all(0 <= i < len(docs) for i in indices) and scores[indices].tolist() == scores[expected].tolist():
        return Problem(f"returned {indices}; expected {expected}: the same similarities, but documents of equal "
                       f"similarity in another order", TIE_ORDER)
    if len(indices) != len(expected):
        problem = (f"returned {len(indices)} indices; expected {len(expected)} "
                   f"({'k' if k <= len(docs) else 'every document, since k is more than their number'})")
    elif any(not 0 <= i < len(docs) for i in indices):
        problem = f"returned {indices}: indices must be between 0 and {len(docs) - 1}"
    else:
        problem = f"returned {indices}; expected {expected} (the {k} highest cosine similarities, best first)"
    return with_mistake(problem, indices, case, search_mistakes())


def explain_search_error(case: Case, outcome) -> str | None:
    query, docs, k = case.args
    if "selected index k out of range" in outcome.message or "out of range" in outcome.message:
        return (f"k = {k} is more than the {len(docs)} documents, and torch.topk refuses a k larger than the "
                f"tensor: the rule is to return every document then, best first")
    if "shape" in outcome.message or "size" in outcome.message or "Dimension" in outcome.message:
        return ("query_embedding is one vector (d,), document_embeddings one row per document (n, d): the "
                "similarities are one number per document, shape (n,)")
    return None


register(Exercise(
    name="semantic_search", chapter="01", signature="(query_embedding, document_embeddings, k)", points=2,
    make_cases=search_cases, judge=judge_search, explain_error=explain_search_error,
    forbidden=(SEARCH_SCORES, SEARCH_RANKING, COSINE),
))
