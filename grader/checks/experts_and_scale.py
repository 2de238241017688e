"""Chapter 07, sparse mixture of experts and training at scale: top_k_gating, moe_forward, load_balancing_loss,
moe_param_counts, pipeline_schedule.

The references are PyTorch operations and formulas written out: ``torch.softmax`` then ``torch.topk`` and a
renormalisation for the gates; a loop over experts that runs each on the rows routed to it for the MoE layer;
the Switch Transformer's auxiliary loss (Fedus et al. 2021, eq. 4); counts of feed-forward weights and biases.

``top_k_gating`` accepts any choice among tied experts (``torch.topk`` documents no order for ties): the judge
takes the learner's indices when their probabilities are the k largest, largest first, and checks the gates
against them. ``moe_forward`` is judged by what it does too: its cases hand it experts (module-level callables,
so that the cases pickle) that record how many rows every call saw, and the judge compares each expert's rows
with the number of tokens routed to it. ``load_balancing_loss`` is judged by its gradient too: the loss trains
the router, so it must reach the router logits through the mean probabilities P_i. ``pipeline_schedule`` is
judged by the rules a timetable obeys (GPipe's or 1F1B's, Huang et al. 2019, Narayanan et al. 2021), not
against one table: every valid table of the shortest length, 2 (m + p - 1) unit steps, passes.

Each exercise forbids what computes its answer for the lesson (grader/forbidden.py): ``llmcourse.moe.router_gates``
and ``MoEFeedForward`` in ``top_k_gating`` and ``moe_forward``; Hugging Face's Switch (and Mixtral)
``load_balancing_loss_func`` and ``MoEFeedForward`` in ``load_balancing_loss``; ``llmcourse.moe.feed_forward_params``
in ``moe_param_counts``; ``llmcourse.moe.gpipe_schedule`` in ``pipeline_schedule``.
"""

import math
from dataclasses import dataclass

import torch

from grader.compare import Mistake, Problem, close, tensor_problem, with_mistake
from grader.core import Case, Exercise, RaisesCase, _changed, raised, register
from grader.forbidden import FFN_PARAMS, GPIPE_TABLE, LINEAR_LAYERS, MOE_LAYER, MOE_ROUTER, SWITCH_BALANCING_LOSS
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
        Mistake("gates not renormalised: the k kept probabilities must be rescaled so that each token's gates "
                "add up to 1", lambda logits, k: gating(logits, k, renormalise=None)),
        Mistake("top-k taken over the token axis: each token keeps its k best experts, so the top-k runs along "
                "the experts (the last axis)", lambda logits, k: gating(logits, k, topk_dim=0)),
        Mistake("softmax over the token axis: the router's probabilities are over the experts (the last axis)",
                lambda logits, k: gating(logits, k, probs_dim=0)),
        Mistake("a single expert where k were asked: keep the k largest probabilities, not only the largest",
                lambda logits, k: gating(logits, 1)),
        Mistake("gated with the raw logits: turn them into probabilities over the experts first",
                lambda logits, k: gating(logits, k, use_logits=True)),
        Mistake("applied a second softmax to the kept probabilities: they are rescaled to sum to 1, which a "
                "softmax of probabilities does not do", lambda logits, k: gating(logits, k, renormalise="softmax")),
        Mistake("the kept experts are listed smallest gate first: return them largest first",
                lambda logits, k: gating(logits, k, largest_first=False)),
        Mistake("returned (indices, gates): the order is (gates, indices)", lambda logits, k: gating(logits, k)[::-1]),
        Mistake("exp overflows: large router logits give inf / inf = NaN; a softmax that subtracts each row's "
                "maximum first (torch.softmax does) stays finite", _overflowing_softmax_gating),
    ]


def top_k_gating_cases() -> list:
    g = torch.Generator().manual_seed(70)
    tied = torch.tensor([[2.0, 1.0, 1.0, 0.0], [0.5, 3.0, 0.5, 0.5], [1.0, 1.0, 1.0, -1.0]])
    return [
        RaisesCase("8 tokens, 4 experts, k = 2", (_randn(g, 8, 4), 2)),
        RaisesCase("k = 1: 6 tokens, 8 experts (the one kept gate is 1)", (_randn(g, 6, 8), 1)),
        RaisesCase("k = n_experts = 3: every expert kept, 5 tokens", (_randn(g, 5, 3), 3)),
        RaisesCase("as many tokens as experts: 5 x 5, k = 2", (_randn(g, 5, 5), 2)),
        RaisesCase("large logits (all near 100): 4 tokens, 6 experts, k = 2", (100.0 + _randn(g, 4, 6), 2)),
        RaisesCase("an untrained router, all logits 0: 3 tokens, 4 experts, k = 2 (every expert ties: any two "
                         "different experts, gates 0.5 and 0.5)", (torch.zeros(3, 4), 2)),
        RaisesCase("ties for a kept place: 3 tokens, 4 experts, k = 2 (e.g. experts 1 and 2 tie for second "
                         "place in the first row: either may be kept)", (tied, 2)),
        RaisesCase("k = 5 > 4 experts: ValueError", (_randn(g, 3, 4), 5)),
    ]


