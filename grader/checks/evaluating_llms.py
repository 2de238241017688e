"""Chapter 09, evaluating LLMs: score_choices, multiple_choice_grade, grade_chain_of_thought.

``score_choices`` runs on a tiny real ``LlamaForCausalLM`` (random weights from a fixed seed, a wide
initialisation so that choices differ clearly in log-likelihood) over ``ChoiceTokenizer``, a small
longest-match tokenizer with the calls of a Hugging Face tokenizer: it adds a BOS token unless asked
not to, and its pieces ``": "`` and ``"Paris"`` make the prompt/choice boundary matter (``"A: Paris"``
tokenized together is ``["A", ": ", "Paris"]``, apart ``["A", ":"] + [" Paris"]``). The model is wrapped
in ``CountingLM``, which records every forward call (rows, new tokens, tokens already in the cache it was
given), so the judge sees whether the prompt ran once and whether each choice started from the prompt's
cache alone. The reference recomputes every choice in one full pass over prompt + choice.

The other references are the definitions in the exercise texts written out in plain Python
(BIG-bench's ``multiple_choice_grade`` with the first highest-scoring choice on a tie, as numpy's
``argmax``; Wei et al. 2022's "The answer is ..." read back from a chain of thought). Every ``Mistake``
is a wrong answer learners write, so that a failing output is named, not just flagged.

Each exercise forbids the part of the lesson's harness (``llmcourse.evaluation``) that does its work:
``score_choices`` the shared-prompt scoring, ``multiple_choice_grade`` ``pick_choices`` (and the task
runners built on it), ``grade_chain_of_thought`` the integer reader ``final_integers``.
"""

import math
import random
from dataclasses import dataclass

import torch
from torch import nn

from grader.checks.gpt_and_prompting import ToyTokenizer
from grader.compare import Mistake, Problem
from grader.core import Case, Exercise, register
from grader.forbidden import ANSWER_READER, HARNESS_SCORING, MULTIPLE_CHOICE_HARNESS
from grader.numbers import is_number, number_problem
from grader.values import TensorData, describe

ANSWER_PHRASE = "the answer is"
SCORE_ATOL = 1e-4  # float32 logits: the cached and the full pass differ by about 1e-5


# ================================================================ score_choices: the checks' tokenizer and model

WORDS = ["Q", "A", "What", "Which", "is", "the", "capital", "of", "France", "Italy", "Paris", "Lyon", "Rome",
         "Milan", "Berlin", "Madrid", "movie", "does", "this", "describe", "a", "lion", "cub", "becomes", "king",
         "finding", "nemo", "fish", "up", "jaws", "shark", "shining", "hotel", "very", "good", "bad", "not",
         "yes", "no", "maybe", "true", "false", "answer", "review", "film", "was", "it", "and", "so", "plus",
         "minus", "date", "today", "tomorrow", "day", "after", "Monday", "Tuesday", "Friday", "boring", "fun"]
