"""Hidden cases for chapter 08 (instructor's tree only: never released, never shown in feedback).

They test the same behaviour as the visible checks on other shapes and values, so that an answer
fitted to the visible cases fails. ``grader.hidden.run_hidden`` judges them with the visible judge.
"""

import numpy as np

from grader.checks.scaling_laws import BESIROGLU, HOFFMANN, fit_case
from grader.core import Case

KEYS = ("E", "A", "B", "alpha", "beta")


def _law(fit):
    return tuple(fit[k] for k in KEYS)


def fit_power_law_cases():
    rng = np.random.default_rng(1008)
    x = np.logspace(-1, 1, 20)
    tokens = np.array([2e8, 5e8, 1e9, 4e9, 1.6e10])
    return [
        Case("twenty points below and above one, 5 % noise", (x, 7.0 * x ** 0.8 * np.exp(0.05 * rng.standard_normal(20)))),
        Case("loss against tokens, steep", (tokens, 4.0e3 * tokens ** -0.35 * np.exp(0.02 * rng.standard_normal(5)))),
        Case("tuples of ints", ((2, 3, 5, 7, 11, 13), (40, 31, 22, 18, 13, 12))),
    ]


def chinchilla_loss_cases():
    n = np.array([[1e8], [1e9], [1e10]])  # (3, 1)
    d = np.array([[1e9, 1e10, 1e11, 1e12]])  # (1, 4)
    return [
        Case("a grid by broadcasting (3, 1) against (1, 4)", (n, d, 1.7, 350.0, 900.0, 0.31, 0.33)),
        Case("tokens as an array, one model size", (5e9, np.array([1e10, 1e11]), *_law(BESIROGLU))),
        Case("a tiny model on a few tokens", (1e5, 1e6, 0.5, 50.0, 20.0, 0.6, 0.2)),
    ]


def compute_optimal_cases():
    return [
        Case("a very large budget", (1e26, *_law(HOFFMANN))),
        Case("GPT-3's budget with the refit", (3.14e23, *_law(BESIROGLU))),
        Case("beta much larger than alpha", (1e20, 1.0, 600.0, 50.0, 0.2, 0.6)),
    ]


def fit_chinchilla_cases():
    return [
        fit_case("refit parameters, 9 budgets x 8 sizes", 1801, BESIROGLU, n_budgets=9, per_budget=8),
        fit_case("beta above alpha, fewer outliers", 1802,
                 {"E": 1.5, "A": 250.0, "B": 4000.0, "alpha": 0.3, "beta": 0.42}, n_outliers=2),
    ]


CASES = {
    "fit_power_law": fit_power_law_cases,
    "chinchilla_loss": chinchilla_loss_cases,
    "compute_optimal": compute_optimal_cases,
    "fit_chinchilla": fit_chinchilla_cases,
}
