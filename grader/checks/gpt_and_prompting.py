"""Chapter 05, GPT: causal language modelling, decoding and prompting: sequence_logprob, greedy_decode,
beam_search, top_k_filter, top_p_filter, sample_next_token, classify_by_likelihood.

The checks run on ``TableLM``, a tiny deterministic language model: a fixed table of next-token logits
given the last token, overridden by a few longer contexts, so that every right answer is known exactly
and a model call costs microseconds. It answers like a Hugging Face causal LM (``model(input_ids)`` or
``model(input_ids=...)`` returns an object whose ``.logits`` are ``(B, T, V)``; a ``cache`` (formerly
``past_key_values``) works), so a learner's code runs unchanged on the real model afterwards.
``beam_beats_greedy_lm`` is built by hand so that beam search provably beats greedy decoding on it.
``ToyTokenizer`` is a small longest-match tokenizer whose pieces ``": "`` and ``"great"`` make the
prompt/label boundary matter: tokenized together, ``"Output: great"`` becomes ``["Output", ": ", "great"]``,
tokenized apart ``["Output", ":"] + [" great"]``; it adds a BOS token unless asked not to, as Llama's does.

The references are written out (loops over steps and beams, sorts and cumulative sums); the tests
compare them with ``model.generate`` and Hugging Face's ``TopKLogitsWarper`` and ``TopPLogitsWarper``.
Each ``Mistake`` is a wrong answer learners often write, so that a wrong output can be named.
"""

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from grader.compare import Mistake, Problem, tensor_problem, with_mistake
from grader.core import Case, Exercise, RaisesCase, _changed, raised, register
from grader.forbidden import (CONTINUATION_SCORING, GENERATION_SPEED, LABEL_SCORING, LM_PERPLEXITY, TOP_K_WARPER,
                              TOP_P_WARPER)
from grader.values import AttrDict, TensorData, describe

NEG_INF = float("-inf")


# ================================================================ the checks' language model

@dataclass
class TableLMConfig:
    vocab_size: int
    eos_token_id: int | None = None


@dataclass
class LMOutput:
    """What a Hugging Face causal LM returns, reduced to what the exercises read."""

    logits: torch.Tensor  # (B, T_new, V)
    cache: torch.Tensor | None = None  # here simply the token ids seen so far, (B, T_total)

    @property
    def past_key_values(self):  # the cache's name before transformers 5
        return self.cache

    def __getitem__(self, key):  # out[0] and out["logits"], as on a Hugging Face ModelOutput
        if isinstance(key, (int, str)) and key in (0, "logits"):
            return self.logits
        raise TypeError(f"LMOutput[{key!r}]: the model's output is an object, not a tensor; read its .logits")


class TableLM(nn.Module):
    """A tiny deterministic causal LM: the logits of the token after position t are ``table[token t]``,
    unless the tokens up to t end with one of ``contexts`` (the longest such context wins).

    ``table`` is ``(V, V)`` (row = previous token); ``contexts`` maps a tuple of token ids to a ``(V,)`` row.
    """

    def __init__(self, table: torch.Tensor, contexts: dict | None = None, eos_token_id: int | None = None):
        super().__init__()
        vocab_size = table.shape[-1]
        contexts = contexts or {}
        self.table = nn.Parameter(table.float().clone(), requires_grad=False)  # (V, V)
        rows = [torch.as_tensor(row, dtype=torch.float32) for row in contexts.values()]
        self.context_rows = nn.Parameter(torch.stack(rows) if rows else torch.zeros(0, vocab_size),
                                         requires_grad=False)  # (n_contexts, V)
        self.context_index = {tuple(int(t) for t in key): i for i, key in enumerate(contexts)}
        self.context_lengths = sorted({len(key) for key in self.context_index}, reverse=True)
        self.config = TableLMConfig(vocab_size, eos_token_id)

    @property
    def vocab_size(self) -> int:
        return self.table.shape[-1]

    @property
    def device(self) -> torch.device:
        return self.table.device

    def next_logits(self, tokens: tuple) -> torch.Tensor:
        """(V,) logits of the token that follows ``tokens``."""
        for n in self.context_lengths:
            if len(tokens) >= n and tokens[-n:] in self.context_index:
                return self.context_rows[self.context_index[tokens[-n:]]]
        return self.table[tokens[-1]]

    def forward(self, input_ids=None, attention_mask=None, cache=None, past_key_values=None, use_cache=None,
                **kwargs):
        if input_ids is None:
            raise TypeError("TableLM needs input_ids: model(input_ids) or model(input_ids=input_ids)")
        if not isinstance(input_ids, torch.Tensor):
            raise TypeError(f"input_ids must be a torch.Tensor of token ids, shape (B, T); got "
                            f"{type(input_ids).__name__}")
        if input_ids.is_floating_point():
            raise TypeError(f"input_ids must hold integer token ids (torch.long); got {input_ids.dtype}")
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must have shape (B, T), with a batch axis; got {tuple(input_ids.shape)}")
        cache = past_key_values if cache is None else cache
        ids = input_ids if cache is None else torch.cat([cache, input_ids], dim=1)
        if ids.numel() and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise IndexError(f"token id out of range: the vocabulary has {self.vocab_size} tokens (0 .. "
                             f"{self.vocab_size - 1})")
        n_new, total = input_ids.shape[1], ids.shape[1]
        rows = [[self.next_logits(tuple(seq[:t + 1])) for t in range(total - n_new, total)] for seq in ids.tolist()]
        logits = torch.stack([torch.stack(r) for r in rows]) if n_new else torch.zeros(len(ids), 0, self.vocab_size)
        return LMOutput(logits.clone(), ids.clone())  # (B, T_new, V), (B, T_total)


def _log_table(probs, offsets) -> torch.Tensor:
    """Logits from a table of probabilities, each row shifted by its own offset (logits are not log-probs)."""
    probs = torch.tensor(probs, dtype=torch.float64)
    probs = probs / probs.sum(-1, keepdim=True)
    return (probs.log() + torch.tensor(offsets, dtype=torch.float64)[:, None]).float()


def beam_beats_greedy_lm() -> TableLM:
    """Tokens 0..5, start after token 0. Greedy takes 1 (p = 0.5), then 3 (0.3), then 4 (0.6): p = 0.09.
    Two beams keep 2 (p = 0.4), which is followed by 3 with p = 0.9: 2, 3, 4 has p = 0.4 * 0.9 * 0.6 = 0.216."""
    probs = [[0.02, 0.50, 0.40, 0.03, 0.03, 0.02],   # after 0: 1 is likelier than 2 ...
             [0.10, 0.10, 0.10, 0.30, 0.25, 0.15],   # ... but 1 is followed by a flat distribution
             [0.02, 0.02, 0.02, 0.90, 0.02, 0.02],   # ... and 2 by an almost certain 3
             [0.05, 0.05, 0.05, 0.05, 0.60, 0.20],
             [0.45, 0.11, 0.11, 0.11, 0.11, 0.11],
             [0.30, 0.14, 0.14, 0.14, 0.14, 0.14]]
    return TableLM(_log_table(probs, [1.0, -2.0, 3.0, 0.5, -1.0, 2.0]))


def random_lm(seed: int, vocab_size: int, n_contexts: int = 6, spread: float = 1.5,
              eos_token_id: int | None = None) -> TableLM:
    """A random TableLM: bigram logits plus ``n_contexts`` two-token contexts with their own rows.
    Each row gets a random offset, so that logits are not log-probabilities."""
    g = torch.Generator().manual_seed(seed)
    table = torch.randn(vocab_size, vocab_size, generator=g) * spread + torch.randn(vocab_size, 1, generator=g) * 3
    contexts = {}
    for _ in range(n_contexts):
        key = tuple(torch.randint(0, vocab_size, (2,), generator=g).tolist())
        contexts[key] = torch.randn(vocab_size, generator=g) * spread + torch.randn(1, generator=g) * 3
    return TableLM(table, contexts, eos_token_id)


def _ids(*tokens) -> torch.Tensor:
    return torch.tensor([tokens], dtype=torch.long)  # (1, T)


