"""The model timeline of lesson 01: the table, the source of each of its numbers, and its plot (fast, no models)."""

import re

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from llmcourse.timeline import (FAMILIES, days_to_train, dense_training_flops, human_count,  # noqa: E402
                                implied_utilisation, model_timeline, plot_parameter_growth, pretraining_costs)

COLUMNS = ["name", "organisation", "date", "parameters", "training_tokens", "family", "sparse",
           "open_weights", "source", "parameters_source", "tokens_source", "notes"]
DERIVED = re.compile(r"^derived: ([\d,]+) steps x ([\d,]+) sequences x ([\d,]+) tokens")


@pytest.fixture(scope="module")
def df():
    return model_timeline()


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def row(df, name):
    match = df[df["name"] == name]
    assert len(match) == 1, name
    return match.iloc[0]


def test_columns_and_types(df):
    assert list(df.columns) == COLUMNS
    assert pd.api.types.is_datetime64_any_dtype(df["date"])
    assert df["parameters"].dtype == np.int64
    assert df["training_tokens"].dtype == np.float64
    assert df["sparse"].dtype == bool and df["open_weights"].dtype == bool
    assert set(df["family"]) <= set(FAMILIES)
    assert df["name"].is_unique
    assert len(df) >= 20


def test_every_row_has_a_source_with_authors_year_and_title(df):
    for _, r in df.iterrows():
        authors_year = re.match(r"^([A-Z].*?) ((?:19|20)\d\d), (.{10,})", r["source"])
        assert authors_year, r["name"]
        if "arXiv:" not in r["source"]:  # dated by the report or release itself
            assert int(authors_year[2]) == r["date"].year, r["name"]
        else:  # dated by arXiv v1; the citation may be the later publication (BERT: NAACL 2019)
            assert int(authors_year[2]) >= r["date"].year, r["name"]


def test_dates_are_sorted_plausible_and_match_the_arxiv_ids(df):
    assert df["date"].is_monotonic_increasing
    assert df["date"].min() >= pd.Timestamp("2017-06-01") and df["date"].max() <= pd.Timestamp("2022-12-31")
    for _, r in df.iterrows():
        arxiv = re.search(r"arXiv:(\d\d)(\d\d)\.\d{5}", r["source"])
        if arxiv:  # the date is the arXiv v1 date, so it falls in the id's month
            assert (r["date"].year % 100, r["date"].month) == (int(arxiv[1]), int(arxiv[2])), r["name"]


def test_every_number_names_its_source(df):
    for _, r in df.iterrows():
        assert r["parameters_source"], r["name"]
        assert r["tokens_source"].startswith("not stated") == np.isnan(r["training_tokens"]), r["name"]


def test_derived_token_counts_are_the_product_of_their_schedule(df):
    derived = df[df["tokens_source"].str.startswith("derived")]
    assert set(derived["name"]) == {"BERT-base", "BERT-large", "RoBERTa-large", "T5-11B", "GPT-NeoX-20B"}
    for _, r in derived.iterrows():
        steps, sequences, tokens = (int(x.replace(",", "")) for x in DERIVED.match(r["tokens_source"]).groups())
        assert steps * sequences * tokens == r["training_tokens"], r["name"]


def test_values_taken_from_elsewhere_than_the_models_paper_say_so(df):
    assert "GPT-2 paper" in row(df, "GPT")["parameters_source"]
    assert "fairseq" in row(df, "RoBERTa-large")["parameters_source"]
    assert "fairseq" in row(df, "BART-large")["parameters_source"]
    assert "Chinchilla paper" in row(df, "LaMDA")["tokens_source"]
    for name in ["GPT-NeoX-20B", "GPT-J-6B", "BLOOM"]:
        assert row(df, name)["parameters_source"].startswith("model card"), name
    assert row(df, "BERT-base")["source"].startswith("Devlin et al. 2019")
    assert "arXiv:1810.04805" in row(df, "BERT-base")["source"]


def test_known_values_from_the_papers(df):
    assert row(df, "BERT-base")["parameters"] == 110_000_000
    assert row(df, "BERT-large")["parameters"] == 340_000_000
    gpt3 = row(df, "GPT-3")
    assert gpt3["parameters"] == 175e9 and gpt3["training_tokens"] == 300e9
    assert row(df, "PaLM")["parameters"] == pytest.approx(540e9, rel=1e-3)
    assert row(df, "Chinchilla")["training_tokens"] == 1.4e12
    assert row(df, "Gopher")["training_tokens"] == 300e9
    assert row(df, "OPT-175B")["training_tokens"] == 300e9  # trained on; its corpus is 180B
    assert row(df, "GLaM")["parameters"] == pytest.approx(1.2e12)
    assert row(df, "DistilBERT")["parameters"] == 66_000_000
    assert row(df, "BART-large")["parameters"] == 400_000_000


