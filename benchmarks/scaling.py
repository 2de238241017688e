"""What lesson 08's sweep and Approach-3 fit cost on this machine; prints two tables.

    .venv/bin/python benchmarks/scaling.py [--steps 20] [--threads N]

1. For each shape of the size sweep (``llmcourse.scaling.SWEEP_SHAPES``): non-embedding parameters,
   milliseconds per training step (batch 32 x 64 characters, median of ``--steps`` steps after a warm-up),
   tokens per second and the time that shape's 400 full-mode steps take; then the token sweep's total.
2. Hoffmann et al.'s Approach 3 on the 240 points Besiroglu et al. kept, from grids of 32, 243 and 1,024
   starts: seconds with one BLAS thread (as the check and the lesson run it) and with the library's default
   threads, E, alpha and beta (Besiroglu et al.: 1.82, 0.3478, 0.3658).
"""

import argparse
import itertools
import math
import time

import numpy as np
import torch
from scipy.optimize import minimize
from scipy.special import logsumexp

from llmcourse.data import chinchilla_points
from llmcourse.scaling import SWEEP_SHAPES, config_of, single_threaded_blas, sweep_learning_rate
from llmcourse.tinygpt import TinyGPT, get_batch

FULL_STEPS, TOKEN_SHAPE, TOKEN_STEPS = 400, (2, 2, 32), [50, 100, 200, 400, 800, 1600]
BATCH, BLOCK, VOCAB = 32, 64, 84
DELTA = 1e-3


def step_seconds(shape, steps: int) -> tuple[float, int]:
    """(median seconds of a forward-backward-AdamW step of one sweep shape on random characters, its N)."""
    torch.manual_seed(0)
    model = TinyGPT(config_of(shape, VOCAB, BLOCK))
    optimizer = torch.optim.AdamW(model.parameters(), lr=sweep_learning_rate(shape[2]))
    data = torch.randint(VOCAB, (100_000,))
    g = torch.Generator().manual_seed(0)
    times = []
    for _ in range(steps + 1):
        x, y = get_batch(data, BLOCK, BATCH, g)
        start = time.perf_counter()
        _, loss = model(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return float(np.median(times[1:])), model.n_params()


def objective(x, log_n, log_d, log_l):
    a, b, e, alpha, beta = x
    terms = np.stack([a - alpha * log_n, b - beta * log_d, np.full_like(log_n, e)])
    predicted = logsumexp(terms, axis=0)
    r = predicted - log_l
    value = np.where(np.abs(r) <= DELTA, 0.5 * r ** 2, DELTA * (np.abs(r) - 0.5 * DELTA)).sum()
    g = np.clip(r, -DELTA, DELTA) * np.exp(terms - predicted)
    return value, np.array([g[0].sum(), g[1].sum(), g[2].sum(), -(g[0] * log_n).sum(), -(g[1] * log_d).sum()])


def approach3(points, grid) -> tuple[float, dict]:
    logs = tuple(np.log(points[c].to_numpy()) for c in ("n_params", "n_tokens", "loss"))
    start = time.perf_counter()
    best = min((minimize(objective, np.array(x0, float), args=logs, jac=True, method="L-BFGS-B") for x0 in grid),
               key=lambda r: r.fun)
    a, b, e, alpha, beta = best.x
    return time.perf_counter() - start, {"E": math.exp(e), "alpha": alpha, "beta": beta}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per shape")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch threads: {torch.get_num_threads()}\n")
    print(f"{'shape (L, heads, d)':<20} {'N':>10} {'ms/step':>9} {'tokens/s':>10} {'400 steps':>10}")
    total = 0.0
    for shape in SWEEP_SHAPES:
        seconds, n = step_seconds(shape, args.steps)
        total += FULL_STEPS * seconds
        print(f"{str(shape):<20} {n:>10,} {seconds * 1e3:>9.1f} {BATCH * BLOCK / seconds:>10,.0f} "
              f"{FULL_STEPS * seconds:>9.1f}s")
    token_seconds = step_seconds(TOKEN_SHAPE, args.steps)[0] * sum(TOKEN_STEPS)
    print(f"size sweep (full mode): {total:.0f} s; token sweep {TOKEN_SHAPE} x {sum(TOKEN_STEPS)} steps: "
          f"{token_seconds:.0f} s (training only; evaluation adds a few per cent)\n")

    points = chinchilla_points()
    kept = points.drop(points["loss"].nlargest(5).index)
    grids = {
        "2^5 = 32": list(itertools.product([0, 20], [0, 20], [-1, 1], [0, 1], [0, 1])),
        "3^5 = 243": list(itertools.product([0, 10, 20], [0, 10, 20], [-1, 0, 1], [0, 0.5, 1], [0, 0.5, 1])),
        "4^5 = 1,024": list(itertools.product(*[np.linspace(0, 25, 4)] * 2, np.linspace(-1, 1, 4),
                                              *[np.linspace(0, 2, 4)] * 2)),
    }
    print(f"Approach 3 on {len(kept)} points (Besiroglu et al.: E 1.82, alpha 0.3478, beta 0.3658)")
    print(f"{'grid of starts':<16} {'seconds':>8} {'(BLAS threads)':>15} {'E':>7} {'alpha':>8} {'beta':>8}")
    for name, grid in grids.items():
        seconds, fit = approach3(kept, grid)
        with single_threaded_blas():
            threaded = seconds
            seconds, fit = approach3(kept, grid)
        print(f"{name:<16} {seconds:>8.1f} {threaded:>14.1f}s {fit['E']:>7.3f} {fit['alpha']:>8.4f} "
              f"{fit['beta']:>8.4f}")


if __name__ == "__main__":
    main()