def _logprobs(model, input_ids) -> torch.Tensor:
    """(T, V) log-probabilities of the next token at every position of a (1, T) input."""
    return torch.log_softmax(model(input_ids).logits[0].double(), dim=-1)


def _scalar(value):
    """A returned number as a float (Python number, NumPy scalar, one-element tensor), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, TensorData) and value.array.size == 1 and np.issubdtype(value.array.dtype, np.number):
        return float(value.array.reshape(()))
    return None


MODEL_HINT = ("the model returns an object, not a tensor: read the (B, T, V) scores from its `.logits` "
              "attribute")


def _model_error_hint(outcome) -> str | None:
    """Hints for crashes that any exercise calling the model can have."""
    message = outcome.message
    if "LMOutput" in message:
        return MODEL_HINT
    if "must have shape (B, T)" in message:
        return "the model takes a batch: keep input_ids 2-D, (1, T), by adding a leading axis of size 1"
    if "integer token ids" in message:
        return ("token ids must stay integers (torch.long): `argmax` gives long already, so build new ids from "
                "it (or from Python ints), not from a float tensor")
    if "out of range" in message:
        return "a token id outside the vocabulary: append token ids (argmax over the vocabulary), not positions"
    if "same number of dimensions" in message or "Sizes of tensors must match" in message:
        return ("the new token must be shaped (1, 1) before it is concatenated to the (1, T) ids along the "
                "time axis")
    return None


def explain_model_error(case: Case, outcome) -> str | None:
    return _model_error_hint(outcome)


# ================================================================ sequence_logprob

def extreme_lm() -> TableLM:
    """Logits far apart: their softmax underflows to 0 in float32, and exp of the largest overflows."""
    return TableLM(torch.tensor([[0.0, 100.0, -90.0, 20.0, 50.0],  # after token 0: a spread of 190
                                 [120.0, 119.0, 118.0, 0.0, 60.0],  # large logits: exp overflows
                                 [1.0, 2.0, 3.0, 4.0, 5.0],
                                 [5.0, 4.0, 3.0, 2.0, 1.0],
                                 [0.0, 0.0, 1.0, 0.0, 0.0]]))


def sequence_logprob_cases() -> list:
    lm = random_lm(60, 9)
    return [
        RaisesCase("7 tokens, prompt_length = 3: score tokens 3..6", (lm, _ids(2, 5, 1, 8, 0, 3, 3), 3)),
        RaisesCase("5 tokens, prompt_length = 1: every token after the first",
                        (random_lm(61, 7), _ids(6, 0, 2, 2, 5), 1)),
        RaisesCase("8 tokens, prompt_length = 6: the last two tokens", (lm, _ids(1, 1, 4, 7, 2, 8, 6, 0), 6)),
        RaisesCase("4 tokens, prompt_length = 4 = T: nothing to score, the sum is 0.0",
                        (lm, _ids(3, 4, 5, 6), 4)),
        RaisesCase("logits 190 apart: token 2 after token 0 has a probability near 1e-83, below float32's "
                        "smallest number", (extreme_lm(), _ids(4, 0, 2, 1, 3), 2)),
        RaisesCase("prompt_length = 0: no token before the first one, so ValueError", (lm, _ids(3, 4, 5), 0)),
        RaisesCase("prompt_length = 5 > T = 4: ValueError", (lm, _ids(3, 4, 5, 6), 5)),
    ]


def _seq_variant(model, input_ids, prompt_length, *, shift=1, start=None, what="logprobs", reduce="sum", dim=-1,
                 check=True):
    """The score of the continuation; the switches reproduce the common mistakes (defaults: the right one)."""
    T = input_ids.shape[1]
    if check and not 1 <= prompt_length <= T:
        raise ValueError("prompt_length out of range")
    logits = model(input_ids).logits[0].double()  # (T, V)
    scores = {"logprobs": torch.log_softmax(logits, dim=dim), "logits": logits,
              "probs": torch.softmax(logits, dim=-1),
              "log_of_softmax": torch.softmax(logits.float(), dim=-1).log().double()}[what]
    start = prompt_length if start is None else start
    terms = [scores[t - shift, input_ids[0, t]] for t in range(max(start, 0), T)]
    total = torch.stack(terms).sum() if terms else torch.tensor(0.0, dtype=torch.float64)
    if reduce == "mean":
        total = total / max(len(terms), 1)
    elif reduce == "exp":
        total = total.exp()
    return float(total)


def sequence_logprob_mistakes(prompt_length: int, T: int) -> list:
    def variant(**switches):
        return lambda model, input_ids, prompt_length: _seq_variant(model, input_ids, prompt_length, **switches)

    mistakes = [
        Mistake("off by one position: scored token t with the logits at position t; the distribution of token t "
                "is predicted at the position before it, t - 1", variant(shift=0)),
        Mistake("the prompt tokens counted in the score: sum only over tokens prompt_length .. T-1",
                variant(start=1)),
        Mistake("started one token late (at prompt_length + 1): the first scored token is the one at index "
                "prompt_length",
                variant(start=prompt_length + 1)),
        Mistake("summed the logits, not the log-probabilities: apply `torch.log_softmax` over the vocabulary first",
                variant(what="logits")),
        Mistake("summed probabilities: sum the log-probabilities", variant(what="probs")),
        Mistake("took the log of the softmax: a probability below about 1e-38 is 0 in float32 and its log is -inf; "
                "`torch.log_softmax` gives the same numbers without the underflow", variant(what="log_of_softmax")),
        Mistake("returned the probability of the continuation (the exponential of the sum): return the sum of "
                "log-probabilities", variant(reduce="exp")),
        Mistake("averaged the log-probabilities instead of summing them", variant(reduce="mean")),
        Mistake("normalised over the positions instead of the vocabulary: log_softmax over the last axis",
                variant(dim=0)),
    ]
    if prompt_length >= 2:
        mistakes.insert(2, Mistake("started one token early: the last prompt token was scored too; the first "
                                   "scored token is the one at index prompt_length", variant(start=prompt_length - 1)))
    return mistakes


def judge_sequence_logprob(case: Case, out) -> str | None:
    model, input_ids, prompt_length = case.args
    T = input_ids.shape[1]
    refused = raised(out)
    if not 1 <= prompt_length <= T:
        if refused:
            return None
        return Problem(f"prompt_length = {prompt_length} with T = {T} tokens must raise ValueError; got "
                       f"{describe(out)}.", "no check of prompt_length: raise ValueError unless "
                       "1 <= prompt_length <= input_ids.shape[1]")
    if refused:
        if prompt_length == T:
            return Problem(f"raised ValueError ({out[1]}) for prompt_length = T = {T}.",
                           "prompt_length == T is allowed: there is nothing to score, so return 0.0")
        return f"raised ValueError ({out[1]}) for a valid prompt_length = {prompt_length} (T = {T})"
    expected = _seq_variant(model, input_ids, prompt_length)
    value = _scalar(out)
    if value is None:
        return f"return a number (a Python float); got {describe(out)}"
    if math.isclose(value, expected, abs_tol=1e-4, rel_tol=1e-5):
        return None
    problem = f"returned {value:.6g}; expected {expected:.6g}"
    for mistake in sequence_logprob_mistakes(prompt_length, T):
        try:
            candidate = mistake.make(model, input_ids, prompt_length)
        except Exception:
            continue
        if math.isclose(value, candidate, abs_tol=1e-4, rel_tol=1e-5):
            return Problem(problem, mistake.description)
    return problem


def explain_sequence_logprob_error(case: Case, outcome) -> str | None:
    if "index" in outcome.message and "out of bounds" in outcome.message:
        return ("an index past the end: score tokens t = prompt_length .. T-1, each with the logits at t - 1; "
                "and check 1 <= prompt_length <= T first (raise ValueError otherwise)")
    if outcome.error_type == "AssertionError":
        return "use `raise ValueError(...)` for a prompt_length out of range, not assert"
    return _model_error_hint(outcome)


register(Exercise(
    name="sequence_logprob", chapter="05", signature="(model, input_ids, prompt_length)", points=2,
    make_cases=sequence_logprob_cases, judge=judge_sequence_logprob, explain_error=explain_sequence_logprob_error,
    forbidden=(LM_PERPLEXITY, CONTINUATION_SCORING),
))


# ================================================================ greedy_decode

def greedy_decode_cases() -> list:
    lm = random_lm(70, 10, 40)
    return [
        Case("a 2-token prompt, 6 new tokens, no EOS", (lm, _ids(4, 7), 6)),
        Case("EOS = 0 comes out at the 4th step: stop after appending it",
             (random_lm(71, 8, 30), _ids(2, 7), 8), {"eos_token_id": 0}),
        Case("EOS = 8 never comes out: all 5 new tokens (greedy goes round a loop, 9 0 5 9 0)",
             (lm, _ids(1, 0, 5), 5), {"eos_token_id": 8}),
        Case("the prompt itself contains the EOS id 1 (as a chat prompt holds <|im_end|>); EOS again at step 3",
             (random_lm(72, 8, 30), _ids(2, 5, 1), 4), {"eos_token_id": 1}),
        Case("max_new_tokens = 0: the prompt unchanged", (lm, _ids(4, 7), 0)),
        Case("the hand-made table (beam search's case): greedy 0 -> 1 -> 3 -> 4", (beam_beats_greedy_lm(), _ids(0), 3)),
    ]


def _greedy_variant(model, input_ids, max_new_tokens, eos_token_id=None, *, stop="after", extra_steps=0,
                    with_prompt=True, position=-1, last_only=False, eos_anywhere=False):
    ids = input_ids.clone()
    for _ in range(max_new_tokens + extra_steps):
        context = ids[:, -1:] if last_only else ids
        next_id = model(context).logits[0, position].argmax()
        if stop == "before" and eos_token_id is not None and int(next_id) == eos_token_id:
            break
        ids = torch.cat([ids, next_id.view(1, 1)], dim=1)
        if eos_anywhere and eos_token_id is not None and bool((ids == eos_token_id).any()):
            break
        if stop == "after" and eos_token_id is not None and int(next_id) == eos_token_id:
            break
    return ids if with_prompt else ids[:, input_ids.shape[1]:]


def greedy_mistakes() -> list:
    def variant(**switches):
        return lambda model, input_ids, max_new_tokens, eos_token_id=None: _greedy_variant(
            model, input_ids, max_new_tokens, eos_token_id, **switches)

    return [
        Mistake("did not stop at EOS: stop once `eos_token_id` has been produced (after appending it)",
                variant(stop="none")),
        Mistake("stopped before appending EOS: the EOS token is part of the output, append it and then stop",
                variant(stop="before")),
        Mistake("stopped because the prompt contains eos_token_id: test only the newly generated token",
                variant(eos_anywhere=True)),
        Mistake("returned only the new tokens: return the prompt followed by the new tokens",
                variant(with_prompt=False)),
        Mistake("one token too many: run at most max_new_tokens steps", variant(extra_steps=1)),
        Mistake("one token too few: run max_new_tokens steps", variant(extra_steps=-1)),
        Mistake("called the model on the last token only: without a cache the model has no memory "
                "between calls, so give it the whole sequence so far", variant(last_only=True)),
        Mistake("took the argmax at the first position (logits[0, 0]): the next token is predicted at the last "
                "position, logits[0, -1]", variant(position=0)),
    ]


def ids_problem(out, expected: torch.Tensor, what: str = "the output") -> str | None:
    """What is wrong with returned token ids against the expected (1, T') ids, or None."""
    want = expected.tolist()
    if not isinstance(out, TensorData):
        return f"{what} should be a torch.Tensor of token ids, shape {tuple(expected.shape)}; got {describe(out)}"
    got = out.array
    if got.shape != tuple(expected.shape):
        if got.ndim == 1 and got.shape[0] == expected.shape[1] and np.array_equal(got, expected[0].numpy()):
            return Problem(f"{what} has shape {got.shape}; expected {tuple(expected.shape)} (the right tokens)",
                           "returned a 1-D tensor: keep the batch axis, shape (1, T')")
        shown = got.astype(np.int64).tolist() if got.size <= 40 and np.isfinite(got).all() else f"shape {got.shape}"
        return f"{what} has shape {got.shape}; expected {tuple(expected.shape)}: {want[0]} (yours: {shown})"
    if np.issubdtype(got.dtype, np.floating):
        same = np.array_equal(got, expected.numpy())
        return Problem(f"{what} has dtype {out.dtype}" + (" (the right tokens)" if same else ""),
                       "token ids as floats: keep them integers (torch.long); `argmax` already gives long")
    if np.array_equal(got, expected.numpy()):
        return None
    return f"{what} is {got.tolist()[0]}; expected {want[0]}"


def judge_greedy_decode(case: Case, out) -> str | None:
    expected = _greedy_variant(*case.args, **case.kwargs)
    problem = ids_problem(out, expected)
    if problem is None or getattr(problem, "mistake", None):
        return problem
    return with_mistake(problem, out, case, greedy_mistakes())


register(Exercise(
    name="greedy_decode", chapter="05", signature="(model, input_ids, max_new_tokens, eos_token_id=None)", points=2,
    make_cases=greedy_decode_cases, judge=judge_greedy_decode, explain_error=explain_model_error,
    forbidden=(GENERATION_SPEED,),
))


# ================================================================ beam_search

def beam_search_cases() -> list:
    return [
        Case("the hand-made table, 2 beams, 3 steps: beam search finds 0 2 3 4 (p = 0.216), greedy 0 1 3 4 "
             "(p = 0.09)", (beam_beats_greedy_lm(), _ids(0), 2, 3)),
        Case("V = 10, 3 beams, 4 steps, a 2-token prompt", (random_lm(29, 10, 40, spread=1.0), _ids(4, 1), 3, 4)),
        Case("V = 8, 2 beams, 5 steps", (random_lm(64, 8, 20, spread=1.0), _ids(6,), 2, 5)),
        Case("V = 9, 3 beams, 4 steps, a 2-token prompt", (random_lm(141, 9, 40, spread=1.0), _ids(3, 3), 3, 4)),
        Case("num_beams = 1 is greedy decoding: V = 8, 4 steps", (random_lm(83, 8), _ids(0, 5), 1, 4)),
        Case("one step: the best single token, V = 9, 3 beams", (random_lm(84, 9), _ids(2,), 3, 1)),
        Case("more beams than tokens: V = 5, 7 beams; the first step has only 5 continuations, so 5 hypotheses "
             "live until the second step offers 25 (then 7 are kept)", (random_lm(85, 5, 10), _ids(1,), 7, 3)),
    ]


def _beam_variant(model, input_ids, num_beams, max_new_tokens, *, rank="total", expand="all", final="best",
                  extra_steps=0, with_prompt=True, score="logprobs", last_only=False):
    """Beam search with switches that reproduce the common mistakes (defaults: the right answer)."""
    beams = input_ids.clone()  # (n, T + step)
    totals = torch.zeros(1, dtype=torch.float64)  # (n,)
    lasts = torch.zeros(1, dtype=torch.float64)
    for step in range(max_new_tokens + extra_steps):
        logits = model(beams[:, -1:] if last_only else beams).logits[:, -1].double()  # (n, V)
        step_scores = logits if score == "logits" else torch.log_softmax(logits, dim=-1)
        candidates = totals[:, None] + step_scores  # (n, V): the total of every continuation
        V = candidates.shape[1]
        key = candidates if rank == "total" else step_scores
        if expand == "own_best" and step > 0:  # each beam extended by its own best token only
            token = key.argmax(-1)
            rows = torch.arange(len(beams))
        elif expand == "no_pruning":  # num_beams continuations of every beam, all kept
            top = key.topk(min(num_beams, V), dim=-1).indices  # (n, k)
            rows = torch.arange(len(beams)).repeat_interleave(top.shape[1])
            token = top.flatten()
        else:
            flat = key.flatten().topk(min(num_beams, key.numel())).indices
            rows, token = flat // V, flat % V
        totals, lasts = candidates[rows, token], step_scores[rows, token]
        beams = torch.cat([beams[rows], token[:, None]], dim=1)
    if final == "worst":
        best = int(totals.argmin())
    else:
        best = int((totals if final == "best" else lasts).argmax())
    out = beams[best:best + 1]
    return out if with_prompt else out[:, input_ids.shape[1]:]


RANKED_BY_LAST_STEP = ("ranked the hypotheses by the last step's log-probability: rank by the total "
                       "log-probability of each sequence (the sum over its new tokens)")


def beam_mistakes() -> list:
    def variant(**switches):
        return lambda model, input_ids, num_beams, max_new_tokens: _beam_variant(
            model, input_ids, num_beams, max_new_tokens, **switches)

    return [
        Mistake("the result is the greedy sequence: only one hypothesis survives each step (keeping only the best "
                "beam, or starting from num_beams identical copies of the prompt, so that every copy picks the same "
                "tokens); keep the num_beams best *different* continuations, starting from one beam",
                lambda model, input_ids, num_beams, max_new_tokens: _greedy_variant(model, input_ids,
                                                                                    max_new_tokens)),
        Mistake(RANKED_BY_LAST_STEP, variant(rank="last", final="last")),
        Mistake(RANKED_BY_LAST_STEP, variant(rank="last")),
        Mistake("ranked by the total at every step, but returned the beam with the best last step: return "
                "the hypothesis with the highest total log-probability", variant(final="last")),
        Mistake("each beam was extended by its own best token only, so after the first step the beams never "
                "branch: choose the num_beams best among all (hypothesis, token) continuations together",
                variant(expand="own_best")),
        Mistake("kept num_beams continuations of every beam without pruning back to num_beams hypotheses",
                variant(expand="no_pruning")),
        Mistake("summed the logits, not the log-probabilities: logits are scores with an arbitrary offset per "
                "position, so normalise each step's scores with `torch.log_softmax` before adding them up",
                variant(score="logits")),
        Mistake("returned the lowest-scoring beam: return the one with the highest total log-probability",
                variant(final="worst")),
        Mistake("returned only the new tokens: return the prompt followed by the new tokens",
                variant(with_prompt=False)),
        Mistake("one step too many: run exactly max_new_tokens steps", variant(extra_steps=1)),
        Mistake("one step too few: run exactly max_new_tokens steps", variant(extra_steps=-1)),
        Mistake("called the model on the last token of each beam only: give it each whole hypothesis",
                variant(last_only=True)),
    ]


def judge_beam_search(case: Case, out) -> str | None:
    model, input_ids, num_beams, max_new_tokens = case.args
    expected = _beam_variant(*case.args)
    problem = ids_problem(out, expected)
    if problem is None or getattr(problem, "mistake", None):
        return problem
    if isinstance(out, TensorData) and out.array.shape == tuple(expected.shape) and out.array.min() >= 0 \
            and out.array.max() < model.vocab_size:
        yours = _seq_variant(model, torch.as_tensor(out.array, dtype=torch.long), input_ids.shape[1], check=False)
        best = _seq_variant(model, expected, input_ids.shape[1], check=False)
        problem += f"\n(total log-probability of the new tokens: yours {yours:.4f}, expected {best:.4f})"
    return with_mistake(problem, out, case, beam_mistakes())


def explain_beam_error(case: Case, outcome) -> str | None:
    if "selected index k out of range" in outcome.message:
        model, input_ids, num_beams, max_new_tokens = case.args
        return (f"more beams ({num_beams}) than continuations: at the first step there is one hypothesis, so only "
                f"V = {model.vocab_size} candidates; keep all of them when there are fewer than num_beams (the "
                f"number of live hypotheses is the smaller of num_beams and the number of candidates)")
    return _model_error_hint(outcome)


register(Exercise(
    name="beam_search", chapter="05", signature="(model, input_ids, num_beams, max_new_tokens)", points=3,
    make_cases=beam_search_cases, judge=judge_beam_search, explain_error=explain_beam_error,
))


# ================================================================ top_k_filter

def filter_problem(out, expected: np.ndarray, case: Case) -> str | None:
    """What is wrong with filtered logits: where a different token was kept or removed, when one was (a -inf
    against a -inf is no difference), else the usual comparison of values."""
    problem = tensor_problem(out, expected, case, "the filtered logits")
    if problem is None or getattr(problem, "mistake", None) or not isinstance(out, TensorData) \
            or out.shape != expected.shape or not np.issubdtype(out.array.dtype, np.floating):
        return problem
    differ = np.isfinite(out.array) != np.isfinite(expected)
    if not differ.any():
        return problem
    where = tuple(int(i) for i in np.argwhere(differ)[0])
    got, want = float(out.array[where]), float(expected[where])
    return (f"the filtered logits keep other tokens ({int(differ.sum())} of {differ.size} positions differ): at "
            f"index {where} yours is {got:.5g}, expected {want:.5g} "
            f"({'kept' if np.isfinite(want) else 'removed'})")


def top_k_filter_cases() -> list:
    g = torch.Generator().manual_seed(90)
    with_inf = torch.randn(2, 9, generator=g) * 2
    with_inf[0, [1, 4]] = NEG_INF
    return [
        Case("a 1-D tensor of 10 logits, k = 3", (torch.randn(10, generator=g) * 2, 3)),
        Case("a batch (4, 8), k = 2: each row keeps its own 2 largest", (torch.randn(4, 8, generator=g) * 2, 2)),
        Case("a tie at the threshold: [1, 3, 2, 2, 0.5], k = 2 keeps 3 and both 2s",
             (torch.tensor([1.0, 3.0, 2.0, 2.0, 0.5]), 2)),
        Case("k = 1: only the largest logit", (torch.randn(3, 6, generator=g), 1)),
        Case("k = V = 7: every logit is kept", (torch.randn(7, generator=g), 7)),
        Case("k = 12 > V = 6: every logit is kept", (torch.randn(2, 6, generator=g), 12)),
        Case("(2, 3, 12) logits, k = 5", (torch.randn(2, 3, 12, generator=g) * 3, 5)),
        Case("logits already -inf in places, (2, 9), k = 4", (with_inf, 4)),
    ]


def _top_k_variant(logits, k, *, strict=False, dim=-1, fill=NEG_INF, smallest=False, exactly_k=False, offset=0,
                   sort_output=False, whole_tensor=False):
    k_ = min(k, logits.shape[dim])
    if whole_tensor:
        threshold = logits.flatten().topk(k_ + offset, largest=not smallest).values[-1]
    else:
        threshold = logits.topk(k_ + offset, dim=dim, largest=not smallest).values.select(dim, -1).unsqueeze(dim)
    if exactly_k:
        keep = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, logits.topk(k_, dim=-1).indices, True)
    elif smallest:
        keep = logits <= threshold
    else:
        keep = logits > threshold if strict else logits >= threshold
    out = logits.masked_fill(~keep, fill)
    return out.sort(dim=-1, descending=True).values if sort_output else out