def test_sparse_models_are_the_mixtures_of_experts(df):
    assert set(df.loc[df["sparse"], "name"]) == {"GLaM", "Switch-C"}
    assert "96.6B" in row(df, "GLaM")["parameters_source"]


def test_families(df):
    assert row(df, "BERT-base")["family"] == "encoder"
    assert row(df, "T5-11B")["family"] == "encoder-decoder"
    assert row(df, "Transformer (big)")["family"] == "encoder-decoder"
    assert row(df, "GPT-3")["family"] == "decoder"
    assert row(df, "BART-large")["family"] == "encoder-decoder"
    assert row(df, "DistilBERT")["family"] == "encoder"


def test_missing_token_counts_are_nan_and_the_rest_plausible(df):
    assert np.isnan(row(df, "GPT-2")["training_tokens"])
    known = df["training_tokens"].dropna()
    assert (known >= 1e10).all() and (known <= 1e13).all()


def test_plot_has_one_point_per_model_a_log_axis_and_a_family_legend(df):
    ax = plot_parameter_growth(df)
    offsets = np.concatenate([c.get_offsets() for c in ax.collections])
    assert len(offsets) == len(df)
    assert sorted(offsets[:, 1]) == sorted(df["parameters"].astype(float))
    assert ax.get_yscale() == "log"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert set(FAMILIES) <= set(legend)
    assert any("sparse" in t for t in legend)


def test_plot_labels_every_model_without_overlaps(df):
    ax = plot_parameter_growth(df)
    labels = {t.get_text(): t for t in ax.texts}
    assert set(labels) == set(df["name"])
    ax.figure.canvas.draw()  # as when shown: the layout is final
    renderer = ax.figure.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in labels.values()]
    overlapping = [(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:] if a.overlaps(b)]
    assert not overlapping


def test_plot_draws_on_a_given_axes(df):
    fig, (left, right) = plt.subplots(1, 2)
    assert plot_parameter_growth(df.head(5), ax=right) is right
    assert not left.collections


@pytest.mark.parametrize("n, text", [(110e6, "110M"), (1.2e12, "1.2T"), (175e9, "175B"), (500, "500")])
def test_human_count(n, text):
    assert human_count(n) == text


def test_the_cost_helpers_follow_6nd_and_the_sustained_rate():
    assert dense_training_flops(175e9, 300e9) == pytest.approx(3.15e23)  # GPT-3: Table D.1 gives 3.14e23
    # GPT-2 small on 20 tokens per parameter, one A100 at 40 %: the lesson's worked example, about 4.1 hours
    flops = dense_training_flops(124_439_808, 20 * 124_439_808)
    assert days_to_train(flops, 1, 312e12, 0.4) * 24 == pytest.approx(4.136, abs=1e-3)
    assert days_to_train(8.64e19, 10, 1e14, 0.5) == pytest.approx(2.0)  # 8.64e19 / (5e14 FLOP/s) = 2 days
    assert implied_utilisation(8.64e19, 10, 1e14, days=2.0) == pytest.approx(0.5)
    assert implied_utilisation(8.64e19, 10, 1e14, days=4.0) == pytest.approx(0.25)


def test_pretraining_costs_has_the_lessons_columns():
    runs = [("small", 1e8, 1e10), ("big", 1e9, 1e11)]
    table = pretraining_costs(runs, {"V100": 125e12, "A100": 312e12}, 0.4, (0.5, 0.2))
    assert list(table.columns) == ["N", "D (tokens)", "FLOPs", "V100-days @40%", "V100-days @50%..20%",
                                   "A100-days @40%"]
    assert list(table.index) == ["small", "big"]
    assert table.loc["big", "FLOPs"] == pytest.approx(6e20)
    assert table.loc["big", "V100-days @40%"] == pytest.approx(6e20 / (125e12 * 0.4) / 86_400)
    assert table.loc["big", "A100-days @40%"] == pytest.approx(6e20 / (312e12 * 0.4) / 86_400)
    low, high = (6e20 / (125e12 * u) / 86_400 for u in (0.5, 0.2))
    assert table.loc["big", "V100-days @50%..20%"] == f"{low:,.0f} .. {high:,.0f}"