def _chosen_experts(probs: torch.Tensor, k: int, out_indices) -> torch.Tensor:
    """The learner's indices when they are a top-k choice (ties broken any way), else the reference's."""
    reference = probs.topk(k, dim=-1).values  # (T, k), largest first
    if not isinstance(out_indices, TensorData) or out_indices.array.dtype.kind not in "iu" \
            or tuple(out_indices.shape) != tuple(reference.shape):
        return probs.topk(k, dim=-1).indices
    chosen = torch.as_tensor(out_indices.array, dtype=torch.long)
    valid = bool(((chosen >= 0) & (chosen < probs.shape[-1])).all()) \
        and all(len(set(row)) == k for row in chosen.tolist())
    if valid and torch.allclose(probs.gather(-1, chosen), reference, rtol=1e-5, atol=1e-7):
        return chosen  # the same probabilities, largest first: only tied experts differ from topk's choice
    return probs.topk(k, dim=-1).indices


def judge_top_k_gating(case: Case, out) -> str | None:
    logits, k = case.args
    n_experts = logits.shape[-1]
    if not 1 <= k <= n_experts:
        if raised(out):
            return None
        return Problem(f"k = {k} with {n_experts} experts must raise ValueError; got {describe(out)}.",
                       "no check of k: a k below 1 or above the number of experts raises ValueError")
    if raised(out):
        return f"raised ValueError ({out[1]}) for a valid k = {k} ({n_experts} experts)"
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        return f"expected a tuple (gates, indices); got {describe(out)}"
    probs = torch.softmax(logits, dim=-1)
    indices = _chosen_experts(probs, k, out[1])
    kept = probs.gather(-1, indices)
    gates = kept / kept.sum(dim=-1, keepdim=True)
    problem = None
    if isinstance(out[1], TensorData) and out[1].array.dtype.kind not in "iu":
        problem = f"indices have dtype {out[1].dtype}: expert indices are integers (torch.long, as topk gives)"
    problem = problem or tensor_problem(out[0], gates.numpy(), case, "gates")
    problem = problem or tensor_problem(out[1], indices.numpy(), case, "indices", float_dtype=False)
    if problem is None:
        return None
    return with_mistake(problem, out, case, top_k_gating_mistakes())


def explain_top_k_gating_error(case: Case, outcome) -> str | None:
    logits, k = case.args
    if "out of range" in outcome.message and k > logits.shape[-1]:
        return (f"k = {k} is more than the {logits.shape[-1]} experts, and torch.topk refuses it with its own "
                "error: check k first and raise ValueError")
    return None