def top_k_mistakes(logits, k) -> list:
    def variant(**switches):
        return lambda logits, k: _top_k_variant(logits, k, **switches)

    mistakes = [
        Mistake("kept fewer than k tokens: the k-th largest logit itself (and every logit tied with it) is "
                "kept, so compare with 'at least', not 'greater than'", variant(strict=True)),
        Mistake("kept exactly k tokens, breaking the tie at the k-th largest logit: every logit equal to the k-th "
                "largest is kept too, so more than k may survive (as Hugging Face's TopKLogitsWarper does); "
                "the indices `torch.topk` returns pick one of the tied logits arbitrarily", variant(exactly_k=True)),
        Mistake("set the filtered logits to 0 instead of -inf (a logit of 0 is still a likely token)",
                variant(fill=0.0)),
        Mistake("set the filtered logits to a large negative number instead of float('-inf')",
                variant(fill=-1e9)),
        Mistake("kept the k smallest logits: keep the k largest", variant(smallest=True)),
        Mistake("kept k + 1 tokens: the threshold is the k-th largest logit (counting from 1), not the one after "
                "it", variant(offset=1)),
        Mistake("returned the logits sorted: keep every logit in its own position", variant(sort_output=True)),
        Mistake("one threshold for the whole tensor: each row (each distribution over the last dimension) keeps "
                "its own k largest", variant(whole_tensor=True)),
    ]
    if logits.dim() >= 2 and logits.shape[0] >= k:
        mistakes.append(Mistake("top-k taken over the wrong axis (dim 0): filter along the last dimension, "
                                "the vocabulary", variant(dim=0)))
    return mistakes


