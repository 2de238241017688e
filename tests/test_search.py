"""BERT in search (lesson 01): keyword overlap against MiniLM embeddings, with the real shipped MiniLM."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.colors as mcolors  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from llmcourse.models import load_encoder  # noqa: E402
from llmcourse.search import (COURSE_QUERIES, CURLING, DOCUMENTS, PRESCRIPTION, compare_methods, embed,  # noqa: E402
                              keyword_scores, keywords, plot_scores, rank_of, ranking, semantic_scores,
                              sentence_pair_count)


@pytest.fixture(scope="module")
def minilm():
    return load_encoder(device="cpu")


def test_the_answers_avoid_the_queries_words():
    assert not {"objective", "main"} & keywords(DOCUMENTS[CURLING])
    assert not {"medicine", "can", "get"} & keywords(DOCUMENTS[PRESCRIPTION])
    assert set(COURSE_QUERIES.values()) == {CURLING, PRESCRIPTION}


def test_keyword_scores_count_distinct_non_stopwords():
    docs = ["The main aim", "main main objective of curling", "nothing here"]
    assert keyword_scores("What's the MAIN objective of curling?", docs) == [1, 3, 0]


def test_ranking_and_rank_of():
    scores = [0.1, 0.9, 0.5, 0.9]
    assert ranking(scores) == [1, 3, 2, 0]
    assert rank_of(scores, 2) == 3
    assert rank_of(scores, 1) == 2  # a tie counts against the document
    assert rank_of([0, 0, 0], 0) == 3


def test_embeddings_are_unit_length_and_ignore_padding(minilm):
    tokenizer, model = minilm
    sentences = ["Curling is played on ice.", "A much longer sentence, so that the first one gets padded."]
    batch = embed(tokenizer, model, sentences)
    assert batch.shape == (2, model.config.hidden_size)
    torch.testing.assert_close(batch.norm(dim=-1), torch.ones(2))
    alone = embed(tokenizer, model, sentences[:1])
    torch.testing.assert_close(batch[:1], alone, atol=1e-5, rtol=1e-5)


def test_minilm_ranks_the_answer_first_for_both_course_queries(minilm):
    tokenizer, model = minilm
    for query, answer in COURSE_QUERIES.items():
        scores = semantic_scores(tokenizer, model, query, DOCUMENTS)
        assert ranking(scores)[0] == answer, query
        assert rank_of(scores, answer) == 1


def test_keyword_overlap_ranks_a_distractor_first():
    """The lesson's point: surface words mislead keyword search on both course queries."""
    for query, answer in COURSE_QUERIES.items():
        scores = keyword_scores(query, DOCUMENTS)
        assert ranking(scores)[0] != answer and rank_of(scores, answer) > 1, query


def test_compare_methods_table(minilm):
    table = compare_methods(*minilm)
    assert len(table) == 2 * len(COURSE_QUERIES)
    minilm_ranks = table.loc[table["method"] == "MiniLM", "rank of answer"]
    keyword_ranks = table.loc[table["method"] == "keyword overlap", "rank of answer"]
    assert (minilm_ranks == 1).all()
    assert (keyword_ranks > 1).all()


def test_sentence_pair_count_matches_the_model_cards_total(minilm):
    """The shipped data_config.json sums to the total of the model card's table (1,170,060,424)."""
    _, model = minilm
    pairs, datasets = sentence_pair_count(model.name_or_path)
    card = (Path(model.name_or_path) / "README.md").read_text()
    assert f"**{pairs:,}**" in card
    assert pairs > 1e9 and datasets > 30


def test_plot_scores_marks_the_answer_even_with_a_zero_bar():
    fig, ax = plt.subplots()
    scores = [0, 3, 1, 0]  # the answer (document 0) scores 0: its bar has no length
    plot_scores(ax, scores, answer=0, labels=list("abcd"), title="t", xlabel="shared words")
    fig.canvas.draw()
    green, red = mcolors.to_rgba("tab:green"), mcolors.to_rgba("tab:red")
    markers = [line for line in ax.lines if line.get_marker() == "D"]
    assert len(markers) == 1 and mcolors.to_rgba(markers[0].get_color()) == green
    assert list(markers[0].get_xdata()) == [0] and list(markers[0].get_ydata()) == [0]
    ticks = ax.get_yticklabels()
    assert mcolors.to_rgba(ticks[0].get_color()) == green and ticks[0].get_fontweight() == "bold"
    assert mcolors.to_rgba(ticks[1].get_color()) == red  # the wrong document ranked first
    bars = ax.patches
    assert mcolors.to_rgba(bars[0].get_facecolor()) == green and mcolors.to_rgba(bars[1].get_facecolor()) == red
    assert ax.get_xlabel() and ax.get_ylabel() and ax.get_ylim()[0] > ax.get_ylim()[1]  # document 0 on top
    assert ax.get_title().endswith("answer ranked 4 of 4")  # a tie counts against the answer
    plt.close(fig)
