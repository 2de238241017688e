"""Chapter 07, sparse mixture of experts and training at scale: top_k_gating, moe_forward, load_balancing_loss,
moe_param_counts, model_flops_utilization, pipeline_bubble_fraction.

The references are PyTorch operations and formulas written out: ``torch.softmax`` then ``torch.topk`` and a
renormalisation for the gates; a loop over experts that runs each on the rows routed to it for the MoE layer;
the Switch Transformer's auxiliary loss (Fedus et al. 2021, eq. 4); counts of feed-forward weights and biases;
PaLM's MFU with 6 N FLOPs per token; GPipe's bubble (p - 1) / (m + p - 1).

``moe_forward`` is judged by what it does too: its cases hand it experts (module-level callables, so that the
cases pickle) that record how many rows every call saw, and the judge compares each expert's rows with the
number of tokens routed to it. ``load_balancing_loss`` is judged by its gradient too: the loss trains the
router, so it must reach the router logits through the mean probabilities P_i.
"""

import math
from dataclasses import dataclass

import torch

from grader.compare import Mistake, Problem, close, tensor_problem, with_mistake
from grader.core import Case, Exercise, _changed, register
from grader.numbers import ratio_hint, scalar_problem
from grader.values import TensorData, describe


def _randn(g, *shape, scale=1.0):
    return torch.randn(*shape, generator=g) * scale


# ---------------------------------------------------------------- top_k_gating

def gating(router_logits, k, *, probs_dim=-1, topk_dim=-1, renormalise="sum", use_logits=False, largest_first=True):
    """(gates, indices): softmax over experts, top-k, renormalised; the switches reproduce the common mistakes."""
    probs = router_logits if use_logits else torch.softmax(router_logits, dim=probs_dim)
    gates, indices = probs.topk(k, dim=topk_dim)
    if renormalise == "sum":
        gates = gates / gates.sum(dim=topk_dim, keepdim=True)
    elif renormalise == "softmax":
        gates = torch.softmax(gates, dim=topk_dim)
    if not largest_first:
        gates, indices = gates.flip(-1), indices.flip(-1)
    return gates, indices


def _overflowing_softmax_gating(router_logits, k):
    e = torch.exp(router_logits)  # no maximum subtracted
    gates, indices = (e / e.sum(-1, keepdim=True)).topk(k, dim=-1)
    return gates / gates.sum(-1, keepdim=True), indices


def top_k_gating_mistakes() -> list:
    return [
        Mistake("gates not renormalised: after keeping the k largest probabilities, divide them by their sum so "
                "that each token's gates add up to 1", lambda logits, k: gating(logits, k, renormalise=None)),
        Mistake("top-k taken over the token axis (dim=0): each token keeps its k best *experts*, topk(k, dim=-1)",
                lambda logits, k: gating(logits, k, topk_dim=0)),
        Mistake("softmax over the token axis (dim=0): the router's probabilities are over the experts (dim=-1)",
                lambda logits, k: gating(logits, k, probs_dim=0)),
        Mistake("a single expert where k were asked: keep the k largest (topk(k)), not the argmax",
                lambda logits, k: gating(logits, 1)),
        Mistake("gated with the raw logits: apply the softmax over the experts first",
                lambda logits, k: gating(logits, k, use_logits=True)),
        Mistake("applied a second softmax to the kept probabilities: renormalise by dividing by their sum",
                lambda logits, k: gating(logits, k, renormalise="softmax")),
        Mistake("the kept experts are listed smallest gate first: return them largest first (topk sorts so)",
                lambda logits, k: gating(logits, k, largest_first=False)),
        Mistake("returned (indices, gates): the order is (gates, indices)", lambda logits, k: gating(logits, k)[::-1]),
        Mistake("exp overflows: large router logits give inf / inf = NaN; subtract each row's maximum first "
                "(or use torch.softmax)", _overflowing_softmax_gating),
    ]