register(Exercise(
    name="top_k_gating", chapter="07", signature="(router_logits, k)", points=2,
    make_cases=top_k_gating_cases, judge=judge_top_k_gating, explain_error=explain_top_k_gating_error,
    forbidden=(MOE_ROUTER, MOE_LAYER),
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
        Mistake("gates not renormalised: the k kept probabilities must be rescaled to sum to 1",
                variant(gate_fn=lambda logits, k: gating(logits, k, renormalise=None))),
        Mistake("a single expert where k were asked: each token goes to its k best experts",
                variant(gate_fn=lambda logits, k: gating(logits, 1))),
        Mistake("the experts' outputs added without their gates: each expert's output for a token is scaled "
                "by that token's gate for that expert before the sum",
                variant(weighting="sum")),
        Mistake("the experts' outputs averaged instead of weighted by the gates", variant(weighting="mean")),
        Mistake("added x to the output: the residual connection belongs to the transformer block, not to "
                "moe_forward", variant(residual=True)),
        Mistake("router logits from the transposed router weight: router_weight is already (d, n_experts), "
                "the shape that maps a (tokens, d) batch to one logit per expert", variant(router_transposed=True)),
        Mistake("softmax over the token axis in the router: the probabilities are over the experts (the last "
                "axis)",
                variant(gate_fn=lambda logits, k: gating(logits, k, probs_dim=0))),
        Mistake("gated with the raw router logits: the gates come from probabilities over the experts",
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


RUN_ON_ALL = ("experts run on all tokens: each expert must run only on the rows of the tokens routed to it, "
              "once, on all of them together (that is the saving of a sparse layer)")


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
        return ("router_weight is (d, n_experts), so it maps the (tokens, d) batch as it is, without a transpose, "
                "to router logits of shape (tokens, n_experts)")
    if "not callable" in outcome.message:
        return "experts is a list of callables, one per expert: call each one on the rows routed to it"
    return None


register(Exercise(
    name="moe_forward", chapter="07", signature="(x, router_weight, experts, k)", points=3,
    make_cases=moe_forward_cases, judge=judge_moe_forward, explain_error=explain_moe_forward_error,
    forbidden=(MOE_ROUTER, MOE_LAYER),
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
    forbidden=(SWITCH_BALANCING_LOSS, MOE_LAYER),
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
    points=2, make_cases=moe_param_counts_cases, judge=judge_moe_param_counts, forbidden=(FFN_PARAMS, LINEAR_LAYERS),
))


# ---------------------------------------------------------------- pipeline_schedule

SCHEDULES = ("gpipe", "1f1b")


def pipeline_schedule_cases() -> list:
    return [
        RaisesCase("GPipe (the default), 4 stages, 8 micro-batches", (4, 8)),
        RaisesCase("1F1B, 4 stages, 8 micro-batches", (4, 8), {"schedule": "1f1b"}),
        RaisesCase("1F1B, 4 stages, 2 micro-batches (fewer micro-batches than stages)", (4, 2),
                         {"schedule": "1f1b"}),
        RaisesCase("GPipe, 3 stages, 1 micro-batch: nothing overlaps", (3, 1), {"schedule": "gpipe"}),
        RaisesCase("one stage, 3 micro-batches, GPipe: no pipeline, no idle step", (1, 3)),
        RaisesCase("one stage, 3 micro-batches, 1F1B", (1, 3), {"schedule": "1f1b"}),
        RaisesCase("0 stages: ValueError", (0, 4)),
        RaisesCase("0 micro-batches: ValueError", (3, 0), {"schedule": "1f1b"}),
        RaisesCase('an unknown schedule, "interleaved": ValueError', (2, 4), {"schedule": "interleaved"}),
    ]


NO_INPUT_CHECK = ("no check of the inputs: fewer than 1 stage or micro-batch, or a schedule other than "
                  '"gpipe" and "1f1b", raises ValueError before any table is built')
FORWARD_TOO_EARLY = ("a stage ran a micro-batch's forward before the stage before it had finished it: stage s "
                     "can start micro-batch i only at a later step than stage s - 1 ran it")
BACKWARD_WRONG_WAY = ("the backward passes run from the first stage to the last: the gradient starts at the last "
                      "stage, right after its forward, and flows back to stage 0, one stage per step at the earliest")
GPIPE_NO_FLUSH = ("GPipe mixes forwards and backwards on a stage: it runs all of a stage's forwards first and "
                  "only then its backwards")
TOO_MANY_IN_FLIGHT = ("1F1B holds too many micro-batches: stage s may hold at most n_stages - s micro-batches "
                      "between their forward and their backward, so once it is full it must run a backward "
                      "before its next forward")
TOO_LONG = ("the table is longer than it has to be: some operation waited although its rules let it run "
            "earlier (give each operation the earliest step it is allowed, and stop after the last one)")
ONE_BASED = "micro-batches numbered from 1: they are numbered 0 to n_microbatches - 1"
TRANSPOSED = "the table is indexed [step][stage]: it is table[stage][step], one row per stage"


def _entry_problem(op, m) -> str | None:
    """What is wrong with one cell of the table, or None for None, ("F", i) or ("B", i) with 0 <= i < m."""
    if op is None:
        return None
    if not isinstance(op, (tuple, list)) or len(op) != 2 or op[0] not in ("F", "B"):
        return f"a cell holds {describe(op)}: each cell is None, (\"F\", i) or (\"B\", i)"
    if not isinstance(op[1], int) or isinstance(op[1], bool):
        return f"a cell holds the micro-batch number {describe(op[1])}: micro-batch numbers are Python ints"
    if not 0 <= op[1] < m:
        return f"a cell holds micro-batch {op[1]}, outside 0..{m - 1}"
    return None


def _when(table) -> dict:
    """(kind, stage, micro-batch) -> the steps it ran at."""
    steps: dict = {}
    for s, row in enumerate(table):
        for t, op in enumerate(row):
            if op is not None:
                steps.setdefault((op[0], s, op[1]), []).append(t)
    return steps


def schedule_problem(table, p: int, m: int, schedule: str) -> str | None:
    """What makes ``table`` not a correct, shortest timetable, or None; a named mistake where one is clear."""
    if not isinstance(table, list) or not all(isinstance(row, list) for row in table):
        return f"expected a list of {p} rows (one per stage), each a list of steps; got {describe(table)}"
    shortest = 2 * (m + p - 1)
    if len(table) != p:
        if len(table) == shortest and all(len(row) == p for row in table):
            return Problem(f"the table has {len(table)} rows of {p} cells; expected {p} rows, one per stage.",
                           TRANSPOSED)
        return f"the table has {len(table)} rows; expected {p}, one per stage"
    if len({len(row) for row in table}) != 1:
        return (f"the rows have different lengths ({sorted({len(row) for row in table})}): every stage's row covers "
                "every step of the run, None where it idles")
    numbers = {op[1] for row in table for op in row
               if isinstance(op, (tuple, list)) and len(op) == 2 and isinstance(op[1], int)}
    if numbers == set(range(1, m + 1)):
        return Problem(f"the micro-batches are numbered 1 to {m}.", ONE_BASED)
    for row in table:
        for op in row:
            problem = _entry_problem(op, m)
            if problem:
                return problem
    steps = _when(table)
    for s in range(p):
        for kind in ("F", "B"):
            for i in range(m):
                ran = len(steps.get((kind, s, i), []))
                if ran != 1:
                    return f"stage {s} runs ({kind!r}, {i}) {ran} times; every stage runs each micro-batch's " \
                           "forward once and its backward once"
    when = {key: ts[0] for key, ts in steps.items()}
    for s in range(1, p):
        for i in range(m):
            if when["F", s, i] <= when["F", s - 1, i]:
                return Problem(f"stage {s} runs the forward of micro-batch {i} at step {when['F', s, i]}, but stage "
                               f"{s - 1} runs it at step {when['F', s - 1, i]}.", FORWARD_TOO_EARLY)
    for i in range(m):
        if when["B", p - 1, i] <= when["F", p - 1, i]:
            return Problem(f"the last stage runs the backward of micro-batch {i} at step {when['B', p - 1, i]}, "
                           f"not after its forward at step {when['F', p - 1, i]}.", BACKWARD_WRONG_WAY)
        for s in range(p - 1):
            if when["B", s, i] <= when["B", s + 1, i]:
                return Problem(f"stage {s} runs the backward of micro-batch {i} at step {when['B', s, i]}, but "
                               f"stage {s + 1}, after it, runs it at step {when['B', s + 1, i]}.", BACKWARD_WRONG_WAY)
    for s, row in enumerate(table):
        kinds = [op[0] for op in row if op is not None]
        if schedule == "gpipe" and "F" in kinds[kinds.index("B"):]:
            return Problem(f"stage {s} runs a forward after a backward.", GPIPE_NO_FLUSH)
        if schedule == "1f1b":
            held = 0
            for t, op in enumerate(row):
                held += {"F": 1, "B": -1, None: 0}[None if op is None else op[0]]
                if held > p - s:
                    return Problem(f"stage {s} holds {held} micro-batches at step {t}; 1F1B allows it {p - s}.",
                                   TOO_MANY_IN_FLIGHT)
    length = len(table[0])
    if length != shortest:
        idle = sum(op is None for row in table for op in row) / (p * length)
        return Problem(f"the table is valid but has {length} steps, with an idle share of {idle:.4g}; the shortest "
                       f"valid {schedule} table for {p} stages and {m} micro-batches has {shortest} steps, idle "
                       f"{(p - 1) / (m + p - 1):.4g} of the time.", TOO_LONG)
    return None


def judge_pipeline_schedule(case: Case, out) -> str | None:
    p, m = case.args
    schedule = case.kwargs.get("schedule", "gpipe")
    if p < 1 or m < 1 or schedule not in SCHEDULES:
        if raised(out):
            return None
        return Problem(f"n_stages = {p}, n_microbatches = {m}, schedule = {schedule!r} must raise ValueError; got "
                       f"{describe(out)}.", NO_INPUT_CHECK)
    if raised(out):
        return f"raised ValueError ({out[1]}) for valid inputs"
    return schedule_problem(out, p, m, schedule)


def explain_pipeline_schedule_error(case: Case, outcome) -> str | None:
    p, m = case.args
    if p < 1 or m < 1 or case.kwargs.get("schedule", "gpipe") not in SCHEDULES:
        return NO_INPUT_CHECK
    if outcome.error_type == "KeyError":
        return "a KeyError: the table looked up an operation that has not run yet; look up only what already ran"
    return None


register(Exercise(
    name="pipeline_schedule", chapter="07", signature='(n_stages, n_microbatches, schedule="gpipe")', points=3,
    make_cases=pipeline_schedule_cases, judge=judge_pipeline_schedule,
    explain_error=explain_pipeline_schedule_error, forbidden=(GPIPE_TABLE,),
))
