"""Lesson 08 helpers: the published numbers of the scaling-law papers and a sweep of small GPTs on the CPU.

The sweep trains ``llmcourse.tinygpt`` models on character-level Shakespeare, each for a fixed number of
steps, and records their held-out loss. Results go through ``llmcourse.cache.cached_run``, so a lesson
re-run loads them instead of training again (``LLMCOURSE_RETRAIN=1`` trains again).

Two helpers give the lesson what exercises 2 and 3 of chapter 08 build, computed another way, and those
exercises forbid them (grader/forbidden.py): ``optimal_split`` finds the compute-optimal split numerically
(SciPy's bounded scalar minimiser along each budget line), not from the closed form that ``compute_optimal``
asks for; ``refit_law`` minimises Approach 3's objective with SciPy's ``least_squares`` (its Huber loss), not
with an objective, a gradient and L-BFGS as ``fit_chinchilla`` asks.
"""

import ctypes
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.ticker import FuncFormatter
from scipy.optimize import least_squares, minimize_scalar
from tqdm.auto import tqdm

from llmcourse.cache import cached_run
from llmcourse.tinygpt import GPTConfig, TinyGPT, train, validation_loss

# Kaplan et al. 2020, "Scaling Laws for Neural Language Models", Section 1.2 (loss in nats per token,
# N non-embedding parameters, D tokens, C_min in PF-days)
KAPLAN = {"alpha_N": 0.076, "N_c": 8.8e13, "alpha_D": 0.095, "D_c": 5.4e13, "alpha_C": 0.050, "C_c": 3.1e8,
          "N_opt_exponent": 0.73}
PF_DAY = 1e15 * 86_400  # FLOPs in a petaflop/s-day