def top_k_gating_cases() -> list:
    g = torch.Generator().manual_seed(70)
    return [
        Case("8 tokens, 4 experts, k = 2", (_randn(g, 8, 4), 2)),
        Case("k = 1: 6 tokens, 8 experts (the one kept gate is 1)", (_randn(g, 6, 8), 1)),
        Case("k = n_experts = 3: every expert kept, 5 tokens", (_randn(g, 5, 3), 3)),
        Case("as many tokens as experts: 5 x 5, k = 2", (_randn(g, 5, 5), 2)),
        Case("large logits (all near 100): 4 tokens, 6 experts, k = 2", (100.0 + _randn(g, 4, 6), 2)),
    ]


def judge_top_k_gating(case: Case, out) -> str | None:
    logits, k = case.args
    gates, indices = gating(logits, k)
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        return f"expected a tuple (gates, indices); got {describe(out)}"
    problem = None
    if isinstance(out[1], TensorData) and out[1].array.dtype.kind not in "iu":
        problem = f"indices have dtype {out[1].dtype}: return the integer indices that topk gives (torch.long)"
    problem = problem or tensor_problem(out[0], gates.numpy(), case, "gates")
    problem = problem or tensor_problem(out[1], indices.numpy(), case, "indices", float_dtype=False)
    if problem is None:
        return None
    return with_mistake(problem, out, case, top_k_gating_mistakes())


register(Exercise(
    name="top_k_gating", chapter="07", signature="(router_logits, k)", points=2,
    make_cases=top_k_gating_cases, judge=judge_top_k_gating,
))


# ---------------------------------------------------------------- moe_forward