def judge_top_k_filter(case: Case, out) -> str | None:
    logits, k = case.args
    expected = _top_k_variant(logits, k)
    if isinstance(out, TensorData) and out.shape != tuple(logits.shape) and out.array.ndim and \
            out.shape[-1] == min(k, logits.shape[-1]):
        return Problem(f"returned shape {out.shape}; expected {tuple(logits.shape)}, the shape of the logits",
                       "returned torch.topk's k values: return a tensor shaped like `logits`, every kept logit in "
                       "its own position and -inf everywhere else")
    problem = filter_problem(out, expected.numpy(), case)
    if problem is None:
        return None
    return with_mistake(problem, out, case, top_k_mistakes(logits, k))


def _masked_fill_hint(outcome) -> str | None:
    if "masked_fill" in outcome.message or "expected a bool" in outcome.message.lower():
        return "masked_fill needs a boolean mask (True where the logit is removed), not a tensor of numbers"
    return None


def explain_top_k_error(case: Case, outcome) -> str | None:
    logits, k = case.args
    too_large = "selected index k out of range" in outcome.message or (
        outcome.error_type == "IndexError" and "out of bounds" in outcome.message)
    if too_large and k > logits.shape[-1]:
        return (f"k = {k} is larger than the vocabulary (V = {logits.shape[-1]}): then every logit is kept, so "
                f"never ask torch.topk (or an index into sorted logits) for more than V")
    if too_large:
        return "torch.topk along the wrong axis? filter along the last dimension (dim=-1), the vocabulary"
    return _masked_fill_hint(outcome)


