"""Lesson 07 helpers: a GLaM-style mixture-of-experts feed-forward layer for ``llmcourse.tinygpt``, expert-load
bookkeeping, dense-vs-MoE training runs, parameter counts on modules of GLaM's size, and the measurements and
pictures of training at scale.

``MoEFeedForward`` routes each token to its top-k experts with ``router_gates``, runs every expert once on the
block of (token, expert) pairs routed to it (the pairs sorted by expert and cut into blocks), and sets
``aux_loss`` to the Switch Transformer's load-balancing loss (n_experts * sum_i f_i P_i, Fedus et al. 2021),
which ``tinygpt.train`` adds with a weight. It also keeps the share of the routed tokens that each expert
received in its last forward pass (``last_load``).

The exercises of chapter 07 rebuild these mechanisms, so they forbid the helpers that compute them
(``grader/forbidden.py``): ``router_gates`` and ``MoEFeedForward`` in ``top_k_gating`` and ``moe_forward``,
``MoEFeedForward`` in ``load_balancing_loss``, ``feed_forward_params`` in ``moe_param_counts`` and
``gpipe_schedule`` in ``pipeline_schedule``.
"""

import time

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers.models.switch_transformers.modeling_switch_transformers import (
    load_balancing_loss_func,
)

from llmcourse.cache import cached_run
from llmcourse.tinygpt import GPTConfig, TinyGPT, train, validation_loss


class Expert(nn.Module):
    """One expert: the block's feed-forward network, d_model -> d_ff -> d_model with GELU."""

    def __init__(self, d_model: int, d_ff: int):
        super().__init__()
        self.c_fc = nn.Linear(d_model, d_ff)
        self.c_proj = nn.Linear(d_ff, d_model)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x)))