class RecordingExpert:
    """An expert (n, d) -> (n, d), tanh(h W + b), that records how many rows each call received."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor):
        self.weight, self.bias = weight, bias
        self.calls: list[int] = []

    def apply(self, h):
        """The expert's function, without recording (the judge's reference uses it)."""
        return torch.tanh(h @ self.weight + self.bias)

    def __call__(self, h):
        self.calls.append(int(h.shape[0]) if h.dim() > 1 else 1)
        return self.apply(h)


def make_experts(g, n_experts: int, d: int) -> list:
    return [RecordingExpert(_randn(g, d, d, scale=1 / math.sqrt(d)), _randn(g, d, scale=0.3)) for _ in range(n_experts)]


def moe_reference(x, router_weight, experts, k, *, gate_fn=None, residual=False, weighting="gates",
                  router_transposed=False):
    """Each expert on its own rows, outputs weighted by the gates and summed; switches reproduce mistakes."""
    logits = x @ (router_weight.T if router_transposed else router_weight)  # (T, E)
    gates, indices = (gate_fn or gating)(logits, k)  # (T, k), (T, k)
    out = torch.zeros_like(x)
    for e, expert in enumerate(experts):
        rows, slots = (indices == e).nonzero(as_tuple=True)
        if rows.numel():
            weight = {"gates": gates[rows, slots, None], "sum": 1.0, "mean": 1.0 / k}[weighting]
            out = out.index_add(0, rows, weight * expert.apply(x[rows]))
    return out + x if residual else out


def moe_forward_mistakes() -> list:
    def variant(**switches):
        return lambda x, router_weight, experts, k: moe_reference(x, router_weight, experts, k, **switches)

    return [
        Mistake("gates not renormalised: the k kept probabilities must be divided by their sum",
                variant(gate_fn=lambda logits, k: gating(logits, k, renormalise=None))),
        Mistake("a single expert where k were asked: each token goes to its k best experts",
                variant(gate_fn=lambda logits, k: gating(logits, 1))),
        Mistake("the experts' outputs added without their gates: weight each by its token's gate",
                variant(weighting="sum")),
        Mistake("the experts' outputs averaged instead of weighted by the gates", variant(weighting="mean")),
        Mistake("added x to the output: the residual connection belongs to the transformer block, not to "
                "moe_forward", variant(residual=True)),
        Mistake("router logits from x @ router_weight.T: router_weight is (d, n_experts), so the logits are "
                "x @ router_weight", variant(router_transposed=True)),
        Mistake("softmax over the token axis in the router: the probabilities are over the experts (dim=-1)",
                variant(gate_fn=lambda logits, k: gating(logits, k, probs_dim=0))),
        Mistake("gated with the raw router logits: apply the softmax first",
                variant(gate_fn=lambda logits, k: gating(logits, k, use_logits=True))),
    ]


@dataclass
class MoECase(Case):
    """Calls ``moe_forward`` with recording experts and observes how many rows each expert saw."""

    def run(self, fn) -> tuple:
        args, kwargs = self.inputs()
        value = self.invoke(fn, args, kwargs)
        x, router_weight, experts, _ = args
        observations = {"rows": [sum(e.calls) for e in experts], "calls": [len(e.calls) for e in experts]}
        changed = [i for i, (after, before) in enumerate(zip((x, router_weight), self.args[:2]))
                   if _changed(after, before)]
        if changed:
            observations["modified_inputs"] = changed
        return value, observations


def routed_rows(case: Case) -> list[int]:
    """How many (token, slot) pairs the router sends to each expert."""
    x, router_weight, experts, k = case.args
    _, indices = gating(x @ router_weight, k)
    return [int((indices == e).sum()) for e in range(len(experts))]


def moe_forward_cases() -> list:
    g = torch.Generator().manual_seed(71)
    x_positive = _randn(g, 6, 4).abs() + 0.1
    shunned = _randn(g, 4, 5)
    shunned[:, 4] = -10.0  # x > 0, so expert 4's logit is far below the others: no token picks it
    return [
        MoECase("10 tokens, d = 6, 4 experts, k = 2", (_randn(g, 10, 6), _randn(g, 6, 4), make_experts(g, 4, 6), 2)),
        MoECase("k = 1: 8 tokens, d = 5, 3 experts", (_randn(g, 8, 5), _randn(g, 5, 3), make_experts(g, 3, 5), 1)),
        MoECase("an expert that no token picks: 6 tokens, d = 4, 5 experts, k = 2",
                (x_positive, shunned, make_experts(g, 5, 4), 2)),
        MoECase("d = n_experts = 4 (a square router): 7 tokens, k = 2",
                (_randn(g, 7, 4), _randn(g, 4, 4), make_experts(g, 4, 4), 2)),
        MoECase("one token, 3 experts, k = 3 (all of them)",
                (_randn(g, 1, 5), _randn(g, 5, 3), make_experts(g, 3, 5), 3)),
    ]


RUN_ON_ALL = ("experts run on all tokens: each expert must run only on the tokens routed to it, "
              "expert(x[rows]) with rows the tokens that chose it (that is the saving of a sparse layer)")


def judge_moe_forward(case: Case, out, observations: dict) -> str | None:
    x, router_weight, experts, k = case.args
    expected = moe_reference(x, router_weight, experts, k)
    problem = tensor_problem(out, expected.numpy(), case)
    if problem is not None:
        return with_mistake(problem, out, case, moe_forward_mistakes())
    want, rows = routed_rows(case), observations.get("rows", [])
    if rows == want:
        return None
    n_tokens = x.shape[0]
    detail = "; ".join(f"expert {e}: {r} rows for {w} routed" for e, (r, w) in enumerate(zip(rows, want)) if r != w)
    problem = f"the output is right, but the experts saw other rows than the router sent them ({detail})."
    if rows and all(r >= n_tokens for r in rows):
        return Problem(problem, RUN_ON_ALL)
    return problem


def explain_moe_forward_error(case: Case, outcome) -> str | None:
    if "cannot be multiplied" in outcome.message:
        return "router_weight is (d, n_experts): the router logits are x @ router_weight, shape (tokens, n_experts)"
    if "not callable" in outcome.message:
        return "experts is a list of callables: call experts[e](rows) on the rows routed to expert e"
    return None


register(Exercise(
    name="moe_forward", chapter="07", signature="(x, router_weight, experts, k)", points=3,
    make_cases=moe_forward_cases, judge=judge_moe_forward, explain_error=explain_moe_forward_error,
))


# ---------------------------------------------------------------- load_balancing_loss

def balancing(router_logits, n_experts, *, f_from="argmax", p_from="softmax", scale="n", p_reduce="mean",
              pairing="separate"):
    """Switch Transformer's n * sum_i f_i P_i; the switches reproduce the common mistakes."""
    probs = torch.softmax(router_logits, dim=-1) if p_from == "softmax" else router_logits  # (T, E)
    top1 = router_logits.argmax(dim=-1)  # (T,)
    one_hot = torch.nn.functional.one_hot(top1, n_experts).to(probs.dtype)  # (T, E)
    f = one_hot.mean(0) if f_from == "argmax" else one_hot.sum(0)  # (E,)
    if f_from == "probs":
        f = probs.mean(0)
    P = probs.mean(0) if p_reduce == "mean" else probs.sum(0)
    if pairing == "per_token":
        value = (one_hot * probs).sum(-1).mean()
    else:
        value = (f * P).sum()
    return value * (n_experts if scale == "n" else 1)