def explain_top_p_error(case: Case, outcome) -> str | None:
    return _masked_fill_hint(outcome)


register(Exercise(
    name="top_k_filter", chapter="05", signature="(logits, k)", points=1,
    make_cases=top_k_filter_cases, judge=judge_top_k_filter, explain_error=explain_top_k_error,
    forbidden=(TOP_K_WARPER,),
))


# ================================================================ top_p_filter

def top_p_filter_cases() -> list:
    g = torch.Generator().manual_seed(91)
    partial = torch.randn(2, 10, generator=g) * 2
    partial[1, [0, 3, 7]] = NEG_INF  # as after a top-k filter
    return [
        Case("a 1-D tensor of 8 logits, p = 0.9", (torch.log(torch.tensor([0.28, 0.02, 0.25, 0.06, 0.2, 0.12, 0.03,
                                                                            0.04])) + 1.5, 0.9)),
        Case("p = 0.5: the token that crosses 0.5 is kept", (torch.log(torch.tensor([0.1, 0.4, 0.05, 0.3, 0.15])),
                                                               0.5)),
        Case("a batch (3, 12), p = 0.8: each row keeps its own set", (torch.randn(3, 12, generator=g) * 2, 0.8)),
        Case("p = 0.05, below the largest probability: only the most likely token",
             (torch.randn(9, generator=g) * 2, 0.05)),
        Case("(2, 2, 7) logits, p = 0.6", (torch.randn(2, 2, 7, generator=g) * 1.5, 0.6)),
        Case("logits already -inf in places (after a top-k filter), (2, 10), p = 0.75", (partial, 0.75)),
        Case("a tie at the threshold: probabilities [0.1, 0.2, 0.4, 0.2, 0.1], p = 0.5: 0.4 and both 0.2s are kept",
             (torch.log(torch.tensor([0.1, 0.2, 0.4, 0.2, 0.1])), 0.5)),
        Case("p = 1: every logit is kept, even those whose probability is 1e-22 or rounds to 0",
             (torch.tensor([9.0, 1.0, 0.5, -3.0, -8.0, -15.0, -40.0, -120.0]), 1.0)),
    ]


def _top_p_variant(logits, p, *, crossing=True, own_prob=False, ascending=False, on_logits=False, unsorted=False,
                   fill=NEG_INF, sort_output=False, one_minus=False, dim=-1, ties=True, all_at_one=True):
    """Top-p filtering; the switches reproduce the common mistakes (defaults: the right answer)."""
    if p >= 1 and all_at_one:
        return logits.clone()
    probs = torch.softmax(logits.double(), dim=dim)
    if one_minus:
        p = 1 - p
    if own_prob:
        keep = probs >= p
    else:
        values = logits.double() if on_logits else probs
        if unsorted:
            order = torch.arange(logits.shape[-1]).expand(logits.shape)
        else:
            order = values.argsort(dim=-1, descending=not ascending)
        sorted_values = values.gather(-1, order)
        cumulative = sorted_values.cumsum(-1)
        keep_sorted = (cumulative - sorted_values < p) if crossing else (cumulative <= p)
        keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
        if ties:  # a token as probable as a kept one is kept too, whatever order the sort gave them
            kept_probs = torch.where(keep, probs, torch.nan)  # (..., V)
            keep = keep | (probs[..., :, None] == kept_probs[..., None, :]).any(-1)
    out = logits.masked_fill(~keep, fill)
    return out.sort(dim=-1, descending=True).values if sort_output else out


TOP_P_TIE = ("dropped a token exactly as probable as the last token kept: the sort put it after that token, but "
             "the tokens *strictly* more probable than it sum to less than p, so it stays (ties are kept, as in "
             "top_k_filter)")
TOP_P_ALL = ("with p >= 1 some tokens were dropped: in floating point the cumulative sum reaches 1 before the last "
             "tokens (or a tiny probability rounds to 0); p >= 1 keeps every logit, so handle it before the sort")


def top_p_mistakes(logits) -> list:
    def variant(**switches):
        return lambda logits, p: _top_p_variant(logits, p, **switches)

    mistakes = [
        Mistake("dropped the token that crosses p: keep tokens while the probability of the *more probable* tokens "
                "is still below p, so the set's total reaches at least p (and never drops every token)",
                variant(crossing=False)),
        Mistake("compared each token's own probability with p: p bounds the *cumulative* probability of the most "
                "probable tokens", variant(own_prob=True)),
        Mistake("sorted in ascending order, so the cumulative sum started from the least probable tokens: sort "
                "descending", variant(ascending=True)),
        Mistake("cumulative sum of the logits instead of the probabilities: softmax first", variant(on_logits=True)),
        Mistake("cumulative sum in vocabulary order: sort by probability first (and scatter back)",
                variant(unsorted=True)),
        Mistake("returned the logits in sorted order: put every kept logit back at its own position "
                "(scatter with the sort indices)", variant(sort_output=True)),
        Mistake("set the filtered logits to 0 instead of -inf (a logit of 0 is still a likely token)",
                variant(fill=0.0)),
        Mistake("set the filtered logits to a large negative number instead of float('-inf')", variant(fill=-1e9)),
        Mistake("used 1 - p as the threshold: keep the most probable tokens until their total reaches p",
                variant(one_minus=True)),
        Mistake(TOP_P_TIE, variant(ties=False)),
        Mistake(TOP_P_ALL, variant(all_at_one=False)),
    ]
    if logits.dim() >= 2:
        mistakes.append(Mistake("softmax over the wrong axis (dim 0): each distribution runs along the last "
                                "dimension", variant(dim=0)))
    return mistakes


