"""Lesson 05's helpers: generation with Hugging Face's ``model.generate``, few-shot prompt formats,
classifying by generating the answer and reading it, timing, and the lesson's figures.

The few-shot helpers reuse the keys and values of the shots: every test sentence of one draw shares
the same shots, so their key/value cache is computed once and copied for each sentence (prefix
caching). The answers are those of generating from the whole prompt; only the time changes.
"""

import copy
import random
import re
import time
from dataclasses import dataclass, field

import matplotlib.pyplot as plt
import numpy as np
import torch

SENTIMENT_LABELS = ("negative", "positive")


# ---------------------------------------------------------------- generation

def encode(tokenizer, text: str) -> torch.Tensor:
    """(1, T) token ids of ``text``, without special tokens."""
    return torch.tensor([tokenizer.encode(text, add_special_tokens=False)], dtype=torch.long)


@torch.no_grad()
def generate_ids(model, tokenizer, input_ids: torch.Tensor, max_new_tokens: int, cache=None,
                 **generate_kwargs) -> torch.Tensor:
    """The new token ids (1-D) that ``model.generate`` appends to the (1, T) ``input_ids``.

    ``cache`` may hold the keys and values of a prefix of ``input_ids``; it is copied, since ``generate``
    extends the cache it is given.
    """
    input_ids = input_ids.to(model.device)
    if cache is not None:
        generate_kwargs["cache"] = copy.deepcopy(cache)
    out = model.generate(input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=max_new_tokens,
                         pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id, **generate_kwargs)
    return out[0, input_ids.shape[1]:].cpu()


def continue_text(model, tokenizer, prompt: str, max_new_tokens: int = 30, **generate_kwargs) -> str:
    """The text ``model.generate`` writes after ``prompt`` (greedy unless ``do_sample=True`` is passed)."""
    generate_kwargs.setdefault("do_sample", False)
    new = generate_ids(model, tokenizer, encode(tokenizer, prompt), max_new_tokens, **generate_kwargs)
    return tokenizer.decode(new, skip_special_tokens=True)


def chat(model, tokenizer, message: str, max_new_tokens: int = 120, system: str | None = None,
         **generate_kwargs) -> str:
    """The instruct model's answer to one user ``message``, through its chat template."""
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": message}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    ids = ids["input_ids"] if not isinstance(ids, torch.Tensor) else ids
    generate_kwargs.setdefault("do_sample", False)
    new = generate_ids(model, tokenizer, ids, max_new_tokens, **generate_kwargs)
    return tokenizer.decode(new, skip_special_tokens=True).strip()


@torch.no_grad()
def time_generation(model, input_ids: torch.Tensor, max_new_tokens: int, use_cache: bool, pad_token_id: int) -> dict:
    """Greedy generation of exactly ``max_new_tokens`` tokens: seconds, tokens per second and the tokens."""
    input_ids = input_ids.to(model.device)
    start = time.perf_counter()
    out = model.generate(input_ids, attention_mask=torch.ones_like(input_ids), do_sample=False,
                         max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens, use_cache=use_cache,
                         pad_token_id=pad_token_id)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "tokens_per_second": max_new_tokens / seconds,
            "tokens": out[0, input_ids.shape[1]:].cpu()}


def repeated_ngram_share(token_ids, n: int = 3) -> float:
    """The share of the n-grams in ``token_ids`` that already occurred earlier in it (0: no repetition)."""
    ids = [int(t) for t in token_ids]
    grams = [tuple(ids[i:i + n]) for i in range(len(ids) - n + 1)]
    return 0.0 if not grams else 1 - len(set(grams)) / len(grams)


# ---------------------------------------------------------------- few-shot prompts and classification

@dataclass(frozen=True)
class PromptFormat:
    """How a few-shot classification prompt is laid out.

    The prompt is ``instruction`` (if any), then one block per shot, ``{input_prefix}{text}{newline}
    {output_prefix} {label}``, then the query's block, which ends with ``output_prefix``; the parts are
    joined by ``separator``. ``labels`` are the words the model should answer with (for the classes 0, 1, ...).
    """

    name: str
    input_prefix: str = "Review: "
    output_prefix: str = "Sentiment:"
    separator: str = "\n\n"
    newline: str = "\n"
    instruction: str = ""
    labels: tuple = SENTIMENT_LABELS

    def shot(self, text: str, label: int) -> str:
        return f"{self.input_prefix}{text}{self.newline}{self.output_prefix} {self.labels[label]}"

    def query(self, text: str) -> str:
        return f"{self.input_prefix}{text}{self.newline}{self.output_prefix}"

    def prefix(self, shots: list) -> str:
        """Everything before the query's block (the instruction and the shots), "" when there is nothing."""
        return self.separator.join(([self.instruction] if self.instruction else [])
                                   + [self.shot(text, label) for text, label in shots])

    def render(self, shots: list, text: str) -> str:
        """The whole prompt for one query."""
        prefix = self.prefix(shots)
        return prefix + self.separator + self.query(text) if prefix else self.query(text)