# L(N, D) = E + A / N^alpha + B / D^beta as published: Hoffmann et al. 2022 (arXiv:2203.15556), Approach 3
# (Section 3.3; the fitted values in Appendix D.2); Besiroglu et al. 2024 (arXiv:2404.10102), their refit on
# the Figure-4 points shipped in llmcourse/course_data/chinchilla (its CITATION file names the source)
PUBLISHED_FITS = {
    "Hoffmann et al. 2022": {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28},
    "Besiroglu et al. 2024": {"E": 1.82, "A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658},
}
GOPHER_BUDGET = 5.76e23  # FLOPs, Gopher's training compute as Hoffmann et al. 2022 give it


@dataclass(frozen=True)
class LargeModel:
    name: str
    params: float
    tokens: float
    source: str


LARGE_MODELS = [
    LargeModel("GPT-3", 175e9, 300e9, "Brown et al. 2020"),
    LargeModel("Gopher", 280e9, 300e9, "Rae et al. 2021"),
    LargeModel("MT-NLG", 530e9, 270e9, "Smith et al. 2022"),
    LargeModel("PaLM", 540e9, 780e9, "Chowdhery et al. 2022"),
    LargeModel("Chinchilla", 70e9, 1.4e12, "Hoffmann et al. 2022"),
]

# (n_layer, n_head, n_embd) of the size sweep: about 10 thousand to 1 million non-embedding parameters
SWEEP_SHAPES = [(2, 2, 20), (2, 2, 32), (3, 2, 40), (3, 4, 64), (4, 4, 96), (5, 4, 128)]
QUICK_SWEEP_SHAPES = [(1, 2, 16), (2, 2, 20), (2, 2, 24), (2, 2, 32), (3, 2, 40)]


LR_RULE = "min(1e-2, 3e-3 * max(1, 64 / n_embd))"  # part of the cache key: a new rule trains again


def sweep_learning_rate(n_embd: int) -> float:
    """Peak learning rate of the sweep: 3e-3 from d_model 64 up, larger for narrower models (at most 1e-2),
    which learn faster with larger steps (measured on this corpus at 400 steps)."""
    return min(1e-2, 3e-3 * max(1.0, 64 / n_embd))


def config_of(shape, vocab_size: int, block_size: int) -> GPTConfig:
    n_layer, n_head, n_embd = shape
    return GPTConfig(vocab_size=vocab_size, block_size=block_size, n_layer=n_layer, n_head=n_head, n_embd=n_embd)


def train_and_evaluate(config: GPTConfig, train_ids, val_ids, steps: int, batch_size: int, seed: int = 0,
                       eval_batches: int = 40, desc: str = "") -> dict:
    """Train one TinyGPT for ``steps`` steps and evaluate it: a record of plain numbers."""
    torch.manual_seed(seed)
    model = TinyGPT(config)
    lr = sweep_learning_rate(config.n_embd)
    result = train(model, train_ids, steps=steps, batch_size=batch_size, lr=lr, seed=seed, desc=desc)
    return {"config": config.as_dict(), "n_params": model.n_params(), "n_params_total": model.n_params(False),
            "lr": lr, "steps": steps, "tokens": result["tokens"], "train_loss": result["loss"][::max(1, steps // 100)],
            "val_loss": validation_loss(model, val_ids, batch_size=32, n_batches=eval_batches),
            "seconds": result["seconds"]}


def _sweep(runs: list, train_ids, val_ids, batch_size: int, seed: int, what: str) -> dict:
    """Train every (config, steps) of ``runs`` in turn, with an overall progress bar."""
    start = time.perf_counter()
    records = []
    for config, steps in tqdm(runs, desc=what):
        desc = f"{config.n_layer} layers, d={config.n_embd}, {steps} steps"
        records.append(train_and_evaluate(config, train_ids, val_ids, steps, batch_size, seed, desc=desc))
    return {"runs": records, "seconds": time.perf_counter() - start}


def size_sweep(shapes, train_ids, val_ids, vocab_size: int, *, steps: int, batch_size: int = 32,
               block_size: int = 64, seed: int = 0, retrain: bool | None = None) -> dict:
    """Models of every shape (n_layer, n_head, n_embd), each trained for the same ``steps`` (so the same
    tokens), cached in the user cache. ``{"runs": [record, ...], "seconds": ...}``."""
    key = {"kind": "size", "shapes": [list(s) for s in shapes], "steps": steps, "batch_size": batch_size,
           "lr": LR_RULE, "block_size": block_size, "seed": seed, "vocab_size": vocab_size, "n_train": len(train_ids)}
    runs = [(config_of(s, vocab_size, block_size), steps) for s in shapes]
    return cached_run("scaling-size-sweep", key,
                      lambda: _sweep(runs, train_ids, val_ids, batch_size, seed, "size sweep"), retrain)


def token_sweep(shape, train_ids, val_ids, vocab_size: int, *, steps_list, batch_size: int = 32,
                block_size: int = 64, seed: int = 0, retrain: bool | None = None) -> dict:
    """One shape trained for each number of steps in ``steps_list`` (separate runs, each with its own
    learning-rate schedule), cached in the user cache."""
    key = {"kind": "tokens", "shape": list(shape), "steps": list(steps_list), "batch_size": batch_size,
           "lr": LR_RULE, "block_size": block_size, "seed": seed, "vocab_size": vocab_size, "n_train": len(train_ids)}
    runs = [(config_of(shape, vocab_size, block_size), s) for s in steps_list]
    return cached_run("scaling-token-sweep", key,
                      lambda: _sweep(runs, train_ids, val_ids, batch_size, seed, "token sweep"), retrain)


def sweep_table(sweep: dict):
    """The sweep's runs as a pandas DataFrame, one row per model."""
    import pandas as pd

    rows = [{"n_layer": r["config"]["n_layer"], "n_embd": r["config"]["n_embd"], "N (non-embedding)": r["n_params"],
             "N (all)": r["n_params_total"], "learning rate": r["lr"], "tokens": r["tokens"],
             "tokens / N": r["tokens"] / r["n_params"],
             "val loss": round(r["val_loss"], 4), "seconds": round(r["seconds"], 1)} for r in sweep["runs"]]
    return pd.DataFrame(rows)


def loglog_axes(ax, xlabel: str, ylabel: str, title: str):
    """Log-log axes with a grid and labels; the y ticks as plain numbers (losses span less than a decade)."""
    ax.set(xscale="log", yscale="log", xlabel=xlabel, ylabel=ylabel, title=title)
    plain = FuncFormatter(lambda value, _: f"{value:g}")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)
    ax.grid(True, which="both", alpha=0.3)
    return ax


def plot_iso_loss(law, n_range=(1e8, 1e13), d_range=(1e9, 1e14), levels=None, ax=None, cmap="viridis"):
    """Contours of ``law(N, D)`` (a callable on arrays) over log-spaced N and D, and lines of equal compute
    C = 6 N D; returns the axes."""
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 5.5))
    n = np.logspace(np.log10(n_range[0]), np.log10(n_range[1]), 200)
    d = np.logspace(np.log10(d_range[0]), np.log10(d_range[1]), 200)
    N, D = np.meshgrid(n, d)  # (200, 200)
    L = law(N, D)
    contours = ax.contour(N, D, L, levels=levels if levels is not None else 12, cmap=cmap)
    ax.clabel(contours, fontsize=7, fmt="%.2f")
    for exponent in range(18, 28, 2):  # iso-FLOP lines: D = C / (6 N)
        ax.plot(n, 10.0 ** exponent / (6 * n), color="0.7", lw=0.8, ls=":")
        x = np.sqrt(10.0 ** exponent / 6)
        if n_range[0] < x < n_range[1] and d_range[0] < x < d_range[1]:
            ax.annotate(f"C = 1e{exponent}", (x, x), fontsize=7, color="0.45", rotation=-38)
    ax.set(xscale="log", yscale="log", xlim=n_range, ylim=d_range, xlabel="parameters N",
           ylabel="training tokens D")
    return ax


# ---------------------------------------------------------------- the law: its optimum on a budget, its refit