def judge_top_p_filter(case: Case, out) -> str | None:
    logits, p = case.args
    expected = _top_p_variant(logits, p)
    problem = filter_problem(out, expected.numpy(), case)
    if problem is None:
        return None
    if isinstance(out, TensorData) and out.shape == tuple(logits.shape):
        kept_yours, kept = np.isfinite(out.array).sum(-1), np.isfinite(expected.numpy()).sum(-1)
        if np.any(kept_yours != kept):
            problem += (f"\n(tokens kept per distribution: yours {np.ravel(kept_yours).tolist()}, "
                        f"expected {np.ravel(kept).tolist()})")
        dropped = np.isfinite(expected.numpy()) & ~np.isfinite(out.array)
        if dropped.any() and not (np.isfinite(out.array) & ~np.isfinite(expected.numpy())).any():
            if p >= 1:
                return Problem(problem, TOP_P_ALL)
            if _only_ties_dropped(logits, np.isfinite(out.array), dropped):
                return Problem(problem, TOP_P_TIE)
    return with_mistake(problem, out, case, top_p_mistakes(logits))


def _only_ties_dropped(logits, kept, dropped) -> bool:
    """Is every token an answer wrongly dropped exactly as probable as the least probable token it kept?"""
    probs = torch.softmax(logits.double(), dim=-1).numpy()
    least_kept = np.where(kept, probs, np.inf).min(-1, keepdims=True)  # (..., 1)
    return bool(np.all(probs[dropped] == np.broadcast_to(least_kept, probs.shape)[dropped]))


register(Exercise(
    name="top_p_filter", chapter="05", signature="(logits, p)", points=3,
    make_cases=top_p_filter_cases, judge=judge_top_p_filter, explain_error=explain_top_p_error,
    forbidden=(TOP_P_WARPER,),
))


# ================================================================ sample_next_token

N_DRAWS = 2000  # draws per case; frequencies are compared with the expected distribution
REPEATS = 20  # draws repeated from a fresh generator with the same seed: the same tokens must come out
Z_LIMIT = 5.0  # a frequency more than 5 standard errors from its probability fails (p < 1e-6 per token)


@dataclass
class SamplingCase(Case):
    """Calls ``fn`` N_DRAWS times with one seeded generator, then REPEATS times with a fresh generator of the
    same seed. The output is the list of draws; the observations hold the repeated draws."""

    seed: int = 0
    n_draws: int = N_DRAWS

    def run(self, fn):
        (logits,), kwargs = self.inputs()
        generator = torch.Generator().manual_seed(self.seed)
        draws, changed = [], False
        for _ in range(self.n_draws):
            given = logits.clone()
            draws.append(fn(given, **kwargs, generator=generator))
            changed = changed or _changed(given, logits)
        generator = torch.Generator().manual_seed(self.seed)
        repeat = [fn(logits.clone(), **kwargs, generator=generator) for _ in range(REPEATS)]
        observations = {"repeat": repeat}
        if changed:
            observations["modified_inputs"] = [0]
        return draws, observations


def sampling_distribution(logits, temperature=1.0, top_k=None, top_p=None, *, order="temperature_first",
                          skip=(), multiply=False, crossing=True) -> np.ndarray:
    """The probabilities ``sample_next_token`` samples from; the switches reproduce the common mistakes."""
    x = logits.double()
    if temperature == 0 and "temperature" not in skip:
        probs = np.zeros(x.shape[-1])
        probs[int(x.argmax())] = 1.0
        return probs

    def scale(v):
        if "temperature" in skip:
            return v
        return v * temperature if multiply else v / temperature

    def top_k_step(v):
        return v if top_k is None or "top_k" in skip else _top_k_variant(v, top_k)

    def top_p_step(v):
        return v if top_p is None or "top_p" in skip else _top_p_variant(v, top_p, crossing=crossing)

    if order == "temperature_last":
        x = scale(top_p_step(top_k_step(x)))
    elif order == "top_p_first":
        x = top_k_step(top_p_step(scale(x)))
    else:
        x = top_p_step(top_k_step(scale(x)))
    return torch.softmax(x, dim=-1).numpy()


def sampling_mistakes() -> list:
    """(description, the switches of ``sampling_distribution`` that reproduce it)."""
    return [
        ("applied the temperature after filtering: the temperature comes first, then top-k, then top-p (the "
         "top-p set depends on the temperature)", {"order": "temperature_last"}),
        ("applied top-p before top-k: top-k first, then top-p on what top-k kept", {"order": "top_p_first"}),
        ("multiplied the logits by the temperature instead of dividing by it", {"multiply": True}),
        ("ignored the temperature", {"skip": ("temperature",)}),
        ("ignored top_k", {"skip": ("top_k",)}),
        ("ignored top_p", {"skip": ("top_p",)}),
        ("sampled from the unfiltered distribution: sample from the logits after top-k and top-p",
         {"skip": ("top_k", "top_p")}),
        ("top-p dropped the token that crosses p: keep the most probable tokens until their total reaches p",
         {"crossing": False}),
    ]


ARGMAX_MISTAKE = ("always returned the most likely token: draw the token at random in proportion to its probability "
                  "(torch.multinomial) unless temperature == 0")


def _fits(counts: np.ndarray, probs: np.ndarray) -> bool:
    """Are these counts a plausible sample of ``probs``? (no draw outside the support, every z within Z_LIMIT)"""
    n = counts.sum()
    if np.any((probs <= 0) & (counts > 0)):
        return False
    spread = np.sqrt(np.maximum(n * probs * (1 - probs), 1e-12))
    return bool(np.all(np.abs(counts - n * probs) <= Z_LIMIT * spread + 1))


def judge_sample_next_token(case: Case, out, observations) -> str | None:
    (logits,) = case.args
    if not isinstance(out, list) or not out:
        return f"expected a token id (int) from every call; got {describe(out)}"
    first = out[0]
    if isinstance(first, TensorData):
        return Problem(f"returned {describe(first)}; expected a Python int",
                       "returned a tensor: return the token id as a Python int")
    if not all(isinstance(d, int) and not isinstance(d, bool) for d in out):
        bad = next(d for d in out if not isinstance(d, int) or isinstance(d, bool))
        return f"expected a token id (int) from every call; got {describe(bad)}"
    V = logits.shape[-1]
    if min(out) < 0 or max(out) >= V:
        return f"returned token id {max(out) if max(out) >= V else min(out)}, outside the vocabulary 0 .. {V - 1}"
    counts = np.bincount(out, minlength=V).astype(np.float64)
    expected = sampling_distribution(logits, **case.kwargs)
    repeat = observations.get("repeat", [])
    if _fits(counts, expected):
        if repeat != out[:len(repeat)]:
            return Problem("the same seed gave different tokens: a fresh generator seeded alike must give the "
                           "same draws", "ignored `generator`: the random draw must take its randomness from the "
                           "generator it is given (torch.multinomial and torch.rand accept it as a keyword)")
        return None
    n = int(counts.sum())
    support = np.flatnonzero(expected > 0)
    outside = np.flatnonzero((expected <= 0) & (counts > 0))
    shown = ", ".join(f"{t}: {counts[t] / n:.3f} (expected {expected[t]:.3f})" for t in np.argsort(-expected)[:6])
    problem = (f"over {n} draws the frequencies do not match the distribution after temperature, top-k and top-p "
               f"(token: frequency): {shown}")
    if len(outside):
        problem = (f"sampled token(s) {outside.tolist()[:5]}, which the filters remove (the kept tokens are "
                   f"{support.tolist()}); " + problem)
    if case.kwargs.get("temperature", 1.0) != 0 and len(support) > 1 and counts.max() == n:
        return Problem(problem, ARGMAX_MISTAKE)
    for description, switches in sampling_mistakes():
        if _fits(counts, sampling_distribution(logits, **case.kwargs, **switches)):
            return Problem(problem, description)
    return problem