PIECES = (["<s>", "</s>", "\n", "\n\n", " ", ":", ": ", "?", ".", ",", "!", "'", "-", "/", "(", ")", "#"]
          + [w for word in WORDS for w in (word, " " + word)]
          + list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"))


class ChoiceTokenizer(ToyTokenizer):
    """Chapter 05's toy tokenizer over PIECES: a BOS token by default, every encoded text recorded in ``calls``."""

    def __init__(self):
        super().__init__(PIECES)


def tiny_llama(seed: int):
    """A 2-layer Llama over ChoiceTokenizer's vocabulary with grouped key-value heads, random weights.
    The wide initialisation (0.5, not 0.02) spreads the next-token log-probabilities over several nats."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=len(PIECES), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         initializer_range=0.5, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return LlamaForCausalLM(config).eval()


class CountingLM(nn.Module):
    """A causal LM that records each forward call as [rows, new tokens, tokens in the cache it was given]."""

    def __init__(self, lm):
        super().__init__()
        self.lm = lm
        self.calls = []

    @property
    def config(self):
        return self.lm.config

    @property
    def device(self) -> torch.device:
        return self.lm.device

    @property
    def dtype(self) -> torch.dtype:
        return self.lm.dtype

    def forward(self, input_ids=None, *args, **kwargs):
        if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
            got = tuple(input_ids.shape) if isinstance(input_ids, torch.Tensor) else type(input_ids).__name__
            raise ValueError(f"input_ids must be a tensor of token ids of shape (B, T), with a batch axis; "
                             f"got {got}")
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        if cache is None and len(args) >= 3:  # positional: attention_mask, position_ids, cache
            cache = args[2]
        cached = int(cache.get_seq_length()) if hasattr(cache, "get_seq_length") else 0
        self.calls.append([int(input_ids.shape[0]), int(input_ids.shape[1]), cached])
        return self.lm(input_ids, *args, **kwargs)


@dataclass
class ScoreCase(Case):
    """A score_choices call; the observations are the model's forward calls and the tokenizer's texts."""

    def run(self, fn):
        args, kwargs = self.inputs()
        value = self.invoke(fn, args, kwargs)
        model, tokenizer = args[0], args[1]
        return value, {"calls": [list(c) for c in model.calls],
                       "tokenized": [[text, special] for text, special in tokenizer.calls]}


def _lm(model):
    return model.lm if isinstance(model, CountingLM) else model


@torch.no_grad()
def _pass_scores(model, ids: list, what: str = "logprobs") -> torch.Tensor:
    """(T, V) float64 next-token log-probabilities (or logits) at every position of one full pass over ``ids``."""
    logits = _lm(model)(torch.tensor([ids])).logits[0].double()
    return logits if what == "logits" else torch.log_softmax(logits, dim=-1)


def choice_scores(model, tokenizer, prompt, choices, length_normalize=False, *, space=" ", special=False,
                  together=False, first="prompt", what="logprobs", shift=1, reduce=None, carry=None) -> list:
    """The score of every choice, each recomputed in one full pass; the switches reproduce the common
    mistakes (defaults: the right scores). ``first``: "prompt" (every token scored), "skip" (the first token
    not scored) or "only" (only the first); ``shift=0`` scores each token with the logits at its own
    position; ``reduce``: None (as ``length_normalize`` says), "sum" or "mean"; ``carry``: what a cache
    reused without copying keeps of each choice (None, "fed": all but its last token, "all": all)."""
    prompt_ids = tokenizer.encode(prompt, add_special_tokens=special)
    after_prompt = _pass_scores(model, prompt_ids, what)[-1]  # (V,): what predicts every first token
    context, scores = list(prompt_ids), []
    for choice in choices:
        if together:  # the learner's prompt is the joint encoding's first tokens, the choice the rest
            joint = tokenizer.encode(prompt + space + choice, add_special_tokens=special)
            context, ids = joint[:len(prompt_ids)], joint[len(prompt_ids):]
        else:
            ids = tokenizer.encode(space + choice, add_special_tokens=special)
        logp = _pass_scores(model, context + ids, what)  # (len(context) + len(ids), V)
        terms = []
        for j, token in enumerate(ids):
            if (j == 0 and first == "skip") or (j > 0 and first == "only"):
                continue
            if j == 0 and shift == 1 and not together:
                terms.append(float(after_prompt[token]))
            else:
                terms.append(float(logp[len(context) + j - shift, token]))
        mean = reduce == "mean" or (reduce is None and length_normalize)
        scores.append(sum(terms) / len(ids) if mean else sum(terms))
        context += {"fed": ids[:-1], "all": ids}.get(carry, [])
    return scores


@dataclass
class ScoreMistake:
    description: str
    switches: dict
    seen: object = None  # observations -> bool: the call shows the mistake (None: nothing to see)


def _tokenized(observations) -> list:
    return observations.get("tokenized", [])


def _reused_cache(observations) -> bool:
    """The cache the choices started from grew from one call to the next: it was not copied."""
    cached = [c for _, _, c in observations.get("calls", []) if c > 0]
    return len(set(cached)) > 1


SPACE = ("each choice was tokenized without its leading space: score the tokens of \" \" + choice, as the answer "
         "follows \"A:\" in running text (\" Paris\" and \"Paris\" are different tokens)")
SPECIAL = ("tokenized with special tokens: the tokenizer put its BOS token <s> in front of the prompt or of a "
           "choice; tokenize each text with add_special_tokens=False")
TOGETHER = ("the prompt and the choice were tokenized together: at the boundary the tokens differ (\"A: Paris\" "
            "gives \"A\", \": \", \"Paris\"); tokenize the prompt and \" \" + choice each on its own")
SKIPPED_FIRST = ("the first token of each choice was not scored: the prompt pass's last position predicts it (its "
                 "last logits), and nothing else does")
FIRST_ONLY = "scored only the first token of each choice: add the log-probabilities of all its tokens"
SHIFTED = ("scored each token with the logits at its own position: the logits at position t predict the token at "
           "t + 1, so a choice's first token is scored by the prompt's last position")
CACHE_REUSED = ("the prompt's KV cache was reused without copying: a forward pass appends its keys and values to the "
                "cache object it is given, so every later choice was scored after the earlier choices' tokens; "
                "start each choice from its own copy of the prompt's cache (copy.deepcopy), or remove the choice's "
                "tokens from it again (the cache's crop)")
MEAN_NOT_ASKED = "averaged over the choice's tokens although length_normalize is False: return the sum"
SUM_NOT_MEAN = ("returned the sum although length_normalize is True: divide each choice's sum by its number of "
                "tokens (those of \" \" + choice)")
LOGITS = "added logits, not log-probabilities: normalise over the vocabulary first (log_softmax)"
RERUN = ("the model read more tokens than the prompt and the choices hold: run the prompt once, then each choice "
         "once after it, on the prompt's cache")


def score_mistakes(prompt, choices) -> list:
    return [
        ScoreMistake(SPECIAL, {"special": True}, lambda obs: any(special for _, special in _tokenized(obs))),
        ScoreMistake(TOGETHER, {"together": True},
                     lambda obs: any(text in (prompt + " " + c, prompt + c) for text, _ in _tokenized(obs)
                                     for c in choices)),
        ScoreMistake(SPACE, {"space": ""}, lambda obs: any(text in choices for text, _ in _tokenized(obs))),
        ScoreMistake(CACHE_REUSED, {"carry": "fed"}, _reused_cache),
        ScoreMistake(CACHE_REUSED, {"carry": "all"}, _reused_cache),
        ScoreMistake(SKIPPED_FIRST, {"first": "skip"}),
        ScoreMistake(FIRST_ONLY, {"first": "only"}),
        ScoreMistake(SHIFTED, {"shift": 0}),
        ScoreMistake(MEAN_NOT_ASKED, {"reduce": "mean"}),
        ScoreMistake(SUM_NOT_MEAN, {"reduce": "sum"}),
        ScoreMistake(LOGITS, {"what": "logits"}),
    ]


def _same_scores(out: list, expected: list) -> bool:
    return len(out) == len(expected) and all(math.isclose(a, b, rel_tol=0.0, abs_tol=SCORE_ATOL)
                                             for a, b in zip(out, expected))


def _diagnose_scores(case: Case, out: list, observations: dict) -> str | None:
    """The named mistake a wrong list of scores shows: one whose scores it equals, preferring one the call
    was seen making (the tokenizer's texts, the cache's growth), else one it was seen making."""
    model, _, prompt, choices = case.args[:4]
    matching = []
    for mistake in score_mistakes(prompt, choices):
        try:
            scores = choice_scores(model, ChoiceTokenizer(), prompt, choices, _length_normalize(case),
                                   **mistake.switches)
        except Exception:  # noqa: BLE001  (that mistake does not apply to this case)
            continue
        if _same_scores(out, scores):
            matching.append(mistake)
    seen = [m for m in score_mistakes(prompt, choices) if m.seen is not None and m.seen(observations)]
    both = [m for m in matching if m.seen is not None and m.seen(observations)]
    chosen = both or [m for m in matching if m.seen is None] or seen or matching
    return chosen[0].description if chosen else None


def _length_normalize(case: Case) -> bool:
    return bool(case.args[4] if len(case.args) > 4 else case.kwargs.get("length_normalize", False))


def _scores_shape_problem(out, n: int) -> str | None:
    """What is wrong with the type or length of a returned list of scores (None when it is n numbers)."""
    if isinstance(out, TensorData):
        if out.array.shape == (n,):
            return Problem(f"returned a tensor of shape {out.shape}: return a list of {n} Python floats",
                           "returned a tensor: return a list of Python floats (.tolist(), or .item() per score)")
        return f"return a list of {n} Python floats, one per choice; got {describe(out)}"
    if hasattr(out, "shape") and hasattr(out, "dtype"):  # a NumPy array
        return f"returned a NumPy array of shape {tuple(out.shape)}: return a list of {n} Python floats"
    if not isinstance(out, list):
        return f"return a list of {n} Python floats, one per choice; got {describe(out)}"
    if len(out) != n:
        return f"returned {len(out)} scores for {n} choices: one score per choice, in the order of `choices`"
    for i, value in enumerate(out):
        if isinstance(value, TensorData) and value.array.size == 1:
            return Problem(f"score {i} is a tensor ({value.dtype}): the scores should be Python floats",
                           "the scores are tensors: return Python floats (.item())")
        if not is_number(value):
            return f"score {i} should be a Python float; got {describe(value)}"
    return None


def judge_score_choices(case: Case, out, observations) -> str | None:
    model, _, prompt, choices = case.args[:4]
    expected = choice_scores(model, ChoiceTokenizer(), prompt, choices, _length_normalize(case))
    problem = _scores_shape_problem(out, len(choices))
    if problem:
        return problem
    wrong = [i for i, (a, b) in enumerate(zip(out, expected))
             if not math.isclose(a, b, rel_tol=0.0, abs_tol=SCORE_ATOL)]
    if wrong:
        shown = "; ".join(f"{choices[i]!r}: yours {out[i]:.4f}, expected {expected[i]:.4f}" for i in wrong[:3])
        more = f"; and {len(wrong) - 3} more" if len(wrong) > 3 else ""
        return Problem(f"{len(wrong)} of {len(choices)} scores differ by more than {SCORE_ATOL:g}: {shown}{more}",
                       _diagnose_scores(case, out, observations))
    tokenizer = ChoiceTokenizer()
    budget = len(tokenizer.encode(prompt, add_special_tokens=False)) + sum(
        len(tokenizer.encode(" " + c, add_special_tokens=False)) for c in choices)
    calls = observations.get("calls", [])
    read = sum(rows * new for rows, new, _ in calls)
    if read > budget:
        return Problem(f"the scores are right, but the model was run on {read} tokens in {len(calls)} calls (every "
                       f"row of a batch counts, padding included); the prompt and the choices hold {budget}", RERUN)
    return None


def explain_score_error(case: Case, outcome) -> str | None:
    message = outcome.message
    if "ChoiceTokenizer" in message and "attribute" in message:
        return ("the check's tokenizer supports `tokenizer(text, add_special_tokens=False).input_ids`, "
                "`tokenizer.encode(text, add_special_tokens=False)` and `return_tensors=\"pt\"`")
    if "shape (B, T)" in message:
        return "the model takes a batch of token ids: a tensor of shape (1, T) for one sequence"
    if "CountingLM" in message and "attribute" in message:
        return ("call the model itself on token ids (with `cache=` for a KV cache): it is wrapped to count the "
                "tokens it reads, and offers `config`, `device` and `dtype` besides")
    if "deepcopy" in message or "graph leaves" in message:
        return ("the cache holds tensors that carry gradients, and those cannot be deep-copied: run the model under "
                "torch.no_grad() (nothing here needs gradients)")
    if outcome.error_type == "ZeroDivisionError":
        return "every choice has at least one token: divide by the number of tokens of \" \" + choice"
    if outcome.error_type in ("RuntimeError", "IndexError") and ("size" in message or "index" in message):
        return ("one choice at a time after the prompt: its token ids as a (1, n) tensor, with a cache that holds "
                "the prompt once (a batch of several rows needs a cache with as many rows)")
    return None




def scoring_case(label: str, seed: int, prompt: str, choices: list, **kwargs) -> ScoreCase:
    """A score_choices case on a fresh tiny Llama built from ``seed``, wrapped to count its tokens."""
    return ScoreCase(label, (CountingLM(tiny_llama(seed)), ChoiceTokenizer(), prompt, choices), kwargs)


MOVIE_PROMPT = "Q: What movie does this describe? a lion cub becomes king\nA:"
MOVIES = ["the lion king", "up", "finding nemo", "se7en", "jaws"]


def score_cases() -> list:
    return [
        scoring_case("two choices of one token each", 900, "Q: What is the capital of France?\nA:", ["Paris", "Lyon"]),
        scoring_case("five choices of one to six tokens", 901, MOVIE_PROMPT, MOVIES),
        scoring_case("the same five choices, length_normalize=True", 901, MOVIE_PROMPT, MOVIES, length_normalize=True),
        scoring_case("choices that share their first tokens, length_normalize=False given", 902,
                     "Q: Was the film good?\nA:", ["very good", "very bad", "not very good", "good"],
                     length_normalize=False),
        scoring_case("a single choice of several tokens, length_normalize=True", 903, "Q: What day is it today?\nA:",
                     ["it is Tuesday"], length_normalize=True),
    ]


register(Exercise(
    name="score_choices", chapter="09", signature="(model, tokenizer, prompt, choices, length_normalize=False)",
    points=4, make_cases=score_cases, judge=judge_score_choices, explain_error=explain_score_error,
    forbidden=(HARNESS_SCORING,),
))


# ================================================================ multiple_choice_grade

def _first_argmax(values) -> int:
    """Index of the largest value; the first one on a tie (numpy's argmax)."""
    best = 0
    for i, v in enumerate(values):
        if v > values[best]:
            best = i
    return best


def reference_multiple_choice_grade(choice_scores, target_scores) -> float:
    """BIG-bench's metric: mean over examples of the target score of the highest-scoring choice."""
    total = 0.0
    for scores, targets in zip(choice_scores, target_scores):
        total += list(targets.values())[_first_argmax(scores)]
    return total / len(choice_scores)


def _grade_by(pick, credit=lambda targets, i: targets[i], order=lambda t: list(t.values()), mean=True):
    """A multiple_choice_grade variant: ``pick`` chooses an index, ``credit`` scores it."""
    def grade(choice_scores, target_scores):
        total = sum(credit(order(t), pick(s)) for s, t in zip(choice_scores, target_scores))
        return total / len(choice_scores) if mean else total
    return grade


def _argmin(values) -> int:
    return min(range(len(values)), key=lambda i: (values[i], i))


def _sorted_by_choice(targets: dict) -> list:
    return [targets[k] for k in sorted(targets)]


TIE = ("on a tie picked another of the highest-scoring choices (the last one, or one chosen by name or at random, "
       "as BIG-bench's own code does from a hash of the scores): this exercise takes the first, as numpy's argmax")
PARTIAL = ("counted an example as 1 or 0 (right or wrong): add the chosen choice's target score itself, which can "
           "be a fraction (partial credit)")


def mcg_mistakes() -> list:
    return [
        Mistake("took the lowest-scoring choice (argmin): the model's answer is the choice with the highest "
                "score (the largest log-likelihood)", _grade_by(_argmin)),
        Mistake("averaged the target scores of all the choices (that is the random-guess baseline): take the "
                "target score of the highest-scoring choice only",
                _grade_by(lambda s: None, credit=lambda t, i: sum(t) / len(t))),
        Mistake("matched the scores to the choices in sorted (alphabetical) order: the i-th choice score belongs "
                "to the i-th key of target_scores in the dict's own order",
                _grade_by(_first_argmax, order=_sorted_by_choice)),
        Mistake(PARTIAL, _grade_by(_first_argmax, credit=lambda t, i: float(t[i] == max(t)))),
        Mistake(PARTIAL, _grade_by(_first_argmax, credit=lambda t, i: float(t[i] > 0))),
        Mistake(PARTIAL, _grade_by(_first_argmax, credit=lambda t, i: float(t[i] == 1))),
        Mistake("took the best target score of each example (what a perfect model gets): take the target score "
                "of the choice the model scored highest", _grade_by(lambda s: None, credit=lambda t, i: max(t))),
        Mistake("returned the sum over the examples: divide by the number of examples",
                _grade_by(_first_argmax, mean=False)),
        Mistake("returned a percentage: return a fraction between 0 and 1",
                lambda c, t: 100 * reference_multiple_choice_grade(c, t)),
    ]


def _grade_with_other_ties(case: Case, out: float) -> bool:
    """Does ``out`` equal the grade of another pick among tied highest-scoring choices (and no other pick)?"""
    choice_scores, target_scores = case.args
    totals = {0.0}
    for scores, targets in zip(choice_scores, target_scores):
        values = list(targets.values())
        top = max(scores)
        options = {values[i] for i, s in enumerate(scores) if s == top}
        totals = {round(a + b, 9) for a in totals for b in options}
        if len(totals) > 100_000:
            return False
    n = len(choice_scores)
    return any(math.isclose(out, total / n, rel_tol=1e-9, abs_tol=1e-12) for total in totals)


def _random_items(rng: random.Random, n: int, n_choices, fractional: bool = False):
    """n random examples: log-likelihood-like scores and one-hot (or partial-credit) target scores."""
    choice_scores, target_scores = [], []
    for k in range(n):
        m = n_choices if isinstance(n_choices, int) else rng.choice(n_choices)
        names = [f"choice {k}.{j}" for j in range(m)]
        rng.shuffle(names)  # the dict order is not alphabetical
        right = rng.randrange(m)
        scores = [round(-rng.uniform(0.5, 25.0), 4) for _ in range(m)]
        credit = [1.0 if j == right else (rng.choice([0.0, 0.0, 0.5]) if fractional else 0.0) for j in range(m)]
        choice_scores.append(scores)
        target_scores.append(dict(zip(names, credit)))
    return choice_scores, target_scores


def mcg_cases() -> list:
    rng = random.Random(909)
    emoji = [{"finding nemo": 1, "the wolf of wall street": 0, "se7en": 0, "the shining": 0,
              "mr. smith goes to washington": 0},
             {"zootopia": 0, "jaws": 1, "up": 0, "frozen": 0, "cars": 0},
             {"the lion king": 0, "coco": 0, "avatar": 0, "titanic": 1, "toy story": 0}]
    emoji_scores = [[-3.1, -9.4, -7.2, -6.0, -14.5], [-4.0, -5.5, -6.2, -6.1, -3.3], [-8.2, -5.0, -9.9, -4.1, -6.6]]
    return [
        Case("three emoji_movie examples, one right answer each (log-likelihoods, higher is better)",
             (emoji_scores, emoji)),
        Case("a tie between the best two choices: the first one counts",
             ([[-2.0, -2.0, -5.0], [-1.5, -0.7, -0.7], [-1.0, -5.0, -1.0]],
              [{"yes": 1, "no": 0, "maybe": 0}, {"red": 0, "green": 1, "blue": 0}, {"p": 1, "q": 0.5, "r": 0}])),
        Case("a three-way tie after the first choice, choices named in reverse alphabetical order",
             ([[-9.0, -1.25, -3.0, -1.25, -1.25]], [{"e": 0, "d": 0, "c": 0.5, "b": 0, "a": 1}])),
        Case("partial credit: target scores between 0 and 1",
             ([[-2.0, -1.0, -3.0], [-4.0, -1.0, -2.5], [-3.0, -2.0, -1.0], [-0.2, -0.9, -1.0]],
              [{"Paris, France": 0.5, "Paris": 1.0, "Lyon": 0.0},
               {"6": 0.0, "12": 0.25, "13": 1.0},
               {"a": 0.0, "b": 1.0, "c": 0.75},
               {"no": 0.0, "yes": 1.0, "perhaps": 0.5}])),
        Case("the choices are not in alphabetical order",
             ([[-0.5, -3.0, -4.0], [-6.0, -1.0, -2.0]],
              [{"zebra": 1, "apple": 0, "mango": 0}, {"yak": 0, "cat": 1, "bee": 0}])),
        Case("one example, probabilities instead of log-likelihoods",
             ([[0.3, 0.6, 0.1]], [{"B": 0.25, "A": 1, "C": 0}])),
        Case("checkmate_in_one-sized: 4 examples of 39 choices", _random_items(rng, 4, 39)),
        Case("20 examples with 2 to 7 choices and partial credit", _random_items(rng, 20, [2, 3, 4, 5, 6, 7],
                                                                                fractional=True)),
    ]


def judge_multiple_choice_grade(case: Case, out) -> str | None:
    expected = reference_multiple_choice_grade(*case.args)
    if isinstance(out, (list, tuple)):
        return ("returned {}, one value per example: return one number, the mean over the examples"
                .format(describe(out)))
    problem = number_problem(case, out, expected, "the mean score", mcg_mistakes(), rel_tol=1e-9, abs_tol=1e-12)
    if problem and is_number(out) and _grade_with_other_ties(case, out):
        return Problem(str(problem), TIE)  # differs only where scores tie: not an unrelated mistake
    return problem


def explain_mcg_error(case: Case, outcome) -> str | None:
    message = outcome.message
    if outcome.error_type == "KeyError":
        return ("target_scores[i] is a dict choice -> score: read its values in their order, or its keys in their "
                "order to look a choice up")
    if "not subscriptable" in message or "dict_values" in message or "dict_keys" in message:
        return "dict.values() is a view, not a list: it cannot be indexed until it is made into a list"
    if "ambiguous" in message or outcome.error_type == "ValueError":
        return "choice_scores is a list of lists of floats (one list per example, of its own length)"
    return None


register(Exercise(
    name="multiple_choice_grade", chapter="09", signature="(choice_scores, target_scores)", points=2,
    make_cases=mcg_cases, judge=judge_multiple_choice_grade, explain_error=explain_mcg_error,
    forbidden=(MULTIPLE_CHOICE_HARNESS,),
))


# ================================================================ grade_chain_of_thought

def reference_final_answer(text: str):
    """The text after the last "the answer is" (any case) to the end of its line, stripped, one period off."""
    start = text.lower().rfind(ANSWER_PHRASE)
    if start < 0:
        return None
    answer = text[start + len(ANSWER_PHRASE):].split("\n", 1)[0].strip()
    return answer[:-1] if answer.endswith(".") else answer


def _matches(answer, target: str) -> bool:
    return answer is not None and answer.strip().lower() == target.strip().lower()


def reference_grade_chain_of_thought(outputs, targets) -> tuple:
    answers = [reference_final_answer(text) for text in outputs]
    return answers, sum(_matches(a, t) for a, t in zip(answers, targets)) / len(outputs)


def _extract_by(find="last", case_sensitive=False, one_line=True, strip="all", period="one", lowered=False,
                absent=None):
    """An answer extraction that reproduces one mistake."""
    def extract(text):
        haystack = text if case_sensitive else text.lower()
        start = haystack.rfind(ANSWER_PHRASE) if find == "last" else haystack.find(ANSWER_PHRASE)
        if start < 0:
            return absent
        answer = (haystack if lowered else text)[start + len(ANSWER_PHRASE):]
        if one_line:
            answer = answer.split("\n", 1)[0]
        if period == "first-period":
            answer = answer.split(".", 1)[0]
        answer = {"all": answer.strip(), "spaces": answer.strip(" "), "none": answer}[strip]
        if period == "one" and answer.endswith("."):
            answer = answer[:-1]
        elif period == "all":
            answer = answer.rstrip(".")
        return answer
    return extract


def extraction_mistakes() -> list:
    """(description, extraction) pairs: each reads one output the way a common mistake does."""
    return [
        ("took the first \"the answer is\" instead of the last one: the final answer comes last",
         _extract_by(find="first")),
        ("left the trailing period: remove the whitespace around the answer, then one period at its end",
         _extract_by(period="none")),
        ("searched case-sensitively: \"The answer is\" and \"THE ANSWER IS\" must be found too",
         _extract_by(case_sensitive=True)),
        ("took everything after the phrase: stop at the end of that line (the text after a newline is not part "
         "of the answer)", _extract_by(one_line=False)),
        ("removed only spaces around the answer: a tab (or any other whitespace) around it goes too",
         _extract_by(strip="spaces")),
        ("did not remove the whitespace around the answer", _extract_by(strip="none")),
        ("removed every trailing period: remove one (\"D.C..\" becomes \"D.C.\")", _extract_by(period="all")),
        ("returned \"\" for an output without \"the answer is\": its answer is None", _extract_by(absent="")),
        ("returned the answer lower-cased: find the phrase in any case, but keep the answer as the output wrote it",
         _extract_by(lowered=True)),
        ("cut the answer at the first period: a decimal point or an abbreviation is not the end; the line's end "
         "is, then one trailing period goes", _extract_by(period="first-period")),
    ]


def _accuracy_by(same, mean=True, scale=1.0, answers=None):
    """An accuracy variant computed on the right answers (or on what ``answers`` makes of the outputs)."""
    def accuracy(outputs, targets):
        got = [answers(o) for o in outputs] if answers else [reference_final_answer(o) for o in outputs]
        hits = sum(bool(same(a, t)) for a, t in zip(got, targets))
        return scale * hits / len(outputs) if mean else float(hits)
    return accuracy


def accuracy_mistakes() -> list:
    return [
        Mistake("compared case-sensitively: an answer matches its target after both are lower-cased "
                "(\"Paris\" matches \"paris\")", _accuracy_by(lambda a, t: a is not None and a.strip() == t.strip())),
        Mistake("did not strip the whitespace around the targets: \" 42\\n\" matches the answer \"42\"",
                _accuracy_by(lambda a, t: a is not None and a.lower() == t.lower())),
        Mistake("counted an answer that contains the target as a match: exact match means equal strings",
                _accuracy_by(lambda a, t: a is not None and t.strip().lower() in a.lower())),
        Mistake("compared the whole output with the target: compare the extracted answer",
                _accuracy_by(_matches, answers=lambda o: o)),
        Mistake("returned the number of matches: divide by the number of outputs",
                _accuracy_by(_matches, mean=False)),
        Mistake("returned a percentage: return a fraction between 0 and 1", _accuracy_by(_matches, scale=100.0)),
    ]


def _short(text: str, width: int = 60) -> str:
    return repr(text if len(text) <= width else text[:width - 3] + "...")


def judge_grade_chain_of_thought(case: Case, out) -> str | None:
    outputs, targets = case.args
    answers_expected, accuracy_expected = reference_grade_chain_of_thought(outputs, targets)
    n = len(outputs)
    if is_number(out):
        return Problem(f"returned one number ({out:.6g}): return a pair, (answers, accuracy)",
                       "returned the accuracy alone: return the pair (answers, accuracy)")
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        if isinstance(out, list) and len(out) == n and all(isinstance(a, (str, type(None))) for a in out):
            return Problem(f"returned a list of {n} answers: return a pair, (answers, accuracy)",
                           "returned the answers alone: return the pair (answers, accuracy)")
        return f"return a pair (answers, accuracy); got {describe(out)}"
    answers, accuracy = out
    if not isinstance(answers, list) or len(answers) != n:
        return f"answers should be a list of {n}, one per output; got {describe(answers)}"
    for i, (got, want) in enumerate(zip(answers, answers_expected)):
        if not isinstance(got, (str, type(None))):
            return f"answers[{i}] should be a str or None; got {describe(got)}"
        if got != want:
            named = next((what for what, extract in extraction_mistakes() if extract(outputs[i]) == got), None)
            return Problem(f"output {i}, {_short(outputs[i])}: your answer {got!r}, expected {want!r}", named)
    if isinstance(accuracy, (list, tuple)):
        return f"returned {describe(accuracy)} as the accuracy: return one number, the fraction of matches"
    return number_problem(case, accuracy, accuracy_expected, "the accuracy", accuracy_mistakes(), rel_tol=1e-9,
                          abs_tol=1e-12)


def explain_grade_error(case: Case, outcome) -> str | None:
    if outcome.error_type == "IndexError":
        return (f"an output may not contain {ANSWER_PHRASE!r} (its answer is then None): check for the phrase "
                f"before taking what follows it")
    if outcome.error_type == "AttributeError" and "NoneType" in outcome.message:
        return ("an answer can be None (no \"the answer is\" in the output, or no regex match): it matches no "
                "target, and has no .strip() or .lower()")
    if outcome.error_type == "TypeError" and "unpack" in outcome.message:
        return "outputs and targets are two lists of strings of the same length"
    return None


TENNIS = ("Roger started with 5 balls. 2 cans of 3 tennis balls each is 6 tennis balls. 5 + 6 = 11. "
          "The answer is 11.")
CAFETERIA = ("The cafeteria had 23 apples originally. They used 20 to make lunch. So they had 23 - 20 = 3. They "
             "bought 6 more apples, so they have 3 + 6 = 9. The answer is 9.")


def cot_cases() -> list:
    return [
        Case("the tennis-ball and cafeteria chains of thought of Wei et al. (2022), both right",
             ([TENNIS, CAFETERIA], ["11", "9"])),
        Case("two answers in one output (the last counts), then one that goes on with a new question",
             (["The answer is 12, but 4 of them are broken. 12 - 4 = 8. So the answer is 8.",
               "23 - 20 = 3 and 3 + 6 = 9, so the answer is 9.\n\nQ: What is 7 plus 5?\nA:"],
              ["8", "9"])),
        Case("an upper-case phrase: the answer keeps its case, the match ignores it",
             (["Paris is the capital. THE ANSWER IS Paris.", "the answer is yes"], ["paris", "Yes"])),
        Case("no final answer in the second output", (["So the answer is 7.", "I think it is 7 or maybe 8."],
                                                      ["7", "7"])),
        Case("a decimal point, two trailing periods, an abbreviation",
             (["Half of 7 is 3.5. The answer is 3.5.", "The answer is Washington D.C..",
               "He flew to Missouri. The answer is St. Louis."], ["3.5", "washington d.c.", "St Louis"])),
        Case("a tab and spaces around the answer", (["6 * 7 = 42. The answer is \t42\t\nQ: next",
                                                     "Ten plus seven is seventeen.\nThe answer is   17"],
                                                    ["42", "17"])),
        Case("whitespace around the targets; an answer that contains its target",
             (["The answer is Yes.", "The answer is 42 apples.", "The answer is 5"], [" yes\n", "42", "\t5 "])),
        Case("the answer ends with its line", (["The answer is 12\nbecause 3 * 4 = 12.", "The answer is\n13"],
                                               ["12", "13"])),
    ]


register(Exercise(
    name="grade_chain_of_thought", chapter="09", signature="(outputs, targets)", points=2,
    make_cases=cot_cases, judge=judge_grade_chain_of_thought, explain_error=explain_grade_error,
    forbidden=(ANSWER_READER,),
))