def optimal_split(compute_flops, law: dict):
    """(N, D) on the budget line C = 6 N D where ``law`` (keys E, A, B, alpha, beta) predicts the lowest loss,
    found numerically: SciPy's bounded scalar minimiser (Brent's method) slides along the line over log N, from
    one parameter to C / 6. A number gives two floats, an array of budgets two arrays."""
    budgets = np.asarray(compute_flops, dtype=float)
    sizes = np.empty(budgets.shape)
    def on_the_line(log_n, log_c6):  # the reducible loss at N = e^log_n, D = C / (6 N) = e^(log_c6 - log_n)
        return law["A"] * np.exp(-law["alpha"] * log_n) + law["B"] * np.exp(-law["beta"] * (log_c6 - log_n))

    for where, budget in np.ndenumerate(budgets):
        log_c6 = float(np.log(budget / 6))
        found = minimize_scalar(on_the_line, bounds=(0.0, log_c6), args=(log_c6,), method="bounded",
                                options={"xatol": 1e-11})
        sizes[where] = np.exp(found.x)
    tokens = budgets / (6 * sizes)
    if budgets.ndim == 0:
        return float(sizes), float(tokens)
    return sizes, tokens


# Hoffmann et al.'s grid of starting points for Approach 3, as the lesson and exercise 3 use it (243 starts):
# log A and log B in {0, 10, 20}, log E in {-1, 0, 1}, alpha and beta in {0, 0.5, 1}
APPROACH3_GRID = {"log A": (0, 10, 20), "log B": (0, 10, 20), "log E": (-1, 0, 1), "alpha": (0, 0.5, 1),
                  "beta": (0, 0.5, 1)}


def refit_law(n_params, n_tokens, losses, delta: float = 1e-3, desc: str | None = None):
    """Approach 3's fit of L(N, D) = E + A / N^alpha + B / D^beta to final losses: ``(law, objective)``, with
    ``law`` the dict of E, A, B, alpha, beta and ``objective`` the sum of Huber losses (``delta``) between the
    predicted and the observed log-losses at its minimum.

    SciPy's ``least_squares`` with ``loss="huber"`` and ``f_scale=delta`` minimises exactly that sum (its cost is
    0.5 r^2 for |r| <= delta and delta (|r| - delta / 2) above), with a trust-region method and finite-difference
    derivatives of the residuals (each parameter scaled by them, ``x_scale="jac"``, which halves the time), from
    every start of ``APPROACH3_GRID``; the lowest cost wins."""
    log_n, log_d, log_l = (np.log(np.asarray(values, dtype=float)) for values in (n_params, n_tokens, losses))

    def residuals(p):  # log(E + A / N^alpha + B / D^beta) - log L, with (log A, log B, log E, alpha, beta) = p
        return np.logaddexp(np.logaddexp(p[0] - p[3] * log_n, p[1] - p[4] * log_d), p[2]) - log_l

    starts = np.stack([axis.ravel() for axis in np.meshgrid(*APPROACH3_GRID.values(), indexing="ij")], axis=1)
    with single_threaded_blas():  # five unknowns: BLAS threads only synchronise
        runs = [least_squares(residuals, start.astype(float), loss="huber", f_scale=delta, x_scale="jac")
                for start in tqdm(starts, desc=desc, leave=False, disable=desc is None)]
    best = min(runs, key=lambda run: run.cost)
    law = dict(zip(("A", "B", "E"), np.exp(best.x[:3]).tolist())) | {"alpha": float(best.x[3]), "beta": float(best.x[4])}
    return {key: law[key] for key in ("E", "A", "B", "alpha", "beta")}, float(best.cost)


# ---------------------------------------------------------------- BLAS threads for tiny optimisations

_OPENBLAS_THREAD_FUNCTIONS = [("openblas_get_num_threads", "openblas_set_num_threads"),
                              ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
                              ("scipy_openblas_get_num_threads", "scipy_openblas_set_num_threads"),
                              ("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_")]


def openblas_thread_controls() -> list:
    """(get, set) functions of every OpenBLAS loaded in this process (NumPy and SciPy each ship one); empty where
    the process maps cannot be read (not Linux) or no OpenBLAS is loaded."""
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "openblas" in os.path.basename(line.split()[-1]).lower()}
    except (OSError, IndexError):
        return []
    controls = []
    for path in sorted(paths):
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for get_name, set_name in _OPENBLAS_THREAD_FUNCTIONS:
            get, set_ = getattr(library, get_name, None), getattr(library, set_name, None)
            if get is not None and set_ is not None:
                controls.append((get, set_))
                break
    return controls


@contextmanager
def single_threaded_blas():
    """Run the block with OpenBLAS on one thread. SciPy's L-BFGS-B calls BLAS on vectors of five numbers:
    extra threads only synchronise, which on a busy machine makes an Approach-3 fit 10 to 30 times slower."""
    controls = [(set_, get()) for get, set_ in openblas_thread_controls()]
    for set_, _ in controls:
        set_(1)
    try:
        yield
    finally:
        for set_, threads in controls:
            set_(threads)