def load_balancing_mistakes() -> list:
    def variant(**switches):
        return lambda router_logits, n_experts: balancing(router_logits, n_experts, **switches)

    def coefficient_of_variation(router_logits, n_experts):
        importance = torch.softmax(router_logits, -1).sum(0)
        return (importance.std() / importance.mean()) ** 2

    return [
        Mistake("balancing loss on probabilities only: f_i is the fraction of tokens whose top-1 expert is i "
                "(from the argmax), P_i the mean probability; n * sum(P_i * P_i) is not the Switch loss",
                variant(f_from="probs")),
        Mistake("missing the factor n_experts (or a mean over the experts where the sum was asked): "
                "n_experts * sum_i f_i P_i is 1.0 under perfect balance", variant(scale="one")),
        Mistake("f_i as counts of tokens, not fractions: divide by the number of tokens",
                variant(f_from="counts")),
        Mistake("P_i summed over the tokens instead of averaged", variant(p_reduce="sum")),
        Mistake("P_i from the raw logits: P_i is the mean of the softmax probabilities", variant(p_from="logits")),
        Mistake("paired each token's own assignment with its own probability before averaging: f_i and P_i are "
                "each averaged over all tokens first, then multiplied", variant(pairing="per_token")),
        Mistake("the squared coefficient of variation of the importances (Shazeer et al. 2017): this exercise "
                "asks for the Switch Transformer's n * sum_i f_i P_i", coefficient_of_variation),
    ]


@dataclass
class GradientCase(Case):
    """Calls the loss on logits that require grad and observes the gradient the loss sends back."""

    def run(self, fn) -> tuple:
        args, kwargs = self.inputs()
        logits = args[0].clone().requires_grad_(True)
        value = self.invoke(fn, (logits, *args[1:]), kwargs)
        observations = {}
        if isinstance(value, torch.Tensor) and value.requires_grad and value.numel() == 1:
            (grad,) = torch.autograd.grad(value.sum(), logits, allow_unused=True)
            observations["grad"] = torch.zeros_like(logits) if grad is None else grad
        else:
            observations["grad"] = None
        if _changed(logits.detach(), self.args[0]):
            observations["modified_inputs"] = [0]
        return value, observations


def load_balancing_loss_cases() -> list:
    g = torch.Generator().manual_seed(72)
    balanced = 3.0 * torch.eye(4).repeat(2, 1)  # 8 tokens, each expert the first choice of 2, equally sure
    collapsed = _randn(g, 10, 3, scale=0.3)
    collapsed[:, 0] += 4.0
    return [
        GradientCase("16 tokens, 4 experts, a random router", (_randn(g, 16, 4), 4)),
        GradientCase("perfect balance: 8 tokens, 4 experts, each expert the first choice of 2 (loss 1.0)",
                     (balanced, 4)),
        GradientCase("collapse: 10 tokens that all prefer expert 0, 3 experts (loss near 3)", (collapsed, 3)),
        GradientCase("32 tokens, 8 experts, logits on a scale of 2", (_randn(g, 32, 8, scale=2.0), 8)),
    ]