def draw_shots(train, k: int, seed: int) -> list:
    """``k`` (text, label) examples drawn from ``train`` (a dataset with ``text`` and ``label``), balanced
    between the two labels (the extra one of an odd k goes to a random label), in random order."""
    rng = random.Random(seed)
    by_label = {0: [], 1: []}
    for i, label in enumerate(train["label"]):
        by_label[label].append(i)
    first = rng.choice([0, 1])
    counts = {first: (k + 1) // 2, 1 - first: k // 2}
    chosen = [i for label, n in counts.items() for i in rng.sample(by_label[label], n)]
    rng.shuffle(chosen)
    return [(train[i]["text"], train[i]["label"]) for i in chosen]


def read_label(text: str, labels) -> int | None:
    """The class whose label word the generated ``text`` starts with (case-insensitive), else None."""
    words = re.findall(r"[a-z]+", text.lower())
    if not words:
        return None
    return next((i for i, label in enumerate(labels) if words[0] == label.lower()), None)


@torch.no_grad()
def prefix_cache(model, tokenizer, prefix: str):
    """(ids, key/value cache) of ``prefix``; (empty ids, None) when the prefix is empty."""
    if not prefix:
        return torch.zeros(1, 0, dtype=torch.long), None
    ids = encode(tokenizer, prefix)
    return ids, model(ids.to(model.device), use_cache=True).cache


@dataclass
class FewShotRun:
    """The answers of one draw of shots on the test sentences."""

    fmt: str
    k: int
    seed: int
    predictions: list  # class index or None (no label word) per test sentence
    answers: list  # the generated text per test sentence
    labels: list
    seconds: float
    prompt_tokens: list = field(default_factory=list)

    @property
    def share_right(self) -> float:
        """Share of the test sentences answered with the right label (an unreadable answer counts as wrong)."""
        return float(np.mean([p == y for p, y in zip(self.predictions, self.labels)]))

    @property
    def unreadable(self) -> int:
        return sum(p is None for p in self.predictions)

    @property
    def seconds_per_example(self) -> float:
        return self.seconds / max(len(self.labels), 1)


def classify_by_generation(model, tokenizer, fmt: PromptFormat, shots: list, texts: list, labels: list,
                           max_new_tokens: int = 3, progress=None, seed: int = 0) -> FewShotRun:
    """Greedy-generate a few tokens after each query's prompt and read the label word from them."""
    start = time.perf_counter()
    prefix = fmt.prefix(shots)
    prefix_ids, cache = prefix_cache(model, tokenizer, prefix)
    predictions, answers, lengths = [], [], []
    for text in texts:
        query_ids = encode(tokenizer, (fmt.separator if prefix else "") + fmt.query(text))
        ids = torch.cat([prefix_ids, query_ids], dim=1)  # (1, T): the same tokens as the whole prompt's
        answer = tokenizer.decode(generate_ids(model, tokenizer, ids, max_new_tokens, cache=cache,
                                               do_sample=False), skip_special_tokens=True)
        answers.append(answer)
        predictions.append(read_label(answer, fmt.labels))
        lengths.append(ids.shape[1])
        if progress is not None:
            progress.update(1)
    return FewShotRun(fmt.name, len(shots), seed, predictions, answers, list(labels), time.perf_counter() - start,
                      lengths)


def shots_sweep(model, tokenizer, fmt: PromptFormat, train, texts: list, labels: list, shot_counts, n_draws: int,
                seed: int = 0, max_new_tokens: int = 3, progress=None) -> list:
    """``classify_by_generation`` for every number of shots and ``n_draws`` draws of the shots each
    (0 shots has a single draw: there is nothing to draw)."""
    runs = []
    for k in shot_counts:
        for draw in range(1 if k == 0 else n_draws):
            draw_seed = seed + 1000 * k + draw
            shots = draw_shots(train, k, draw_seed)
            runs.append(classify_by_generation(model, tokenizer, fmt, shots, texts, labels, max_new_tokens,
                                               progress, draw_seed))
    return runs


def accuracy_table(runs: list) -> dict:
    """k -> array of the accuracies of its draws."""
    table = {}
    for run in runs:
        table.setdefault(run.k, []).append(run.share_right)
    return {k: np.array(v) for k, v in table.items()}


# ---------------------------------------------------------------- figures

def plot_next_token_bars(tokens: list, probs, title: str, ax=None):
    """A horizontal bar chart of the most probable next tokens (most probable on top). Returns the Axes."""
    probs = np.asarray(probs, dtype=float)
    if len(tokens) != len(probs):
        raise ValueError(f"{len(tokens)} tokens but {len(probs)} probabilities")
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 0.35 * len(tokens) + 1.2), layout="constrained")
    ax.barh(range(len(tokens))[::-1], probs, color="tab:blue")
    ax.set_yticks(range(len(tokens))[::-1], labels=[repr(t) for t in tokens])
    for y, p in zip(range(len(tokens))[::-1], probs):
        ax.text(p, y, f" {p:.3f}", va="center", fontsize=8)
    ax.set(xlabel="probability of the next token", title=title, xlim=(0, min(1.0, probs.max() * 1.25)))
    return ax


def plot_accuracy_vs_shots(table: dict, baselines: dict, title: str, ax=None):
    """Mean accuracy against the number of shots, with error bars (the standard deviation over draws of
    the shots) and the individual draws as dots; ``baselines`` are horizontal lines. Returns the Axes."""
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4), layout="constrained")
    shots = sorted(table)
    means = [table[k].mean() for k in shots]
    spread = [table[k].std() for k in shots]
    positions = range(len(shots))  # equally spaced: 0, 1, 2, 4, 8 shots
    for x, k in zip(positions, shots):
        ax.scatter([x] * len(table[k]), table[k], color="tab:blue", alpha=0.35, s=18)
    ax.errorbar(positions, means, yerr=spread, marker="o", capsize=4, color="tab:blue", label="mean over draws")
    for (name, value), style in zip(baselines.items(), ["--", ":", "-."]):
        ax.axhline(value, linestyle=style, color="gray", label=f"{name} ({value:.0%})")
    ax.set_xticks(list(positions), labels=[str(k) for k in shots])
    ax.set(xlabel="number of shots (examples in the prompt)", ylabel="accuracy", title=title, ylim=(0, 1))
    ax.legend(loc="lower right", fontsize=8)
    return ax
