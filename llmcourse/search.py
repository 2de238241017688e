"""BERT in search: keyword overlap against MiniLM sentence embeddings on a small document set.

The documents are written for lesson 01. Two of them answer the course's two queries, in words that
share almost nothing with the query; the others are distractors that share the query's surface words
("main objective", "can get", "medicine") but answer something else. Keyword overlap ranks the
distractors high; an encoder trained for semantic similarity (all-MiniLM-L6-v2) finds the answers.
"""

import json
import re
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from matplotlib.ticker import MaxNLocator

CURLING = 0  # index of the document that answers the curling query
PRESCRIPTION = 1  # index of the document that answers the pharmacy query

DOCUMENTS = [
    # the two answers: no "main", "objective", "medicine", "can" or "get"
    "Curling is played on a sheet of ice by two teams who take turns sliding heavy granite stones "
    "towards a target of rings called the house. The aim is to finish each end with your stones "
    "closer to the button, the centre of the house, than any stone of the other team.",
    "Collecting a prescription for another person: a friend, carer or relative may pick up a "
    "patient's prescribed drugs from the pharmacist, bringing a signed note from the patient and "
    "their own identification.",
    # distractors that share the queries' surface words
    "The main objective of the meeting was to agree on a budget for the next financial year.",
    "The main objective of a curling iron is to add waves to straight hair without damaging it.",
    "You can get a medicine degree in six years, and someone who fails can get a second chance.",
    "Can you get a refund for a train ticket bought for someone else? Only the buyer can ask for it.",
    "Sports medicine helps athletes get back on the ice after an injury.",
    "Our pharmacy opens at nine; you can get free parking behind the building.",
    "Medicine students learn to write objective case notes that someone else can read.",
    # neutral documents
    "Ice hockey teams score by shooting a puck into the opposing team's net.",
    "Chess is won by checkmating the opposing king so that it has no legal move.",
    "Store tablets in a cool, dry place, out of the reach of children.",
    "A doctor's appointment is needed before a repeat prescription is renewed.",
    "The Winter Olympics include skiing, skating, bobsleigh and other sports on snow and ice.",
]

COURSE_QUERIES = {
    "what's the main objective of curling?": CURLING,
    "can you get medicine for someone pharmacy": PRESCRIPTION,
}

STOPWORDS = frozenset(
    "a an the of to in on for at by with and or is are was be it its s you your what how do does".split())


def tokenize(text: str) -> list[str]:
    """Lower-case words and numbers; apostrophes split words ("what's" -> "what", "s")."""
    return re.findall(r"[a-z0-9]+", text.lower())


def keywords(text: str) -> set[str]:
    """The distinct words of ``text`` that are not stopwords."""
    return set(tokenize(text)) - STOPWORDS


def keyword_scores(query: str, documents: list[str]) -> list[int]:
    """Bag-of-words overlap: how many distinct query keywords each document contains."""
    wanted = keywords(query)
    return [len(wanted & keywords(doc)) for doc in documents]


def embed(tokenizer, model, sentences: list[str]) -> torch.Tensor:
    """Sentence embeddings ``(n, d)``: mean of the last hidden states over real tokens, L2-normalised.

    This is the pooling all-MiniLM-L6-v2 was trained with (sentence-transformers' mean pooling);
    the padding positions are left out of the mean.
    """
    batch = tokenizer(sentences, padding=True, truncation=True, return_tensors="pt").to(model.device)
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state  # (n, T, d)
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (n, T, 1): 1 = real token
    pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)  # (n, d)
    return F.normalize(pooled, dim=-1).cpu()


def semantic_scores(tokenizer, model, query: str, documents: list[str]) -> torch.Tensor:
    """Cosine similarity ``(n_docs,)`` of the query's embedding with each document's, by torch's
    ``F.cosine_similarity``. Exercise ``semantic_search`` forbids it (it builds the cosine ranking)."""
    vectors = embed(tokenizer, model, [query, *documents])  # (1 + n_docs, d)
    return F.cosine_similarity(vectors[:1], vectors[1:], dim=-1)


def ranking(scores) -> list[int]:
    """Document indices, best score first (ties keep document order), by pandas' stable sort. Exercise
    ``semantic_search`` forbids it (ranking the documents is part of that exercise)."""
    ordered = pd.Series([float(s) for s in scores], dtype=float).sort_values(ascending=False, kind="stable")
    return ordered.index.tolist()


def rank_of(scores, index: int) -> int:
    """1-based rank of document ``index``; a tie counts against it (the method cannot prefer it)."""
    scores = [float(s) for s in scores]
    return 1 + sum(s >= scores[index] for i, s in enumerate(scores) if i != index)


def compare_methods(tokenizer, model, queries: dict[str, int] | None = None,
                    documents: list[str] | None = None) -> pd.DataFrame:
    """One row per (query, method): the rank of the right document and the document ranked first.

    ``queries`` maps each query to the index of the document that answers it (default: the
    course's two queries over ``DOCUMENTS``).
    """
    queries = COURSE_QUERIES if queries is None else queries
    documents = DOCUMENTS if documents is None else documents
    rows = []
    for query, answer in queries.items():
        methods = {"keyword overlap": keyword_scores(query, documents),
                   "MiniLM": semantic_scores(tokenizer, model, query, documents).tolist()}
        for method, scores in methods.items():
            top = ranking(scores)[0]
            rows.append({"query": query, "method": method, "rank of answer": rank_of(scores, answer),
                         "answer score": scores[answer], "top score": scores[top],
                         "ranked first": documents[top]})
    return pd.DataFrame(rows)


def sentence_pair_count(model_dir) -> tuple[int, int]:
    """``(pairs, datasets)`` that all-MiniLM-L6-v2 was fine-tuned on, summed from its ``data_config.json``.

    sentence-transformers ships that file with the model: one entry per training file with its
    number of lines (one pair or triplet per line); the model card's table gives the same total.
    """
    files = json.loads((Path(model_dir) / "data_config.json").read_text())
    return sum(f["lines"] for f in files), len(files)


def plot_scores(ax, scores, answer: int, labels: list[str], title: str, xlabel: str):
    """One horizontal bar per document, document 0 at the top: the right document green, a wrong
    document ranked first red, the others grey. The right document is also marked by a green
    diamond at the end of its bar and a bold green label, so that it shows even with a score of 0.
    The title gets a second line with the answer's rank. Returns the Axes."""
    scores = [float(s) for s in scores]
    top = ranking(scores)[0]
    colors = ["tab:green" if i == answer else "tab:red" if i == top else "0.7" for i in range(len(scores))]
    ax.barh(range(len(scores)), scores, color=colors)
    ax.plot([scores[answer]], [answer], linestyle="", marker="D", markersize=7, color="tab:green",
            markeredgecolor="black", zorder=3, clip_on=False)
    ax.axvline(0, color="0.3", linewidth=0.8)
    ax.set_ylim(len(scores) - 0.5, -0.5)  # document 0 at the top
    ax.set_yticks(range(len(scores)), labels=labels, fontsize=8)
    for i, tick in enumerate(ax.get_yticklabels()):
        if i in (answer, top):
            tick.set_color(colors[i])
            tick.set_fontweight("bold")
    if all(s.is_integer() for s in scores):  # counts: no ticks between whole numbers
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(f"{title}\nanswer ranked {rank_of(scores, answer)} of {len(scores)}", fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("document")
    return ax