DETACHED = ("no gradient reaches the router logits: the loss must stay a differentiable tensor (no .item(), "
            ".detach() or NumPy on the probabilities); it trains the router through P_i")


def judge_load_balancing_loss(case: Case, out, observations: dict) -> str | None:
    logits, n_experts = case.args
    leaf = logits.clone().requires_grad_(True)
    expected = balancing(leaf, n_experts)
    (expected_grad,) = torch.autograd.grad(expected, leaf)
    got = out
    if isinstance(out, TensorData) and out.array.size == 1 and out.shape != ():
        return f"returned a tensor of shape {out.shape}: return a 0-d tensor (a sum gives one)"
    if isinstance(out, (int, float)) and not isinstance(out, bool):
        problem = f"returned the Python number {out:.6g}: return a 0-d tensor, so that the loss can train the router"
        return Problem(problem, DETACHED) if math.isclose(out, expected.item(), rel_tol=1e-4) else problem
    problem = tensor_problem(got, expected.detach().numpy(), case, "the loss")
    if problem is not None:
        return with_mistake(problem, got, case, load_balancing_mistakes())
    grad = observations.get("grad")
    if grad is None:
        return Problem("the value is right, but it does not require grad.", DETACHED)
    if not close(grad, TensorData(expected_grad.numpy(), "torch.float32"), 1e-5, 1e-4):
        return ("the value is right, but its gradient with respect to the router logits is not the Switch loss's: "
                "take f_i from the argmax (no gradient) and P_i from the softmax (with gradient)")
    return None


register(Exercise(
    name="load_balancing_loss", chapter="07", signature="(router_logits, n_experts)", points=2,
    make_cases=load_balancing_loss_cases, judge=judge_load_balancing_loss,
))


# ---------------------------------------------------------------- moe_param_counts

def ffn_params(d_model: int, d_ff: int, biases: bool = True) -> int:
    """Weights (and biases) of d_model -> d_ff -> d_model."""
    return 2 * d_model * d_ff + ((d_ff + d_model) if biases else 0)


def param_counts(d_model, d_ff, n_experts, k, n_layers, moe_every=2, *, positions="right", biases=True,
                 active="right", router=False, dense_in_moe=False) -> tuple[int, int]:
    """(total, active per token) of the feed-forward and expert weights; switches reproduce the mistakes."""
    ffn = ffn_params(d_model, d_ff, biases)
    if positions == "right":
        n_moe = sum((i + 1) % moe_every == 0 for i in range(n_layers))
    elif positions == "first":
        n_moe = sum(i % moe_every == 0 for i in range(n_layers))
    else:
        n_moe = n_layers
    n_dense = n_layers - n_moe
    extra = n_moe * d_model * n_experts if router else 0
    in_moe = ffn if dense_in_moe else 0
    total = n_dense * ffn + n_moe * (n_experts * ffn + in_moe) + extra
    used = {"right": k, "one": 1, "all": n_experts}[active.split("+")[0]]
    act = (0 if active.endswith("experts_only") else n_dense * ffn) + n_moe * (used * ffn + in_moe) + extra
    return total, act


