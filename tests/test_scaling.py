"""Lesson 08's helpers (llmcourse/scaling.py): published numbers, the cached sweeps of small GPTs, plots."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from llmcourse import scaling  # noqa: E402
from llmcourse.tinygpt import TinyGPT, char_dataset  # noqa: E402


@pytest.fixture
def data(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMCOURSE_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("LLMCOURSE_RETRAIN", raising=False)
    tokenizer, train_ids, val_ids = char_dataset("To be, or not to be: that is the question. " * 60)
    return tokenizer.vocab_size, train_ids, val_ids


def test_published_numbers():
    assert scaling.KAPLAN["alpha_N"] == 0.076 and scaling.KAPLAN["N_c"] == 8.8e13
    assert set(scaling.PUBLISHED_FITS) == {"Hoffmann et al. 2022", "Besiroglu et al. 2024"}
    chinchilla = next(m for m in scaling.LARGE_MODELS if m.name == "Chinchilla")
    assert chinchilla.tokens / chinchilla.params == 20


def test_sweep_shapes_span_ten_thousand_to_a_million_parameters():
    counts = [TinyGPT(scaling.config_of(s, 84, 64)).n_params() for s in scaling.SWEEP_SHAPES]
    assert len(counts) >= 5 and counts == sorted(counts)
    assert 8e3 < counts[0] < 2e4 and 7e5 < counts[-1] < 1.3e6


def test_size_sweep_trains_once_then_loads_from_the_cache(data, capsys):
    vocab, train_ids, val_ids = data
    shapes = [(1, 2, 8), (1, 2, 16)]
    first = scaling.size_sweep(shapes, train_ids, val_ids, vocab, steps=6, batch_size=4, block_size=16)
    assert [r["config"]["n_embd"] for r in first["runs"]] == [8, 16]
    assert all(r["tokens"] == 6 * 4 * 16 and np.isfinite(r["val_loss"]) for r in first["runs"])
    assert first["runs"][0]["n_params"] < first["runs"][1]["n_params"]
    capsys.readouterr()
    again = scaling.size_sweep(shapes, train_ids, val_ids, vocab, steps=6, batch_size=4, block_size=16)
    assert "loaded the cached run" in capsys.readouterr().out
    assert again["runs"][0]["val_loss"] == first["runs"][0]["val_loss"]
    table = scaling.sweep_table(again)
    assert list(table["n_embd"]) == [8, 16] and "val loss" in table


def test_retrain_trains_again_with_the_same_result(data):
    vocab, train_ids, val_ids = data
    first = scaling.size_sweep([(1, 2, 8)], train_ids, val_ids, vocab, steps=4, batch_size=4, block_size=16)
    again = scaling.size_sweep([(1, 2, 8)], train_ids, val_ids, vocab, steps=4, batch_size=4, block_size=16,
                               retrain=True)
    assert again["runs"][0]["val_loss"] == first["runs"][0]["val_loss"]  # fixed seeds


def test_token_sweep_trains_one_shape_for_each_length(data):
    vocab, train_ids, val_ids = data
    sweep = scaling.token_sweep((1, 2, 8), train_ids, val_ids, vocab, steps_list=[2, 8], batch_size=4,
                                block_size=16)
    assert [r["tokens"] for r in sweep["runs"]] == [2 * 64, 8 * 64]
    assert sweep["runs"][0]["n_params"] == sweep["runs"][1]["n_params"]


def test_iso_loss_plot_draws_contours():
    law = scaling.PUBLISHED_FITS["Besiroglu et al. 2024"]
    ax = scaling.plot_iso_loss(lambda n, d: law["E"] + law["A"] / n ** law["alpha"] + law["B"] / d ** law["beta"])
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "parameters N"
    assert ax.collections  # the contour lines


def test_single_threaded_blas_limits_and_restores_openblas():
    import scipy.optimize  # noqa: F401  (loads SciPy's OpenBLAS too)

    controls = scaling.openblas_thread_controls()
    before = [get() for get, _ in controls]
    with scaling.single_threaded_blas():
        assert all(get() == 1 for get, _ in controls)
    assert [get() for get, _ in controls] == before


def test_optimal_split_is_the_minimum_on_the_budget_line():
    law = scaling.PUBLISHED_FITS["Besiroglu et al. 2024"]
    n, d = scaling.optimal_split(scaling.GOPHER_BUDGET, law)
    assert isinstance(n, float) and 6 * n * d == pytest.approx(scaling.GOPHER_BUDGET)
    assert n == pytest.approx(7.2e10, rel=0.01) and d / n == pytest.approx(18.4, abs=0.1)  # the exercise's check

    def loss(size):
        return law["A"] / size ** law["alpha"] + law["B"] / (scaling.GOPHER_BUDGET / (6 * size)) ** law["beta"]

    assert loss(n) < min(loss(n * 1.001), loss(n / 1.001))
    sizes, tokens = scaling.optimal_split(np.array([1e20, 1e22]), law)
    assert sizes.shape == tokens.shape == (2,) and (np.diff(sizes) > 0).all()
    ratio = sizes[1] / sizes[0]  # N_opt grows as C^(beta / (alpha + beta))
    assert ratio == pytest.approx(100 ** (law["beta"] / (law["alpha"] + law["beta"])), rel=1e-5)


def test_refit_law_minimises_the_huber_objective_and_recovers_the_law():
    truth = {"E": 1.8, "A": 480.0, "B": 2000.0, "alpha": 0.35, "beta": 0.36}
    rng = np.random.default_rng(0)
    n = np.exp(rng.uniform(np.log(5e7), np.log(2e10), 120))
    d = np.exp(rng.uniform(np.log(2e8), np.log(4e11), 120))
    losses = (truth["E"] + truth["A"] / n ** truth["alpha"] + truth["B"] / d ** truth["beta"]) \
        * np.exp(rng.normal(0, 2e-3, 120))
    law, objective = scaling.refit_law(n, d, losses)
    assert set(law) == set(truth) and objective > 0
    assert law["E"] == pytest.approx(truth["E"], rel=0.02)
    assert law["alpha"] == pytest.approx(truth["alpha"], abs=0.02) and law["beta"] == pytest.approx(truth["beta"], abs=0.02)


def test_refit_law_reproduces_besiroglu_on_the_240_points():
    from llmcourse.data import chinchilla_points

    points = chinchilla_points()
    kept = points.drop(points["loss"].nlargest(5).index)
    law, _ = scaling.refit_law(kept.n_params, kept.n_tokens, kept.loss)
    published = scaling.PUBLISHED_FITS["Besiroglu et al. 2024"]
    for key in ("E", "alpha", "beta"):
        assert law[key] == pytest.approx(published[key], abs=0.006), key