def explain_sample_error(case: Case, outcome) -> str | None:
    message = outcome.message
    if "probability tensor contains" in message or "invalid multinomial distribution" in message:
        if case.kwargs.get("temperature", 1.0) == 0:
            return "temperature=0 means argmax: return the index of the largest logit before dividing by it"
        return ("torch.multinomial needs probabilities: softmax the filtered logits first (a -inf logit becomes "
                "probability 0)")
    if "unexpected keyword argument 'generator'" in message:
        return ("the function that draws must receive the generator as its `generator` keyword argument "
                "(torch.multinomial does; random.choices and numpy do not take a torch generator)")
    if "division by zero" in message or "ZeroDivisionError" in outcome.error_type:
        return "temperature=0 means argmax: handle it before dividing by the temperature"
    return None


def _sampling_logits(probs, offset=0.0) -> torch.Tensor:
    probs = torch.tensor(probs, dtype=torch.float64)
    return (torch.log(probs / probs.sum()) + offset).float()


def sample_next_token_cases() -> list:
    # softmax(x / 0.6) of these probabilities: [0.42, 0.27, 0.13, 0.096, 0.05, 0.023, 0.011] roughly
    skewed = _sampling_logits([0.32, 0.25, 0.16, 0.13, 0.08, 0.04, 0.02], offset=2.0)
    return [
        SamplingCase("temperature 1, no filter: the softmax of 6 logits",
                     (_sampling_logits([0.35, 0.25, 0.2, 0.1, 0.06, 0.04], offset=-1.0),), seed=1),
        SamplingCase("temperature 0.5 sharpens the distribution", (_sampling_logits([0.3, 0.25, 0.2, 0.15, 0.1]),),
                     {"temperature": 0.5}, seed=2),
        SamplingCase("temperature 2 flattens it, top_k = 3", (_sampling_logits([0.4, 0.3, 0.15, 0.1, 0.05], 3.0),),
                     {"temperature": 2.0, "top_k": 3}, seed=3),
        SamplingCase("temperature 0.6, then top_p = 0.8: after the temperature 3 tokens reach 0.8, before it 4",
                     (skewed,), {"temperature": 0.6, "top_p": 0.8}, seed=4),
        SamplingCase("top_k = 4, then top_p = 0.8 on what top-k kept: 3 tokens (top-p first would keep 4)", (skewed,),
                     {"top_k": 4, "top_p": 0.8}, seed=5),
        SamplingCase("temperature 0: always the argmax", (_sampling_logits([0.2, 0.1, 0.45, 0.25]),),
                     {"temperature": 0}, seed=6, n_draws=50),
    ]


register(Exercise(
    name="sample_next_token", chapter="05",
    signature="(logits, temperature=1.0, top_k=None, top_p=None, generator=None)", points=2,
    make_cases=sample_next_token_cases, judge=judge_sample_next_token, explain_error=explain_sample_error,
    forbidden=(TOP_K_WARPER, TOP_P_WARPER),
))


# ================================================================ classify_by_likelihood

TOY_WORDS = ["Input", "Output", "Review", "Sentiment", "great", "terrible", "fine", "good", "bad", "not", "very",
             "positive", "negative", "neutral", "okay", "awful", "the", "film", "plot", "acting", "was", "is", "a",
             "movie", "boring", "fun", "dull", "and", "but", "so", "it", "of", "loved", "hated", "music", "story"]
TOY_VOCAB = (["<s>", "</s>", "\n", "\n\n", " ", ":", ": ", ".", ",", "!", "?", "'", "-"]
             + [w for word in TOY_WORDS for w in (word, " " + word)]
             + list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"))


class ToyEncoding(AttrDict):
    """What a Hugging Face tokenizer call returns: a dict that also reads as attributes (``.input_ids``)."""

    def to(self, device):
        return self


class ToyTokenizer:
    """Longest-match tokenizer over ``pieces`` (TOY_VOCAB; the first two are ``<s>`` and ``</s>``), with the
    calls of a Hugging Face tokenizer.

    ``add_special_tokens=True`` (the default) puts the BOS token ``<s>`` first, as Llama's tokenizer does.
    Every text it is given is recorded in ``calls`` (text, add_special_tokens), for the check's diagnosis.
    """

    def __init__(self, pieces=TOY_VOCAB):
        self.vocab = {piece: i for i, piece in enumerate(pieces)}
        self.pieces = list(pieces)
        self.longest = max(map(len, pieces))
        self.bos_token, self.eos_token, self.pad_token = "<s>", "</s>", "</s>"
        self.bos_token_id, self.eos_token_id, self.pad_token_id = 0, 1, 1
        self.calls = []

    @property
    def vocab_size(self) -> int:
        return len(self.pieces)

    def __len__(self):
        return len(self.pieces)

    def get_vocab(self) -> dict:
        return dict(self.vocab)

    def tokenize(self, text: str) -> list[str]:
        pieces, i = [], 0
        while i < len(text):
            for n in range(min(self.longest, len(text) - i), 0, -1):
                if text[i:i + n] in self.vocab and text[i:i + n] not in ("<s>", "</s>"):
                    pieces.append(text[i:i + n])
                    i += n
                    break
            else:
                raise ValueError(f"{type(self).__name__} cannot encode {text[i]!r}")
        return pieces

    def _encode_one(self, text: str, add_special_tokens: bool) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"the tokenizer takes a str; got {type(text).__name__}")
        self.calls.append((text, bool(add_special_tokens)))
        ids = [self.vocab[p] for p in self.tokenize(text)]
        return [self.bos_token_id] + ids if add_special_tokens else ids

    def encode(self, text, add_special_tokens=True, return_tensors=None, **kwargs):
        ids = self._encode_one(text, add_special_tokens)
        return torch.tensor([ids], dtype=torch.long) if return_tensors == "pt" else ids

    def __call__(self, text, add_special_tokens=True, return_tensors=None, padding=False, **kwargs):
        texts = [text] if isinstance(text, str) else list(text)
        rows = [self._encode_one(t, add_special_tokens) for t in texts]
        if padding:
            width = max(map(len, rows))
            masks = [[1] * len(r) + [0] * (width - len(r)) for r in rows]
            rows = [r + [self.pad_token_id] * (width - len(r)) for r in rows]
        else:
            masks = [[1] * len(r) for r in rows]
        if return_tensors == "pt":
            if len({len(r) for r in rows}) > 1:
                raise ValueError("texts of different lengths: pass padding=True to make one tensor")
            ids, masks = torch.tensor(rows, dtype=torch.long), torch.tensor(masks, dtype=torch.long)
        elif isinstance(text, str):
            ids, masks = rows[0], masks[0]
        else:
            ids = rows
        return ToyEncoding(input_ids=ids, attention_mask=masks)

    def convert_ids_to_tokens(self, ids):
        return self.pieces[int(ids)] if isinstance(ids, int) else [self.pieces[int(i)] for i in ids]

    def convert_tokens_to_ids(self, tokens):
        return self.vocab[tokens] if isinstance(tokens, str) else [self.vocab[t] for t in tokens]

    def decode(self, ids, skip_special_tokens=False, **kwargs):
        ids = ids.flatten().tolist() if isinstance(ids, torch.Tensor) else list(ids)
        return "".join(self.pieces[i] for i in ids if not (skip_special_tokens and i in (0, 1)))


@dataclass
class ClassifyCase(Case):
    """A classify_by_likelihood call; the observations say which texts the tokenizer was given, and how."""

    def run(self, fn):
        args, kwargs = self.inputs()
        value = self.invoke(fn, args, kwargs)
        return value, {"tokenized": [[text, special] for text, special in args[1].calls]}


def _toy_lm(seed: int) -> TableLM:
    return random_lm(seed, len(TOY_VOCAB), n_contexts=0, spread=2.0)


def tied_toy_lm(seed: int, after: str, tied: tuple) -> TableLM:
    """A toy LM under which the one-token labels ``tied`` (" " + label) are equally likely after the piece
    ``after``, and likelier than every other token there: a tie for the best label."""
    table = _toy_lm(seed).table.detach().clone()  # (V, V)
    row = TOY_VOCAB.index(after)
    best = float(table[row].max()) + 2.0
    for label in tied:
        table[row, TOY_VOCAB.index(" " + label)] = best
    return TableLM(table)


CLASSIFY_PROMPT = ("Classify the sentiment of each review.\n\nInput: the plot was dull\nOutput: negative\n\n"
                   "Input: loved the music\nOutput: positive\n\nInput: {}\nOutput:")