def moe_param_counts_mistakes() -> list:
    def variant(**switches):
        return lambda d_model, d_ff, n_experts, k, n_layers, moe_every=2: param_counts(
            d_model, d_ff, n_experts, k, n_layers, moe_every, **switches)

    return [
        ("MoE layers counted at the wrong positions: layer i (from 0) is an MoE layer when (i + 1) % moe_every == 0, "
         "so with moe_every = 2 the second, fourth, ... layers (GLaM's every other layer), not layer 0",
         variant(positions="first")),
        ("every layer counted as an MoE layer: only every moe_every-th is; the others keep one dense FFN",
         variant(positions="all")),
        ("forgot the biases: each FFN (and each expert) has d_ff + d_model biases besides its 2 d_model d_ff weights",
         variant(biases=False)),
        ("active parameters counted without the dense FFN layers: a token passes through every dense FFN too",
         variant(active="right+experts_only")),
        ("active parameters with one expert per MoE layer: each token uses k experts", variant(active="one")),
        ("active parameters with all the experts: a token uses only its k experts", variant(active="all")),
        ("counted the router: this exercise counts the FFN and expert weights only", variant(router=True)),
        ("counted a dense FFN inside each MoE layer as well: the experts replace the FFN there",
         variant(dense_in_moe=True)),
    ]


def moe_param_counts_cases() -> list:
    return [
        Case("GLaM 64B/64E: d_model 8,192, d_ff 32,768, 64 experts, top-2, 64 layers, every other layer MoE "
             "(about 1.12 T and 51.5 B)", (8192, 32768, 64, 2, 64)),
        Case("5 layers, moe_every = 2: layers 1 and 3 are MoE (d_model 16, d_ff 64, 4 experts, k = 2)",
             (16, 64, 4, 2, 5), {"moe_every": 2}),
        Case("every layer MoE (moe_every = 1), Switch-style top-1: d_model 32, d_ff 128, 8 experts, 6 layers",
             (32, 128, 8, 1, 6), {"moe_every": 1}),
        Case("12 layers, an MoE layer every 4th, 16 experts, top-2 (d_model 64, d_ff 256)", (64, 256, 16, 2, 12, 4)),
        Case("a toy: d_model 4, d_ff 8, 2 experts, k = 1, 3 layers (layer 1 is the MoE layer)", (4, 8, 2, 1, 3)),
    ]


def judge_moe_param_counts(case: Case, out) -> str | None:
    expected = param_counts(*case.args, **case.kwargs)
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        return f"expected a tuple (total, active_per_token); got {describe(out)}"
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in out):
        if all(isinstance(v, float) and v.is_integer() for v in out) and tuple(int(v) for v in out) == expected:
            return "returned floats: parameter counts are ints (use // or int(...))"
        return f"expected two Python ints; got {describe(out[0])} and {describe(out[1])}"
    if tuple(out) == expected:
        return None
    problem = f"returned (total, active) = ({out[0]:,}, {out[1]:,}); expected ({expected[0]:,}, {expected[1]:,})"
    for description, make in moe_param_counts_mistakes():
        if tuple(out) == case.call(make):
            return Problem(problem, description)
    return problem


register(Exercise(
    name="moe_param_counts", chapter="07", signature="(d_model, d_ff, n_experts, k, n_layers, moe_every=2)",
    points=2, make_cases=moe_param_counts_cases, judge=judge_moe_param_counts,
))


# ---------------------------------------------------------------- model_flops_utilization

PALM_PARAMS = 540.35e9  # Chowdhery et al. 2022
PALM_TOKENS_PER_SECOND = 238.3e3  # observed throughput, Chowdhery et al. 2022, Appendix B
TPU_V4_PEAK = 275e12  # bf16 FLOP/s per chip
PALM_CHIPS = 6144


def _number_problem(out, expected: float, what: str, candidates) -> str | None:
    """What is wrong with a returned fraction, naming the first (description, value) it matches."""
    problem = scalar_problem(out, expected, what)
    if problem:
        return problem
    if math.isclose(out, expected, rel_tol=1e-6):
        return None
    problem = f"returned {out:.6g}; expected {expected:.6g}{ratio_hint(out, expected)}"
    for description, value in candidates:
        if math.isclose(out, value, rel_tol=1e-6):
            return Problem(problem, description)
    return problem


