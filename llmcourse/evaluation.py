"""A small evaluation harness for BIG-bench JSON tasks, for any Hugging Face causal LM.

Four steps, one function each: ``load_task`` (examples, a fixed-seed sample, held-out shots),
``build_prompt`` (BIG-bench's "Q: ... choice: ... A:" format, the model's chat template, or the bare
question), ``choice_logprobs`` (the log-likelihood of every choice after one shared prompt: the prompt
runs once and its KV cache serves all the choices, so a 39-choice item costs one prompt pass, not 39)
and ``summarise`` (mean score, its confidence interval, and the random-choice baseline with the band
a random guesser would fall in). ``evaluate_multiple_choice`` runs them over a task (``pick_choices``
turns the scores into each item's answer and its target score); ``generate`` decodes free-form answers
greedily for chain-of-thought, and ``final_integers`` reads the integer a chain ends with. Point it at
another model with ``llmcourse.models.load_causal_lm("gpt2")`` (any hub name or folder).
"""

import copy
import math
import random
import re
import time
from dataclasses import dataclass

import numpy as np
import torch

from llmcourse.cache import cached_run
from llmcourse.data import bigbench_task

SEED = 0
MAX_SHOTS = 5  # examples held out of every evaluation sample, so that shots never include the query
CHANCE_SIMULATIONS = 20_000  # random guessers simulated for the chance band
CONFIDENCE = 0.95
MAX_BATCH_TOKENS = 8_192  # cached + new tokens per batch of choices (about 46 kB of KV cache per token)
FORMATS = ("bigbench", "no_choices", "chat")
HARNESS_VERSION = 1  # part of every cache key: bump when the scoring changes

# BIG-bench's defaults (bigbench/api/json_task.py), used when a task does not set its own prefixes
INPUT_PREFIX, OUTPUT_PREFIX, CHOICE_PREFIX = "\nQ: ", "\nA: ", "\n  choice: "


@dataclass(frozen=True)
class Item:
    """One example: its input, its choices in the task's order with their target scores, free-form targets."""

    input: str
    choices: tuple
    target_scores: tuple
    targets: tuple  # the example's "target" strings ("" when it has none)

    @property
    def best_choice(self) -> str:
        """The choice with the highest target score (the first one on a tie)."""
        return self.choices[int(np.argmax(self.target_scores))]


@dataclass
class Task:
    """A BIG-bench task: its formatting, the sampled items to evaluate and the held-out shots."""

    name: str
    description: str
    items: list
    shots: list
    n_examples: int  # in the whole task
    seed: int
    task_prefix: str = ""
    input_prefix: str = INPUT_PREFIX
    output_prefix: str = OUTPUT_PREFIX
    append_choices: bool = True

    @property
    def chance(self) -> float:
        """Expected multiple-choice score of a uniformly random choice (the random baseline)."""
        return float(np.mean([np.mean(item.target_scores) for item in self.items]))


def _item(example: dict) -> Item:
    scores = example.get("target_scores", {})
    target = example.get("target", "")
    return Item(example["input"], tuple(scores), tuple(float(v) for v in scores.values()),
                tuple(target) if isinstance(target, list) else (target,))


def load_task(name: str, n: int | None = None, seed: int = SEED) -> Task:
    """The BIG-bench task ``name``: ``n`` examples drawn without replacement with ``seed`` (all when None),
    after holding out ``MAX_SHOTS`` others as few-shot exemplars."""
    raw = bigbench_task(name)
    examples = [_item(e) for e in raw["examples"]]
    order = np.random.default_rng(seed).permutation(len(examples))
    shots, rest = order[:MAX_SHOTS], order[MAX_SHOTS:]
    chosen = rest if n is None else rest[:n]
    return Task(name=name, description=raw.get("description", ""), items=[examples[i] for i in chosen],
                shots=[examples[i] for i in shots], n_examples=len(examples), seed=seed,
                task_prefix=raw.get("task_prefix", ""),
                input_prefix=raw.get("example_input_prefix", INPUT_PREFIX),
                output_prefix=raw.get("example_output_prefix", OUTPUT_PREFIX),
                append_choices=raw.get("append_choices_to_input", True))


# ---------------------------------------------------------------- prompts

def _listed_choices(task: Task, item: Item, index: int) -> str:
    """BIG-bench appends the choices to the input in a random order (seeded per item)."""
    choices = sorted(item.choices)
    random.Random(task.seed * 1_000_003 + index).shuffle(choices)
    return CHOICE_PREFIX + CHOICE_PREFIX.join(choices)