def classify_by_likelihood_cases() -> list:
    return [
        ClassifyCase("two labels after a few-shot prompt", (_toy_lm(100), ToyTokenizer(),
                                                             CLASSIFY_PROMPT.format("the acting was fun"),
                                                             ["positive", "negative"])),
        ClassifyCase("three labels of one token each", (_toy_lm(101), ToyTokenizer(),
                                                        "Input: the film was okay\nOutput:",
                                                        ["great", "terrible", "fine"])),
        ClassifyCase("labels of one, two and three tokens", (_toy_lm(102), ToyTokenizer(),
                                                             "Review: it was a movie\nSentiment:",
                                                             ["good", "not good", "very very bad"])),
        ClassifyCase("labels that share their first token", (_toy_lm(103), ToyTokenizer(),
                                                             "Input: the story\nOutput:",
                                                             ["very good", "very bad", "okay"])),
        ClassifyCase("four labels", (_toy_lm(104), ToyTokenizer(), CLASSIFY_PROMPT.format("so boring"),
                                     ["positive", "negative", "neutral", "awful"])),
        ClassifyCase("two labels, another prompt", (_toy_lm(105), ToyTokenizer(), "Input: hated it\nOutput:",
                                                    ["dull", "fun"])),
        ClassifyCase("a tie: 'great' and 'fine' are equally likely and the best; the first in `labels` wins, 'great'",
                     (tied_toy_lm(106, ":", ("great", "fine")), ToyTokenizer(), "Input: the film was okay\nOutput:",
                      ["great", "fine", "terrible"])),
    ]


def _label_scores(model, tokenizer, prompt, labels, *, together=False, special=False, space=" ", first_only=False,
                  reduce="sum", what="logprobs", shift=1):
    """The score of every label; the switches reproduce the common mistakes (defaults: the right scores)."""
    prompt_ids = tokenizer.encode(prompt, add_special_tokens=special)
    scores = []
    for label in labels:
        if together:
            ids = tokenizer.encode(prompt + space + label, add_special_tokens=special)
        else:
            ids = prompt_ids + tokenizer.encode(space + label, add_special_tokens=special)
        logits = model(torch.tensor([ids])).logits[0].double()  # (T, V)
        logp = torch.log_softmax(logits, dim=-1) if what == "logprobs" else logits
        positions = range(len(prompt_ids), len(ids))
        terms = [float(logp[t - shift, ids[t]]) for t in positions if t - shift >= 0]
        if first_only:
            terms = terms[:1]
        scores.append(sum(terms) / max(len(terms), 1) if reduce == "mean" else sum(terms))
    return scores


def _classify_variant(model, tokenizer, prompt, labels, *, lowest=False, last_on_tie=False, **switches):
    scores = _label_scores(model, tokenizer, prompt, labels, **switches)
    order = list(range(len(labels)))
    if last_on_tie:  # max and min return the first of equal scores: scan from the end to get the last
        order.reverse()
    best = min(order, key=scores.__getitem__) if lowest else max(order, key=scores.__getitem__)
    return labels[best]


def _said_together(observations, prompt, labels) -> bool:
    return any(text in (prompt + " " + label, prompt + label) for text, _ in observations.get("tokenized", [])
               for label in labels)


def _with_special_tokens(observations) -> bool:
    return any(special for _, special in observations.get("tokenized", []))


def _without_space(observations, labels) -> bool:
    return any(text in labels for text, _ in observations.get("tokenized", []))


@dataclass
class ClassifyMistake:
    description: str
    switches: dict
    seen: object = None  # observations -> bool: the call shows the mistake (None: nothing to see)


def classify_mistakes(prompt, labels) -> list:
    return [
        ClassifyMistake("the label was tokenized together with the prompt: at the boundary the tokens differ "
                        "(\"Output: great\" gives \"Output\", \": \", \"great\"); tokenize the prompt and "
                        "the label with its space separately, then put the two lists of ids one after the other",
                        {"together": True}, lambda obs: _said_together(obs, prompt, labels)),
        ClassifyMistake("tokenized with special tokens: the tokenizer put its BOS token <s> before the label (and the "
                        "prompt); ask the tokenizer not to add special tokens", {"special": True},
                        _with_special_tokens),
        ClassifyMistake("the label was tokenized without its leading space: after `Output:` the model writes "
                        "the space and the word as one token, so score the label with a space in front",
                        {"space": ""}, lambda obs: _without_space(obs, labels)),
        ClassifyMistake("scored only the first token of each label: sum the log-probabilities of all its tokens",
                        {"first_only": True}),
        ClassifyMistake("averaged the log-probabilities over the label's tokens: rank by their sum "
                        "(sequence_logprob)", {"reduce": "mean"}),
        ClassifyMistake("summed logits, not log-probabilities (see sequence_logprob)", {"what": "logits"}),
        ClassifyMistake("scored each token with the logits at its own position (see sequence_logprob): token t is "
                        "predicted at t - 1", {"shift": 0}),
        ClassifyMistake("returned the least likely label: return the one with the highest log-probability",
                        {"lowest": True}),
        ClassifyMistake("on a tie returned a later label: when several labels share the highest score, the first "
                        "of them in the order of `labels` wins (a comparison that also replaces the best on an "
                        "equal score picks the last)", {"last_on_tie": True}),
    ]


def judge_classify_by_likelihood(case: Case, out, observations) -> str | None:
    model, tokenizer, prompt, labels = case.args
    expected = _classify_variant(model, tokenizer, prompt, labels)
    if isinstance(out, int) and not isinstance(out, bool) and 0 <= out < len(labels) and labels[out] == expected:
        return Problem(f"returned the index {out}; expected the label itself, {expected!r}",
                       "returned the index of the best label: return the label string itself")
    if not isinstance(out, str):
        return f"return one of the labels (a str); got {describe(out)}"
    if out == expected:
        return None
    if out.strip() == expected:
        return Problem(f"returned {out!r}; expected {expected!r}",
                       "returned the label with the added space: return the label as given in `labels`")
    if out not in labels:
        return f"returned {out!r}, which is not one of the labels {labels}"
    scores = _label_scores(model, tokenizer, prompt, labels)
    problem = (f"returned {out!r}; expected {expected!r} (log-probabilities of the labels: "
               + ", ".join(f"{label!r} {s:.3f}" for label, s in zip(labels, scores)) + ")")
    if scores[labels.index(out)] == scores[labels.index(expected)]:  # an exact tie: only the order decides
        return Problem(problem, next(m.description for m in classify_mistakes(prompt, labels)
                                     if m.switches.get("last_on_tie")))
    matching = []
    for mistake in classify_mistakes(prompt, labels):
        if _classify_variant(model, ToyTokenizer(), prompt, labels, **mistake.switches) == out:
            matching.append(mistake)
    seen = [m for m in matching if m.seen is not None and m.seen(observations)]
    chosen = (seen or [m for m in matching if m.seen is None] or matching or [None])[0]
    return Problem(problem, chosen.description if chosen else None)


def explain_classify_error(case: Case, outcome) -> str | None:
    if "ToyTokenizer" in outcome.message and "attribute" in outcome.message:
        return ("the check's tokenizer supports `tokenizer(text, add_special_tokens=False).input_ids`, "
                "`tokenizer.encode(text, add_special_tokens=False)` and `return_tensors=\"pt\"`")
    if "prompt_length" in outcome.message or outcome.error_type == "ValueError":
        return ("prompt_length is the number of prompt tokens, and the label's ids follow them in one (1, T) "
                "tensor: every label has at least one token, so prompt_length is always below T")
    return _model_error_hint(outcome)


register(Exercise(
    name="classify_by_likelihood", chapter="05", signature="(model, tokenizer, prompt, labels)", points=2,
    make_cases=classify_by_likelihood_cases, judge=judge_classify_by_likelihood,
    explain_error=explain_classify_error, forbidden=(LABEL_SCORING, LM_PERPLEXITY),
))