def mfu_mistakes(n, tps, peak) -> list:
    return [
        ("2 N FLOPs per token count the forward pass only: training (forward and backward) costs 6 N",
         2 * n * tps / peak),
        ("forgot the 6 FLOPs per parameter and token: MFU = 6 N tokens_per_second / peak", n * tps / peak),
        ("returned a percentage: return the fraction (0.462, not 46.2)", 100 * 6 * n * tps / peak),
        ("inverted: MFU is achieved FLOP/s over peak FLOP/s, 6 N tokens_per_second / peak_flops",
         peak / (6 * n * tps)),
        ("8 N FLOPs per token count the recomputed forward pass too: that is the hardware FLOPs utilization "
         "(HFU); MFU counts the model's 6 N only", 8 * n * tps / peak),
        ("forgot the tokens per second: achieved FLOP/s = 6 N x tokens per second", 6 * n / peak),
    ]


def model_flops_utilization_cases() -> list:
    return [
        Case("PaLM 540B: 238.3 K tokens/s on 6,144 TPU v4 chips of 275 TFLOP/s (about 45.7 %; PaLM's 46.2 % "
             "adds the attention FLOPs)", (PALM_PARAMS, PALM_TOKENS_PER_SECOND, PALM_CHIPS * TPU_V4_PEAK)),
        Case("a 175e9-parameter model at 150,000 tokens/s on 1,024 GPUs of 312 TFLOP/s",
             (175e9, 150_000, 1024 * 312e12)),
        Case("a small model on a CPU: 1e6 parameters, 20,000 tokens/s, peak 300 GFLOP/s (ints)",
             (1_000_000, 20_000, 300_000_000_000)),
    ]


def judge_model_flops_utilization(case: Case, out) -> str | None:
    n, tps, peak = case.args
    return _number_problem(out, 6 * n * tps / peak, "the utilization", mfu_mistakes(n, tps, peak))


register(Exercise(
    name="model_flops_utilization", chapter="07", signature="(n_params, tokens_per_second, peak_flops)", points=1,
    make_cases=model_flops_utilization_cases, judge=judge_model_flops_utilization,
))


# ---------------------------------------------------------------- pipeline_bubble_fraction

def bubble_mistakes(p, m) -> list:
    candidates = [
        ("(p - 1) / m is the bubble time relative to the ideal compute time (Narayanan et al. 2021); the idle "
         "fraction of the whole run is (p - 1) / (m + p - 1)", (p - 1) / m),
        ("(p - 1) / (m + p): the schedule has m + p - 1 time slots per pass, not m + p", (p - 1) / (m + p)),
        ("p and m swapped: p = n_stages, m = n_microbatches, idle fraction (p - 1) / (m + p - 1)",
         (m - 1) / (m + p - 1)),
        ("(p - 1) / p ignores the micro-batches: more micro-batches shrink the bubble", (p - 1) / p),
        ("1 / m: the bubble also grows with the number of stages, (p - 1) / (m + p - 1)", 1 / m),
        ("returned a percentage: return the fraction", 100 * (p - 1) / (m + p - 1)),
        ("integer division (//): use / for a fraction", float((p - 1) // (m + p - 1))),
    ]
    return [(d, v) for d, v in candidates if not math.isclose(v, (p - 1) / (m + p - 1), rel_tol=1e-9)]


def pipeline_bubble_fraction_cases() -> list:
    return [
        Case("4 stages, 8 micro-batches (3 / 11)", (4, 8)),
        Case("8 stages, 32 micro-batches", (8, 32)),
        Case("one stage: no pipeline, no bubble", (1, 4)),
        Case("4 stages, 1 micro-batch: no overlap at all (3 / 4)", (4, 1)),
        Case("35 stages (Megatron-Turing NLG's pipeline depth), 120 micro-batches", (35, 120)),
    ]


def judge_pipeline_bubble_fraction(case: Case, out) -> str | None:
    p, m = case.args
    return _number_problem(out, (p - 1) / (m + p - 1), "the idle fraction", bubble_mistakes(p, m))


register(Exercise(
    name="pipeline_bubble_fraction", chapter="07", signature="(n_stages, n_microbatches)", points=1,
    make_cases=pipeline_bubble_fraction_cases, judge=judge_pipeline_bubble_fraction,
))
