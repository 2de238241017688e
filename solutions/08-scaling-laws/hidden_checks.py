"""Hidden cases for chapter 08 (instructor's tree only: never released, never shown in feedback).

They test the same behaviour as the visible checks on other shapes and values, so that an answer
fitted to the visible cases fails. ``grader.hidden.run_hidden`` judges them with the visible judge.
"""

import numpy as np

from grader.checks.scaling_laws import BESIROGLU, HOFFMANN, RaisesCase, fit_case
from grader.core import Case

KEYS = ("E", "A", "B", "alpha", "beta")


def _law(fit):
    return tuple(fit[k] for k in KEYS)


def fit_power_law_cases():
    rng = np.random.default_rng(1008)
    x = np.logspace(-1, 1, 20)
    tokens = np.array([2e8, 5e8, 1e9, 4e9, 1.6e10])
    d = np.logspace(8, 13, 11)
    return [
        RaisesCase("twenty points below and above one, 5 % noise",
                   (x, 7.0 * x ** 0.8 * np.exp(0.05 * rng.standard_normal(20)))),
        RaisesCase("loss against tokens, steep", (tokens, 4.0e3 * tokens ** -0.35 * np.exp(0.02 * rng.standard_normal(5)))),
        RaisesCase("tuples of ints", ((2, 3, 5, 7, 11, 13), (40, 31, 22, 18, 13, 12))),
        RaisesCase("loss against tokens above a floor of 1.82",
                   (d, 1.82 + 2085.43 * d ** -0.3658 * np.exp(0.02 * rng.standard_normal(11))), {"floor": 1.82}),
        RaisesCase("a negative y", ([1.0, 10.0, 100.0], [2.0, -1.0, 0.5])),
        RaisesCase("x and y of different lengths", ([1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0])),
        RaisesCase("a single point", ([10.0], [3.0])),
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
    "compute_optimal": compute_optimal_cases,
    "fit_chinchilla": fit_chinchilla_cases,
}