def router_gates(router_logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(probs, gates, experts)`` for router logits ``(N, E)``: the router's probabilities over the experts
    ``(N, E)``, and each token's k kept experts ``(N, k)``, largest first, with their gates ``(N, k)``. The gates
    are the softmax of the k largest logits, which equals the k largest probabilities rescaled to sum to 1 (the
    softmax's denominator cancels)."""
    kept_logits, experts = router_logits.topk(k, dim=-1)
    return router_logits.softmax(dim=-1), kept_logits.softmax(dim=-1), experts


class MoEFeedForward(nn.Module):
    """Top-k routed experts in place of a block's feed-forward network (GLaM: 64 experts, top-2)."""

    def __init__(self, config: GPTConfig, n_experts: int = 8, k: int = 2, d_ff: int | None = None):
        super().__init__()
        d_ff = d_ff or 4 * config.n_embd // k  # k active experts hold as many weights as one dense FFN
        self.n_experts, self.k = n_experts, k
        self.router = nn.Linear(config.n_embd, n_experts, bias=False)
        self.experts = nn.ModuleList(Expert(config.n_embd, d_ff) for _ in range(n_experts))
        self.aux_loss = None
        self.last_load = torch.zeros(n_experts)

    def forward(self, x):
        hidden = x.reshape(-1, x.shape[-1])  # (N, C): the batch's tokens, flattened
        probs, gates, chosen = router_gates(self.router(hidden), self.k)  # (N, E), (N, k), (N, k)
        # the N * k (token, expert) pairs, sorted by expert: one contiguous block of rows per expert
        by_expert = chosen.flatten().argsort(stable=True)  # pair p = token p // k, its (p % k)-th choice
        sizes = torch.bincount(chosen.flatten(), minlength=self.n_experts)  # (E,) pairs per expert
        blocks = hidden[by_expert // self.k].split(sizes.tolist())  # E blocks of rows, in expert order
        outputs = torch.cat([expert(block) if len(block) else block for expert, block in zip(self.experts, blocks)])
        mixed = torch.zeros_like(hidden).index_add(0, by_expert // self.k, outputs * gates.flatten()[by_expert, None])
        self.last_load = (sizes.float() / sizes.sum()).detach()
        # Switch Transformer's balancing loss, by Hugging Face's own function: (batch, tokens, E) probabilities
        # and (batch, tokens) first choices
        self.aux_loss = load_balancing_loss_func(probs[None], chosen[None, :, 0])
        return mixed.reshape(x.shape)


class MoEFactory:
    """``ffn_factory`` for ``TinyGPT``: an ``MoEFeedForward`` in every block."""

    def __init__(self, n_experts: int = 8, k: int = 2, d_ff: int | None = None):
        self.n_experts, self.k, self.d_ff = n_experts, k, d_ff

    def __call__(self, config: GPTConfig):
        return MoEFeedForward(config, self.n_experts, self.k, self.d_ff)


def moe_layers(model: nn.Module) -> list:
    return [m for m in model.modules() if isinstance(m, MoEFeedForward)]


class LoadRecorder:
    """An ``on_step`` hook for ``tinygpt.train``: each MoE layer's expert shares at every step."""

    def __init__(self):
        self.loads = []  # per step: (n_moe_layers, n_experts)

    def __call__(self, step: int, model: nn.Module):
        self.loads.append(torch.stack([layer.last_load for layer in moe_layers(model)]))

    def array(self) -> np.ndarray:
        """(steps, layers, experts) shares of the routed tokens."""
        return torch.stack(self.loads).numpy() if self.loads else np.zeros((0, 0, 0))


def active_params(model: TinyGPT) -> int:
    """Non-embedding parameters one token passes through: all but the experts it is not routed to."""
    inactive = sum(sum(p.numel() for p in layer.experts.parameters()) * (layer.n_experts - layer.k) // layer.n_experts
                   for layer in moe_layers(model))
    return model.n_params() - inactive


class GatedFeedForward(nn.Module):
    """A gated feed-forward network (GLaM's dense layers): d_model -> two d_ff projections, GELU of one times the
    other -> d_model."""

    def __init__(self, d_model: int, d_ff: int, bias: bool = True):
        super().__init__()
        self.gate = nn.Linear(d_model, d_ff, bias=bias)
        self.up = nn.Linear(d_model, d_ff, bias=bias)
        self.down = nn.Linear(d_ff, d_model, bias=bias)

    def forward(self, x):
        return self.down(F.gelu(self.gate(x)) * self.up(x))


def _numel(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def feed_forward_params(d_model: int, d_ff: int, n_experts: int, k: int, n_layers: int, moe_every: int = 2, *,
                        biases: bool = True, gated_dense: bool = False) -> dict:
    """The feed-forward and expert parameters of a stack of ``n_layers`` blocks, counted on PyTorch modules built
    on the meta device (shapes without memory, so GLaM's size costs nothing): blocks moe_every, 2 moe_every, ...
    (counting from 1) hold ``n_experts`` experts, the others one dense FFN (gated with ``gated_dense``); a token
    passes through every dense FFN and ``k`` experts per MoE block. Keys: ``"dense layers"``, ``"moe layers"``,
    ``"dense"``, ``"experts"``, ``"experts active"``, ``"total"`` and ``"active"``."""
    def ffn():  # one FFN or one expert: d_model -> d_ff -> d_model
        return nn.Sequential(nn.Linear(d_model, d_ff, bias=biases), nn.GELU(), nn.Linear(d_ff, d_model, bias=biases))

    with torch.device("meta"):
        blocks = nn.ModuleList()
        for number in range(1, n_layers + 1):
            if number % moe_every:
                blocks.append(GatedFeedForward(d_model, d_ff, biases) if gated_dense else ffn())
            else:
                blocks.append(nn.ModuleList(ffn() for _ in range(n_experts)))
    moe = [block for block in blocks if isinstance(block, nn.ModuleList)]
    dense = [block for block in blocks if not isinstance(block, nn.ModuleList)]
    counts = {"dense layers": len(dense), "moe layers": len(moe), "dense": sum(map(_numel, dense)),
              "experts": sum(map(_numel, moe)), "experts active": sum(_numel(block[:k]) for block in moe)}
    return {**counts, "total": counts["dense"] + counts["experts"],
            "active": counts["dense"] + counts["experts active"]}


def _run(kind: str, config: GPTConfig, train_ids, val_ids, steps: int, batch_size: int, seed: int,
         n_experts: int, k: int, aux_weight: float) -> dict:
    torch.manual_seed(seed)
    model = TinyGPT(config, MoEFactory(n_experts, k) if kind == "moe" else None)
    recorder = LoadRecorder()
    result = train(model, train_ids, steps=steps, batch_size=batch_size, seed=seed, aux_weight=aux_weight,
                   on_step=recorder if kind == "moe" else None, desc=f"{kind}, aux weight {aux_weight:g}")
    return {"loss": result["loss"], "aux_loss": result["aux_loss"], "seconds": result["seconds"],
            "tokens": result["tokens"], "val_loss": validation_loss(model, val_ids, batch_size=32, n_batches=40),
            "n_params": model.n_params(), "active_params": active_params(model),
            "loads": torch.from_numpy(recorder.array()), "state_dict": model.state_dict()}


def dense_vs_moe(config: GPTConfig, train_ids, val_ids, *, steps: int, batch_size: int = 32, seed: int = 0,
                 n_experts: int = 8, k: int = 2, aux_weight: float = 0.01, retrain: bool | None = None) -> dict:
    """Three models trained on the same batches for the same steps: dense, MoE without and with the balancing
    loss (same active parameters), cached in the user cache. ``{"dense": run, "moe": run, "moe_balanced": run}``,
    each run with per-step ``loss``, ``val_loss``, parameter counts, per-step expert ``loads`` and weights."""
    key = {"config": config.as_dict(), "steps": steps, "batch_size": batch_size, "seed": seed, "n_experts": n_experts,
           "k": k, "aux_weight": aux_weight, "n_train": len(train_ids)}

    def compute():
        return {"dense": _run("dense", config, train_ids, val_ids, steps, batch_size, seed, n_experts, k, 0.0),
                "moe": _run("moe", config, train_ids, val_ids, steps, batch_size, seed, n_experts, k, 0.0),
                "moe_balanced": _run("moe", config, train_ids, val_ids, steps, batch_size, seed, n_experts, k,
                                     aux_weight)}

    return cached_run("experts-dense-vs-moe", key, compute, retrain)


def load_imbalance(loads: np.ndarray) -> dict:
    """Summaries of expert shares (steps, layers, experts): the busiest expert's share (1 / n_experts is perfect
    balance) and the coefficient of variation of the shares, averaged over steps and layers."""
    cv = loads.std(axis=-1) / loads.mean(axis=-1)
    return {"max_share": float(loads.max(axis=-1).mean()), "cv": float(cv.mean())}


def plot_expert_loads(loads: np.ndarray, ax, title: str, layer: int = 0):
    """Stacked shares of each expert over the training steps, for one MoE layer."""
    steps = np.arange(loads.shape[0])
    ax.stackplot(steps, loads[:, layer, :].T, labels=[f"expert {e}" for e in range(loads.shape[-1])])
    ax.axhline(0.5, color="white", lw=0.5)
    ax.set(xlim=(0, max(1, len(steps) - 1)), ylim=(0, 1), xlabel="training step", ylabel="share of routed tokens",
           title=title)
    return ax


def plot_routing(probs: torch.Tensor, gates: torch.Tensor, experts: torch.Tensor, ax, title: str):
    """Router probabilities (tokens x experts) as a heat map; each token's kept experts framed, with their gates."""
    probs, gates, experts = (t.detach().cpu().numpy() for t in (probs, gates, experts))
    image = ax.imshow(probs, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    for (token, slot), expert in np.ndenumerate(experts):
        ax.add_patch(plt.Rectangle((expert - 0.5, token - 0.5), 1, 1, fill=False, edgecolor="tab:orange", lw=2.5))
        ax.text(expert, token, f"g = {gates[token, slot]:.2f}", ha="center", va="center", fontsize=8,
                bbox={"facecolor": "white", "alpha": 0.7, "lw": 0, "pad": 1})
    ax.set(xticks=range(probs.shape[1]), yticks=range(probs.shape[0]), xlabel="expert", ylabel="token",
           title=title)
    ax.figure.colorbar(image, ax=ax, label="router probability")
    return ax


# ---------------------------------------------------------------- training at scale on one CPU

def matmul_flops_per_second(n: int = 2048, repeats: int = 5, dtype=torch.float32) -> float:
    """The best rate of an (n, n) @ (n, n) matmul over ``repeats`` tries (2 n^3 FLOPs each): a practical peak."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best


def training_tokens_per_second(model: nn.Module, batch_size: int, steps: int = 5, seed: int = 0) -> float:
    """Tokens per second of forward-backward-update steps of ``model`` on random tokens (after one warm-up)."""
    g = torch.Generator().manual_seed(seed)
    T, V = model.config.block_size, model.config.vocab_size
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randint(V, (batch_size, T), generator=g)
    timings = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        _, loss = model(x, x)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        timings.append(time.perf_counter() - start)
    return batch_size * T / float(np.median(timings[1:]))


def gpipe_schedule(n_stages: int, n_microbatches: int) -> np.ndarray:
    """GPipe's timetable with unit steps, ``(n_stages, 2 (m + p - 1))``, in ``plot_pipeline_schedule``'s code:
    the micro-batch a stage works on (forward j >= 0, backward -j - 2), or -1 when it idles. It is a picture of
    the diagonals: forwards start one step later on each stage; backwards start on the last stage right after its
    last forward and one step later on each stage before it."""
    p, m = n_stages, n_microbatches
    stage, micro = np.meshgrid(np.arange(p), np.arange(m), indexing="ij")  # (p, m) each
    schedule = np.full((p, 2 * (m + p - 1)), -1)
    np.put_along_axis(schedule, stage + micro, micro, axis=1)  # forward diagonals
    np.put_along_axis(schedule, (m + p - 1) + (p - 1 - stage) + micro, -micro - 2, axis=1)  # backward diagonals
    return schedule


def plot_pipeline_schedule(schedule: np.ndarray, ax, title: str):
    """A pipeline schedule: ``schedule[stage, slot]`` is the micro-batch a stage works on (forward j >= 0,
    backward -j - 2), or -1 when it idles."""
    p, slots = schedule.shape
    image = np.full((p, slots, 3), 1.0)
    forward, backward = schedule >= 0, schedule <= -2
    image[forward] = plt.cm.Blues(0.35 + 0.5 * (schedule[forward] % 4) / 4)[:, :3]
    image[backward] = plt.cm.Oranges(0.35 + 0.5 * ((-schedule[backward] - 2) % 4) / 4)[:, :3]
    ax.imshow(image, aspect="auto", interpolation="nearest")
    for (s, t), j in np.ndenumerate(schedule):
        if j != -1:
            ax.text(t, s, str(j if j >= 0 else -j - 2), ha="center", va="center", fontsize=7)
    ax.set(yticks=range(p), yticklabels=[f"stage {s}" for s in range(p)], xticks=range(0, slots, 2),
           xlabel="time slot", title=title)
    return ax