def _question(task: Task, item: Item, index: int, fmt: str) -> str:
    listed = fmt != "no_choices" and task.append_choices and len(item.choices) > 0
    return item.input + (_listed_choices(task, item, index) if listed else "")


def chat_prompt(tokenizer, text: str) -> str:
    """``text`` as the user's turn of the model's chat template, ready for the assistant's answer."""
    return tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                         add_generation_prompt=True)


def build_prompt(task: Task, item: Item, index: int = 0, fmt: str = "bigbench", tokenizer=None) -> tuple:
    """``(prompt, answer_prefix)`` for one item: the text before the answer, and what goes between it and a
    choice (" " in BIG-bench's format, where the prompt ends with "A:"; "" in the chat format).

    ``fmt``: "bigbench" (the task's prefixes, choices listed when the task says so), "no_choices" (the same
    without the listed choices) or "chat" (the question and listed choices as a user turn of the model's
    chat template, the answer as the assistant's turn; needs ``tokenizer``).
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, not {fmt!r}")
    question = _question(task, item, index, "bigbench" if fmt == "chat" else fmt)
    if fmt == "chat":
        return chat_prompt(tokenizer, (task.task_prefix + question).strip()), ""
    output_prefix = task.output_prefix.rstrip(" ")  # the space moves into the answer: " " + choice
    return task.input_prefix + question + output_prefix, task.output_prefix[len(output_prefix):]


def shots_text(task: Task, k: int, fmt: str = "bigbench") -> str:
    """The task prefix and ``k`` held-out exemplars, each followed by its best answer (BIG-bench's k-shot)."""
    if k > len(task.shots):
        raise ValueError(f"{task.name} holds out {len(task.shots)} shots; asked for {k}")
    if fmt == "chat":
        raise ValueError("few-shot prompts are built in BIG-bench's format; the chat format is zero-shot here")
    parts = [task.task_prefix]
    for j, shot in enumerate(task.shots[:k]):
        prompt, gap = build_prompt(task, shot, -1 - j, fmt)
        parts.append(prompt + gap + (shot.best_choice if shot.choices else shot.targets[0]))
    return "".join(parts)


# ---------------------------------------------------------------- scoring choices with one shared prompt

def encode(tokenizer, text: str) -> list:
    """Token ids of ``text`` on its own, without special tokens."""
    return tokenizer(text, add_special_tokens=False).input_ids if text else []


@dataclass
class Context:
    """Tokens a model has read: their KV cache and the log-probabilities of the next token."""

    length: int
    cache: object
    next_logprobs: torch.Tensor  # (V,)


@torch.no_grad()
def read(model, ids: list, context: Context | None = None) -> Context:
    """Run ``model`` over ``ids`` after ``context`` (left untouched), returning the extended context."""
    cache = copy.deepcopy(context.cache) if context is not None else None
    if not ids:
        return context
    input_ids = torch.tensor([ids], device=model.device)  # (1, T)
    out = model(input_ids, cache=cache, use_cache=True, logits_to_keep=1)  # only the last position's logits
    return Context((context.length if context else 0) + len(ids), out.cache,
                   out.logits[0, -1].float().log_softmax(-1))


@torch.no_grad()
def read_continuations(model, context: Context, ids: torch.Tensor) -> torch.Tensor:
    """(B, L, V) next-token log-probabilities at each position of ``ids`` (B, L), every row read after ``context``
    (left untouched) on its own copy of the KV cache."""
    cache = copy.deepcopy(context.cache)
    cache.batch_repeat_interleave(len(ids))
    return model(ids.to(model.device), cache=cache, use_cache=True).logits.float().log_softmax(-1)


@torch.no_grad()
def continuation_logprobs(model, context: Context, continuations: list) -> list:
    """Sum of log P(token | everything before it) over each continuation (lists of ids) after ``context``.

    The first token of each comes from the context's next-token distribution; the others from one
    batched pass over all the continuations at once, on copies of the context's KV cache.
    """
    totals = [float(context.next_logprobs[c[0]]) for c in continuations]
    longer = [i for i, c in enumerate(continuations) if len(c) > 1]
    rows = max(1, MAX_BATCH_TOKENS // (context.length + max((len(c) for c in continuations), default=1)))
    for start in range(0, len(longer), rows):
        batch = longer[start:start + rows]
        width = max(len(continuations[i]) for i in batch) - 1  # the last token is only scored, never read
        ids = torch.zeros(len(batch), width, dtype=torch.long)  # right padding: no real token attends to it
        for row, i in enumerate(batch):
            ids[row, :len(continuations[i]) - 1] = torch.tensor(continuations[i][:-1])
        logprobs = read_continuations(model, context, ids)  # (B, L, V)
        for row, i in enumerate(batch):
            following = torch.tensor(continuations[i][1:], device=logprobs.device)
            totals[i] += float(logprobs[row, torch.arange(len(following)), following].sum())
    return totals


def choice_logprobs(model, tokenizer, prompt: str, choices, answer_prefix: str = " ",
                    context: Context | None = None) -> list:
    """Log-likelihood of each choice after ``prompt`` (read once, after an optional cached ``context``);
    the prompt and each ``answer_prefix + choice`` are tokenized on their own."""
    read_prompt = read(model, encode(tokenizer, prompt), context)
    return continuation_logprobs(model, read_prompt, [encode(tokenizer, answer_prefix + c) for c in choices])


def evaluate_multiple_choice(model, tokenizer, task: Task, shots: int = 0, fmt: str = "bigbench",
                             progress: bool = True) -> dict:
    """Every item of ``task`` scored by choice log-likelihood after ``shots`` held-out exemplars (read once
    and cached for all items). Returns plain lists: ``logprobs`` per item and choice, ``target_scores``,
    ``chosen`` (index of the highest log-likelihood, the first on a tie), ``earned`` (its target score),
    ``seconds`` and ``prompt_tokens`` per item."""
    from tqdm.auto import tqdm

    start = time.perf_counter()
    prefix = read(model, encode(tokenizer, shots_text(task, shots, fmt))) if shots else None
    if prefix is None and fmt != "chat" and task.task_prefix:
        prefix = read(model, encode(tokenizer, task.task_prefix))
    result = {"logprobs": [], "target_scores": [], "prompt_tokens": []}
    items = tqdm(task.items, desc=f"{task.name} {shots}-shot {fmt}", leave=False, disable=not progress)
    for index, item in enumerate(items):
        prompt, gap = build_prompt(task, item, index, fmt, tokenizer)
        result["logprobs"].append(choice_logprobs(model, tokenizer, prompt, item.choices, gap, prefix))
        result["target_scores"].append(list(item.target_scores))
        result["prompt_tokens"].append((prefix.length if prefix else 0) + len(encode(tokenizer, prompt)))
    result["chosen"], result["earned"] = pick_choices(result["logprobs"], result["target_scores"])
    result["seconds"] = time.perf_counter() - start
    return result


def pick_choices(logprobs: list, target_scores: list) -> tuple:
    """``(chosen, earned)``, plain lists: per item, the index of its highest log-likelihood (the first on a
    tie, as numpy's ``argmax`` picks it) and that choice's target score.

    The items are laid out as one matrix, a row per item padded with -inf past its own choices, so that a
    single ``argmax`` over the rows answers every item at once.
    """
    width = max(len(row) for row in logprobs)
    scores = np.full((len(logprobs), width), -np.inf)
    targets = np.zeros((len(logprobs), width))
    for i, (row, target) in enumerate(zip(logprobs, target_scores)):
        scores[i, :len(row)] = row
        targets[i, :len(target)] = target
    chosen = scores.argmax(axis=1)  # (items,)
    return chosen.tolist(), np.take_along_axis(targets, chosen[:, None], axis=1)[:, 0].tolist()


def cached_multiple_choice(model, tokenizer, task: Task, shots: int = 0, fmt: str = "bigbench",
                           progress: bool = True) -> dict:
    """``evaluate_multiple_choice``, cached in the user cache (``LLMCOURSE_RETRAIN=1`` recomputes)."""
    config = {"task": task.name, "n": len(task.items), "seed": task.seed, "shots": shots, "format": fmt,
              "model": str(getattr(model.config, "_name_or_path", type(model).__name__)),
              "version": HARNESS_VERSION}
    name = f"bigbench-{task.name.replace('/', '-')}"
    return cached_run(name, config, lambda: evaluate_multiple_choice(model, tokenizer, task, shots, fmt, progress))


# ---------------------------------------------------------------- aggregate: score, interval, chance

def wilson_interval(successes: float, n: int, confidence: float = CONFIDENCE) -> tuple:
    """Wilson score interval for a binomial proportion (better than the normal one near 0 and 1)."""
    from scipy.stats import norm

    z = norm.ppf(0.5 + confidence / 2)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(0.0, min(p, centre - half))), float(min(1.0, max(p, centre + half)))  # never excludes p


def chance_scores(target_scores: list, n_simulations: int = CHANCE_SIMULATIONS, seed: int = SEED) -> np.ndarray:
    """Mean scores of ``n_simulations`` random guessers, each picking one choice per item uniformly."""
    rng = np.random.default_rng(seed)
    total = np.zeros(n_simulations)
    for scores in target_scores:
        total += np.asarray(scores, dtype=float)[rng.integers(len(scores), size=n_simulations)]
    return total / len(target_scores)


def summarise(earned: list, target_scores: list, confidence: float = CONFIDENCE) -> dict:
    """Mean score with its interval, the random baseline with the band a random guesser falls in, the
    one-sided p-value of "no better than random", and a verdict: "above chance", "at chance" or "below chance"."""
    n = len(earned)
    score = float(np.mean(earned))
    binary = all(e in (0.0, 1.0) for e in earned)
    if binary:
        low, high = wilson_interval(sum(earned), n, confidence)
    else:  # partial credit: normal approximation
        half = 1.96 * float(np.std(earned, ddof=1)) / math.sqrt(n) if n > 1 else float("nan")
        low, high = score - half, score + half
    guessers = chance_scores(target_scores)
    tail = (1 - confidence) / 2
    chance_low, chance_high = (float(q) for q in np.quantile(guessers, [tail, 1 - tail]))
    verdict = "above chance" if score > chance_high else "below chance" if score < chance_low else "at chance"
    return {"score": score, "n": n, "low": low, "high": high,
            "chance": float(np.mean([np.mean(s) for s in target_scores])),
            "chance_low": chance_low, "chance_high": chance_high,
            "p_value": float(np.mean(guessers >= score - 1e-12)), "verdict": verdict}


def normalised_score(score: float, chance: float) -> float:
    """BIG-bench's normalised score: 0 at the random baseline, 100 for a perfect score."""
    return 100 * (score - chance) / (1 - chance)


# ---------------------------------------------------------------- free-form answers

STOP_STRINGS = ("\n\n", "\nQ:")


def cut_at_stop(text: str, stops=STOP_STRINGS) -> str:
    """``text`` up to the first stop string (a model often goes on to write the next question itself)."""
    cut = min((text.find(s) for s in stops if s in text), default=len(text))
    return text[:cut]


def first_integer(text: str) -> str | None:
    """The first integer in ``text`` (BIG-bench's arithmetic ``output_regex``, ``[-+]?\\d+``), or None."""
    match = re.search(r"[-+]?\d+", text)
    return match.group(0) if match else None


ANSWER_INTEGER = re.compile(r"the answer is[ \t]*([-+]?\d+)?", re.IGNORECASE)  # the integer, when one follows


def final_integers(texts: list) -> list:
    """For each text, the integer right after its last "the answer is" (any case; spaces between them allowed)
    as an ``int``, or None when the phrase is missing or no integer follows its last occurrence: Wei et al.'s
    answer sentence, read with BIG-bench's arithmetic ``output_regex`` (``[-+]?\\d+``)."""
    found = [ANSWER_INTEGER.findall(text) for text in texts]  # one group per occurrence: its integer, or ""
    return [int(groups[-1]) if groups and groups[-1] else None for groups in found]


ARITHMETIC_QUESTION = re.compile(r"What is (\d+) (plus|minus|times) (\d+)\?")


def arithmetic_reasoning(question: str) -> tuple:
    """``(reasoning, answer)`` for a BIG-bench arithmetic question, worked through tens and ones."""
    a, op, b = ARITHMETIC_QUESTION.fullmatch(question.strip()).groups()
    a, b = int(a), int(b)
    tens, ones = b - b % 10, b % 10
    if op == "times":
        answer = a * b
        return f"{a} * {tens} = {a * tens} and {a} * {ones} = {a * ones}. {a * tens} + {a * ones} = {answer}.", answer
    sign = 1 if op == "plus" else -1
    step = a + sign * tens
    answer = step + sign * ones
    symbol = "+" if sign > 0 else "-"
    return f"{a} {symbol} {tens} = {step} and {step} {symbol} {ones} = {answer}.", answer


def arithmetic_exemplars(task: Task, k: int = MAX_SHOTS) -> list:
    """``(question, reasoning, answer)`` for ``k`` held-out examples of an arithmetic task (for chain of thought)."""
    return [(shot.input, *arithmetic_reasoning(shot.input)) for shot in task.shots[:k]]


@torch.no_grad()
def generate(model, tokenizer, prompts: list, max_new_tokens: int, batch_size: int = 8, stops=STOP_STRINGS,
             progress: bool = True) -> list:
    """Greedy continuations of ``prompts`` (batched, left-padded), each cut at its first stop string."""
    from tqdm.auto import tqdm

    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    outputs = []
    try:
        batches = range(0, len(prompts), batch_size)
        for start in tqdm(batches, desc="generating", leave=False, disable=not progress):
            batch = tokenizer(list(prompts[start:start + batch_size]), return_tensors="pt", padding=True,
                              add_special_tokens=False).to(model.device)
            new = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, temperature=None,
                                 top_p=None, top_k=None, pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
                                 stop_strings=list(stops), tokenizer=tokenizer)[:, batch["input_ids"].shape[1]:]
            outputs += [cut_at_stop(t, stops) for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
    finally:
        tokenizer.padding_side = side
    return outputs


# ---------------------------------------------------------------- contamination: the canary string

@torch.no_grad()
def mean_token_logprob(model, tokenizer, prefix: str, text: str) -> float:
    """Mean log-probability per token of ``text`` after ``prefix``."""
    ids = encode(tokenizer, text)
    return continuation_logprobs(model, read(model, encode(tokenizer, prefix)), [ids])[0] / len(ids)


# ---------------------------------------------------------------- published results (fixed, with sources)

# Wei et al. 2022, "Chain-of-thought prompting elicits reasoning in large language models" (arXiv:2201.11903),
# GSM8K solve rate (%), standard vs chain-of-thought prompting, 8 exemplars: the appendix table of all results
# (Table 2 in the text's numbering); PaLM 540B is also Figure 2 (18 % and 57 %, rounded).
WEI_2022_GSM8K = {"UL2 20B": (4.1, 4.4), "LaMDA 137B": (6.5, 14.3), "GPT-3 175B\n(text-davinci-002)": (15.6, 46.9),
                  "PaLM 540B": (17.9, 56.9)}
WEI_2022_PRIOR_BEST_GSM8K = 55.0  # finetuned GPT-3 175B with a verifier (Cobbe et al. 2021), Figure 2
# Brown et al. 2020, "Language models are few-shot learners", Section 3.9.1 (Figure 3.10): GPT-3 175B, few-shot (%)
BROWN_2020_ARITHMETIC = {"2-digit addition": 100.0, "2-digit subtraction": 98.9, "3-digit addition": 80.2,
                         "3-digit subtraction": 94.2, "2-digit multiplication": 29.2}
# Shares of tasks, each (tasks won, tasks compared, who, against what, source)
TASK_SHARES = [
    (100, 124, "Gopher 280B", "prior state of the art", "Rae et al. 2021, Sec. 4 (152 tasks evaluated)"),
    (44, 58, "PaLM 540B, 5-shot", "prior state of the art", "Chowdhery et al. 2022, Sec. 6.2, Fig. 3"),
    (10, 23, "PaLM 540B + chain of thought", "average human rater", "Suzgun et al. 2022, BIG-Bench Hard"),
    (17, 23, "Codex + chain of thought", "average human rater", "Suzgun et al. 2022, BIG-Bench Hard"),
]


# ---------------------------------------------------------------- figures

def plot_against_chance(summaries: dict, ax=None, title: str = ""):
    """One bar per entry: the score with its 95 % interval, over the band a random guesser falls in."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(1.6 * len(summaries) + 4.5, 3.8), layout="constrained")
    x = np.arange(len(summaries))
    for i, s in enumerate(summaries.values()):
        ax.fill_between([i - 0.4, i + 0.4], s["chance_low"], s["chance_high"], color="0.85", lw=0,
                        label="95 % range of a random guesser" if i == 0 else None)
        ax.plot([i - 0.4, i + 0.4], [s["chance"]] * 2, color="0.4", ls="--", lw=1,
                label="random baseline" if i == 0 else None)
    scores = [s["score"] for s in summaries.values()]
    errors = [[s["score"] - s["low"] for s in summaries.values()], [s["high"] - s["score"] for s in summaries.values()]]
    ax.bar(x, scores, width=0.45, color="tab:blue", alpha=0.8, label="model (95 % interval)")
    ax.errorbar(x, scores, yerr=errors, fmt="none", ecolor="black", capsize=4)
    ax.set_xticks(x, [f"{k}\n(n = {s['n']})" for k, s in summaries.items()])
    ax.set(ylabel="multiple_choice_grade", ylim=(0, 1), title=title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    return ax


def plot_by_shots(table: dict, shots: tuple, title: str = ""):
    """One panel per task: the score against the number of shots, with intervals and the chance band."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(table), figsize=(3.2 * len(table), 3.3), layout="constrained", sharey=True)
    for ax, (task, summaries) in zip(np.atleast_1d(axes), table.items()):
        s0 = summaries[0]
        ax.axhspan(s0["chance_low"], s0["chance_high"], color="0.88", lw=0, label="random guesser, 95 %")
        ax.axhline(s0["chance"], color="0.4", ls="--", lw=1, label="random baseline")
        scores = [s["score"] for s in summaries]
        errors = [[s["score"] - s["low"] for s in summaries], [s["high"] - s["score"] for s in summaries]]
        ax.errorbar(shots, scores, yerr=errors, fmt="o-", capsize=4, color="tab:blue", label="model")
        ax.set(title=f"{task} (n = {s0['n']})", xlabel="shots", xticks=shots, ylim=(0, 1))
    np.atleast_1d(axes)[0].set_ylabel("multiple_choice_grade")
    np.atleast_1d(axes)[0].legend(fontsize=7, loc="upper left")
    fig.suptitle(title)
    return fig


def plot_chain_of_thought(ours: dict, title: str = ""):
    """Left: Wei et al.'s GSM8K results (published). Right: our model on BIG-bench arithmetic (measured),
    with GPT-3's published few-shot accuracy on the same kind of question."""
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained",
                                      gridspec_kw={"width_ratios": [1.4, 1]})
    x = np.arange(len(WEI_2022_GSM8K))
    standard, cot = zip(*WEI_2022_GSM8K.values())
    left.bar(x - 0.2, standard, 0.4, label="standard prompting", color="tab:gray")
    left.bar(x + 0.2, cot, 0.4, label="chain of thought", color="tab:orange")
    left.axhline(WEI_2022_PRIOR_BEST_GSM8K, color="black", ls=":", lw=1, label="prior best (finetuned)")
    left.set_xticks(x, list(WEI_2022_GSM8K), fontsize=8)
    left.set(ylabel="GSM8K solve rate (%)", ylim=(0, 100),
             title="Published: Wei et al. 2022 (appendix Table 2, Fig. 2)")
    left.legend(fontsize=8, loc="upper left")
    labels = list(ours)
    values = [100 * ours[k]["score"] for k in labels]
    errors = [[100 * (ours[k]["score"] - ours[k]["low"]) for k in labels],
              [100 * (ours[k]["high"] - ours[k]["score"]) for k in labels]]
    right.bar(range(len(labels)), values, 0.5, color=["tab:gray", "tab:orange"][:len(labels)])
    right.errorbar(range(len(labels)), values, yerr=errors, fmt="none", ecolor="black", capsize=4)
    gpt3 = BROWN_2020_ARITHMETIC["2-digit addition"]
    right.axhline(gpt3, color="tab:green", ls="--", lw=1)
    right.text(-0.4, gpt3 + 2, "GPT-3 175B, few-shot, 2-digit addition (Brown et al. 2020, Sec. 3.9.1)",
               fontsize=7, color="tab:green")
    right.set_xticks(range(len(labels)), [f"{k}\n(n = {ours[k]['n']})" for k in labels], fontsize=8)
    right.set(ylabel="exact match (%)", ylim=(0, 115), xlim=(-0.5, len(labels) - 0.5),
              title="Measured: SmolLM2-135M\non BIG-bench 2-digit addition")
    fig.suptitle(title)
    return fig


def plot_task_shares(ax=None):
    """The published shares of tasks won (TASK_SHARES), each with its source."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(9, 3), layout="constrained")
    y = np.arange(len(TASK_SHARES))[::-1]
    shares = [100 * won / total for won, total, *_ in TASK_SHARES]
    ax.barh(y, shares, color="tab:purple", alpha=0.8)
    for yi, share, (won, total, who, against, source) in zip(y, shares, TASK_SHARES):
        ax.text(share + 1, yi, f"{won} of {total}  ({source})", va="center", fontsize=8)
    ax.set_yticks(y, [f"{who}\nvs {against}" for _, _, who, against, _ in TASK_SHARES], fontsize=8)
    ax.set(xlim=(0, 160), xlabel="tasks where the model scores higher (%)",
           title="Published: the share of tasks where big models win")
    ax.set_xticks([0, 25, 50, 75, 100])
    return ax
