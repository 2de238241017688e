"""BERT in search (lesson 01): keyword overlap against MiniLM embeddings, with the real shipped MiniLM."""

import pytest
import torch

from llmcourse.models import load_encoder
from llmcourse.search import (COURSE_QUERIES, CURLING, DOCUMENTS, PRESCRIPTION, compare_methods, embed,
                              keyword_scores, keywords, rank_of, ranking, semantic_scores)


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
