"""Chapter 04, transfer learning: mask_tokens, evaluate, train_epoch.

``mask_tokens`` is random, so its check is statistical: each case masks tens of thousands of tokens
with a seeded generator and compares the shares with BERT's rule (15 % of the non-special tokens
chosen; of those, 80 % ``[MASK]``, 10 % a random token, 10 % unchanged) within stated tolerances,
wide enough that any correct way of drawing passes (by 4.5 standard deviations or more) and narrow
enough that the usual wrong rules fail. The case also calls the function again with the same and with
another seed, to see that the draws come from ``generator``.

``evaluate`` and ``train_epoch`` run on a tiny sequence classifier (an embedding, a mean over the real
tokens and a linear layer, called like a Hugging Face model) that records the mode of every forward
pass and whether gradients were on. ``evaluate`` is judged on its values (the loss and accuracy
recomputed per batch and weighted by batch size; the usual wrong means are recomputed too, to name them)
and on those records: eval mode, no gradients, the model's mode given back.

``train_epoch`` is judged on its side effects: an SGD optimizer records the gradients and learning rate
it sees at every step, and optionally a scheduler counts its steps; the model is handed over in eval
mode. Afterwards the case recomputes, for every batch, the loss and the gradient at the weights the
optimizer saw, and reports as plain values: the steps per batch, whether each step used that batch's
own gradient (or an accumulated one, or none), the learning rates, the scheduler steps, the model's
mode during and after the epoch, and the per-batch losses that the returned mean must match.

Both raise ``ValueError`` on no batches at all; a case without batches reports that error (or the
crash of a loop that divides by its own count of zero) as a plain value for the judge.
"""

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from grader.compare import Mistake, Problem
from grader.core import Case, Exercise, RAISED, _changed, raised, register
from grader.forbidden import FIT, HELDOUT_ACCURACY, MLM_COLLATOR, PREDICT
from grader.values import TensorData, describe

IGNORE = -100  # the label of a token that was not chosen (cross-entropy's ignore_index)


def _number(out):
    """``out`` as a float when it is a plain number, else None (tensors and the rest are judged apart)."""
    if isinstance(out, bool) or not isinstance(out, (int, float)):
        return None
    return float(out)


def _scalar_tensor(out):
    """The value of a one-element tensor, else None."""
    if isinstance(out, TensorData) and out.array.size == 1:
        return float(out.array.reshape(()))
    return None


# ================================================================ mask_tokens

# Each case has enough tokens that a correct answer lands within these tolerances by 4.5 standard
# deviations or more (at least 200,000 p (1 - p) non-special tokens and 3,600 chosen ones).
RATE_TOL = 0.01  # chosen share of the non-special tokens: p +- 1 point
SPLIT_TOL = 0.03  # [MASK] / random / unchanged shares of the chosen tokens: 80 / 10 / 10 +- 3 points
SPLIT = {"mask": 0.8, "random": 0.1, "kept": 0.1}


@dataclass
class MaskCase(Case):
    """A ``mask_tokens`` call with a fresh ``torch.Generator`` seeded with ``seed`` (None: no generator,
    the global random stream, seeded here). ``run`` calls the function three times: with the seed, with
    the seed again, and with another seed, and reports whether the outputs repeat and differ."""

    seed: int | None = 0

    def _kwargs(self, seed):
        kwargs = dict(self.kwargs)
        if seed is not None:
            kwargs["generator"] = torch.Generator().manual_seed(seed)
        return kwargs

    def run(self, fn):
        outputs = []
        with torch.random.fork_rng(devices=[]):  # the learner's own random stream is left alone
            for i, seed in enumerate([self.seed, self.seed, None if self.seed is None else self.seed + 1]):
                torch.manual_seed(1000 + i)  # a different global stream each call
                args, _ = self.inputs()
                value = fn(*args, **self._kwargs(seed))
                if i == 0:
                    first, changed = value, [j for j, (a, b) in enumerate(zip(args, self.args)) if _changed(a, b)]
                outputs.append(_as_pair(value))
        observations = {"modified_inputs": changed} if changed else {}
        if self.seed is not None and all(o is not None for o in outputs):
            observations["same_seed_same_output"] = _same(outputs[0], outputs[1])
            observations["other_seed_other_output"] = not _same(outputs[0], outputs[2])
        return first, observations


def _as_pair(value):
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, torch.Tensor) for v in value):
        return tuple(v.detach().clone() for v in value)
    return None


def _same(a, b) -> bool:
    return all(x.shape == y.shape and bool((x == y).all()) for x, y in zip(a, b))


def _mask_variant(input_ids, special_tokens_mask, mask_token_id, vocab_size, mlm_probability=0.15, generator=None,
                  *, p=None, special_too=False, mask_share=0.8, random_share=0.5, random_from_input=False,
                  labels_everywhere=False, labels_inverted=False, labels_after=False, in_place=False,
                  unchosen_random=False, kept_unlabelled=False, vocab_high=None):
    """BERT's masking, with switches that reproduce the common mistakes (defaults: the right answer)."""
    p = mlm_probability if p is None else p
    ids = input_ids if in_place else input_ids.clone()
    original = input_ids.clone()
    chosen = torch.rand(ids.shape, generator=generator) < p
    if not special_too:
        chosen &= ~special_tokens_mask
    to_mask = chosen & (torch.rand(ids.shape, generator=generator) < mask_share)
    coin = torch.rand(ids.shape, generator=generator) < random_share
    to_random = coin & ~to_mask & (True if unchosen_random else chosen)
    if random_from_input:  # drawn from the chosen tokens themselves
        pool = original[chosen]
        random_ids = pool[torch.randint(len(pool), ids.shape, generator=generator)]
    else:
        random_ids = torch.randint(vocab_high or vocab_size, ids.shape, generator=generator)
    ids[to_mask] = mask_token_id
    ids[to_random] = random_ids[to_random]
    labels = (ids if labels_after else original).clone()
    if labels_everywhere:
        return ids, labels
    keep = ~chosen
    if labels_inverted:
        keep = chosen
    if kept_unlabelled:
        keep = ~(to_mask | (to_random & chosen))
    labels[keep] = IGNORE
    return ids, labels


def _mask_mistake(description, **switches):
    return Mistake(description, lambda *args, **kwargs: _mask_variant(*args, **kwargs, **switches))


IN_PLACE = _mask_mistake(
    "changed `input_ids` in place (a new name for a tensor is the same tensor, not a copy): work on a copy "
    "(`clone`) and take the labels from the untouched original", in_place=True)
LABELS_REPLACED = _mask_mistake(
    "the labels hold the replaced tokens ([MASK] or the random ones): a label is the *original* id of its "
    "token, taken from `input_ids` before any replacement", labels_after=True)
LABELS_EVERYWHERE = _mask_mistake(
    "labels kept at the positions that were not chosen: the label is -100 wherever a token was not "
    "chosen, so the loss only counts the chosen 15 %", labels_everywhere=True)
LABELS_INVERTED = _mask_mistake(
    "labels inverted: the chosen tokens got -100 and the others kept their id; it is the other way round",
    labels_inverted=True)
KEPT_UNLABELLED = _mask_mistake(
    "labels only where a token was replaced: the 10 % of chosen tokens that stay unchanged are still "
    "chosen and keep their original id as label (the model must predict them too)", kept_unlabelled=True)
SPECIAL_CHOSEN = _mask_mistake(
    "special tokens ([CLS], [SEP], [PAD]) were chosen or replaced: `special_tokens_mask` (True = special) "
    "marks the tokens that are never chosen", special_too=True)
UNCHOSEN_REPLACED = _mask_mistake(
    "tokens that were not chosen were replaced: the 80/10/10 rule applies only to the chosen tokens, so "
    "every replacement mask must be restricted to them", unchosen_random=True)
P_IGNORED = _mask_mistake(
    "ignored `mlm_probability` (always 15 %): each token is chosen with probability `mlm_probability`", p=0.15)
ALL_MASK = _mask_mistake(
    "every chosen token became [MASK] (100 % [MASK] replacement): of the chosen tokens, 80 % become [MASK], "
    "10 % a random token and 10 % stay unchanged", mask_share=1.0)
RANDOM_OF_REST = _mask_mistake(
    "the random replacement drew 10 % of the tokens left after [MASK], which is 10 % of 20 % = 2 % of the "
    "chosen: the 20 % left are split in half", random_share=0.1)
NO_RANDOM = _mask_mistake(
    "no random replacements: 10 % of the chosen tokens become a random token from the vocabulary",
    random_share=0.0)
NO_KEPT = _mask_mistake(
    "every chosen token that did not become [MASK] got a random token: half of those 20 % must stay "
    "unchanged (10 % of the chosen)", random_share=1.0)
OVERLAP = Mistake(
    "the [MASK] and random draws overlap (both taken from all the chosen tokens, the random one written "
    "last), so fewer than 80 % end as [MASK]: the random 10 % are drawn only among the chosen tokens that "
    "were not masked, which are 20 % of the chosen, so half of them",
    lambda *args, **kwargs: _overlap_variant(*args, **kwargs))
RANDOM_FROM_INPUT = _mask_mistake(
    "the random tokens were drawn from the masked tokens (or the sentence's own ids), not uniformly from the "
    "whole vocabulary (`torch.randint` up to `vocab_size`)", random_from_input=True)
NARROW_VOCAB = Mistake(
    "the random tokens do not cover the whole vocabulary 0 .. vocab_size - 1: every id of the vocabulary "
    "must be equally likely", lambda *args, **kwargs: _mask_variant(*args, **kwargs, vocab_high=100))
GENERATOR_IGNORED = Mistake(
    "ignored `generator`: every random draw (torch.rand, torch.bernoulli, torch.randint) must come from the "
    "`generator` argument, so that the same seeded generator gives the same masking",
    lambda *args, generator=None, **kwargs: _mask_variant(*args, **kwargs))
OWN_GENERATOR = Mistake(
    "the masking is the same whatever generator is passed in (a generator or seed of your own?): draw from "
    "the `generator` argument", lambda *args, generator=None, **kwargs: _mask_variant(
        *args, **kwargs, generator=torch.Generator().manual_seed(0)))

MASK_MISTAKES = [IN_PLACE, LABELS_REPLACED, LABELS_EVERYWHERE, LABELS_INVERTED, KEPT_UNLABELLED, SPECIAL_CHOSEN,
                 UNCHOSEN_REPLACED, P_IGNORED, ALL_MASK, RANDOM_OF_REST, NO_RANDOM, NO_KEPT, OVERLAP,
                 RANDOM_FROM_INPUT, NARROW_VOCAB, GENERATOR_IGNORED, OWN_GENERATOR]


def _overlap_variant(input_ids, special_tokens_mask, mask_token_id, vocab_size, mlm_probability=0.15,
                     generator=None):
    ids, original = input_ids.clone(), input_ids.clone()
    chosen = (torch.rand(ids.shape, generator=generator) < mlm_probability) & ~special_tokens_mask
    masked = chosen & (torch.rand(ids.shape, generator=generator) < 0.8)
    randomised = chosen & (torch.rand(ids.shape, generator=generator) < 0.1)
    ids[masked] = mask_token_id
    ids[randomised] = torch.randint(vocab_size, ids.shape, generator=generator)[randomised]
    labels = original.masked_fill(~chosen, IGNORE)
    return ids, labels


def masked_batch(g, batch: int, length: int, vocab_size: int, id_range: tuple, specials: dict,
                 padded: bool = True) -> tuple:
    """``(input_ids, special_tokens_mask)`` ``(batch, length)``: [CLS] sentence [SEP] [PAD]..., the
    sentence's ids drawn from ``id_range`` (a narrow part of the vocabulary, so that random replacements
    stand out), real lengths between a quarter and all of ``length`` when ``padded``."""
    low, high = id_range
    ids = torch.randint(low, high, (batch, length), generator=g)
    lengths = (torch.randint(length // 4, length + 1, (batch,), generator=g) if padded
               else torch.full((batch,), length))
    position = torch.arange(length)[None, :]  # (1, T)
    ids = torch.where(position >= lengths[:, None], specials["pad"], ids)
    ids[:, 0] = specials["cls"]
    ids[torch.arange(batch), lengths - 1] = specials["sep"]
    special = (ids == specials["pad"]) | (ids == specials["cls"]) | (ids == specials["sep"])
    assert vocab_size > high
    return ids, special


BERT_SPECIALS = {"pad": 0, "cls": 101, "sep": 102, "mask": 103}
SMALL_SPECIALS = {"pad": 0, "cls": 1, "sep": 2, "mask": 3}


def mask_tokens_cases() -> list:
    g = torch.Generator().manual_seed(40)
    small = masked_batch(g, 168, 256, 1000, (200, 400), SMALL_SPECIALS)
    bert = masked_batch(g, 256, 272, 30522, (1000, 3000), BERT_SPECIALS)
    unpadded = masked_batch(g, 96, 300, 5000, (2000, 2600), SMALL_SPECIALS, padded=False)
    return [
        MaskCase("168 padded sequences of 256 tokens (ids 200-399), vocab_size 1,000, default p = 0.15, "
                 "seeded generator", (*small, SMALL_SPECIALS["mask"], 1000), seed=41),
        MaskCase("256 padded sequences of 272 tokens, BERT's vocab_size 30,522 and [MASK] = 103, "
                 "mlm_probability=0.3", (*bert, BERT_SPECIALS["mask"], 30522), {"mlm_probability": 0.3}, seed=42),
        MaskCase("96 unpadded sequences of 300 tokens, vocab_size 5,000, mlm_probability=0.15, generator=None "
                 "(the global random stream)", (*unpadded, SMALL_SPECIALS["mask"], 5000),
                 {"mlm_probability": 0.15}, seed=None),
    ]


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def _mask_stats(case: Case, inputs: np.ndarray, labels: np.ndarray) -> dict:
    """The shares the judge compares with BERT's rule."""
    original, special = case.args[0].numpy(), case.args[1].numpy()
    mask_id, vocab_size = case.args[2], case.args[3]
    chosen = labels != IGNORE
    changed = inputs != original
    normal = ~special
    n_chosen = max(int((chosen & normal).sum()), 1)
    on_chosen = chosen & normal
    randomised = on_chosen & changed & (inputs != mask_id)
    random_ids = inputs[randomised]
    in_sentence = np.isin(random_ids, np.unique(original[normal]))
    return {
        "rate": float(on_chosen.sum() / max(normal.sum(), 1)),
        "mask": float((on_chosen & (inputs == mask_id)).sum() / n_chosen),
        "random": float(randomised.sum() / n_chosen),
        "kept": float((on_chosen & ~changed).sum() / n_chosen),
        "special_chosen": int((chosen & special).sum()),
        "unchosen_changed": int((~chosen & changed).sum()),
        "labels_not_original": int((chosen & (labels != original)).sum()),
        "labels_replaced": int((chosen & (labels != original) & (labels == inputs)).sum()),
        "n_random": int(randomised.sum()),
        "random_in_sentence": float(in_sentence.mean()) if len(random_ids) else 0.0,
        "random_out_of_range": int(((random_ids < 0) | (random_ids >= vocab_size)).sum()),
        "random_mean": float(random_ids.mean() / vocab_size) if len(random_ids) else 0.5,
        "vocab_size": vocab_size,
    }


def _check_mask_output(case: Case, out):
    """(inputs, labels) arrays, or a Problem about the returned value's form."""
    original = case.args[0]
    shape = tuple(original.shape)
    if isinstance(out, TensorData):
        return Problem(f"returned one tensor {out.shape}; return the pair (inputs, labels)")
    if not isinstance(out, (tuple, list)) or len(out) != 2 or not all(isinstance(x, TensorData) for x in out):
        return Problem(f"return the pair (inputs, labels) of tensors; got {describe(out)}")
    inputs, labels = out
    for name, value in (("inputs", inputs), ("labels", labels)):
        if value.shape != shape:
            return Problem(f"{name} has shape {value.shape}; expected {shape}, the shape of input_ids")
        if not np.issubdtype(value.array.dtype, np.integer):
            return Problem(f"{name} has dtype {value.dtype}; token ids and labels are integers (torch.long)")
    if (inputs.array == IGNORE).any() and not (labels.array == IGNORE).any():
        return Problem("the first tensor holds -100s and the second none: return (inputs, labels) in that order")
    return inputs.array, labels.array


def _split_mistake(s: dict):
    """The named mistake that the shares of [MASK] / random / unchanged match, if any."""
    near = {k: abs(s[k] - v) <= SPLIT_TOL for k, v in SPLIT.items()}
    if s["mask"] > 1 - SPLIT_TOL:
        return ALL_MASK
    if near["mask"] and s["random"] < 0.05 and s["kept"] > 0.15:
        return RANDOM_OF_REST if s["random"] > 0.005 else NO_RANDOM
    if near["mask"] and s["kept"] < 0.05:
        return NO_KEPT
    if s["mask"] < SPLIT["mask"] - SPLIT_TOL and near["random"] and s["kept"] > SPLIT["kept"] + SPLIT_TOL:
        return OVERLAP
    return None


def judge_mask_tokens(case: Case, out, observations: dict):
    checked = _check_mask_output(case, out)
    if isinstance(checked, Problem):
        return checked
    inputs, labels = checked
    s = _mask_stats(case, inputs, labels)
    p = case.kwargs.get("mlm_probability", 0.15)
    if 0 in observations.get("modified_inputs", []):
        what = " (and the labels hold the replaced tokens)" if s["labels_replaced"] else ""
        return Problem(f"input_ids was modified in place{what}.", IN_PLACE.description)
    if s["rate"] > 1 - RATE_TOL:
        return Problem(f"{_pct(s['rate'])} of the non-special tokens have a label (not -100); expected about "
                       f"{_pct(p)}.", LABELS_EVERYWHERE.description)
    if s["unchosen_changed"] and abs(s["rate"] - (1 - p)) <= 3 * RATE_TOL:
        return Problem(f"{_pct(s['rate'])} of the tokens have a label, and the replaced tokens have -100.",
                       LABELS_INVERTED.description)
    if s["unchosen_changed"]:
        return Problem(f"{s['unchosen_changed']} tokens with label -100 (not chosen) were changed.",
                       UNCHOSEN_REPLACED.description)
    if s["special_chosen"]:
        return Problem(f"{s['special_chosen']} special tokens were chosen (have a label).",
                       SPECIAL_CHOSEN.description)
    if s["labels_not_original"]:
        mistake = LABELS_REPLACED.description if s["labels_replaced"] else None
        return Problem(f"{s['labels_not_original']} labels of chosen tokens differ from the original ids.", mistake)
    problems, mistake = [], None
    if abs(s["rate"] - p) > RATE_TOL:
        problems.append(f"{_pct(s['rate'])} of the non-special tokens were chosen (have a label); expected "
                        f"p = {_pct(p)} (+- {100 * RATE_TOL:.0f} point).")
        if p != 0.15 and abs(s["rate"] - 0.15) <= RATE_TOL:
            mistake = P_IGNORED.description
        elif abs(s["rate"] - 0.9 * p) <= RATE_TOL and s["kept"] < 0.01:
            mistake = KEPT_UNLABELLED.description
    if any(abs(s[k] - v) > SPLIT_TOL for k, v in SPLIT.items()):
        problems.append(f"of the chosen tokens, {_pct(s['mask'])} became [MASK], {_pct(s['random'])} a random "
                        f"token and {_pct(s['kept'])} stayed unchanged; expected 80 / 10 / 10 % "
                        f"(+- {100 * SPLIT_TOL:.0f} points each).")
        if mistake is None:
            split = _split_mistake(s)
            if s["kept"] < 0.01 and abs(s["rate"] - 0.9 * p) <= RATE_TOL:
                split = KEPT_UNLABELLED
            mistake = split.description if split else None
    if s["random_out_of_range"]:
        problems.append(f"{s['random_out_of_range']} random tokens are outside 0 .. vocab_size - 1.")
        mistake = mistake or NARROW_VOCAB.description
    elif s["n_random"] >= 50:
        if s["random_in_sentence"] > 0.6:
            problems.append(f"{_pct(s['random_in_sentence'])} of the random tokens are ids that occur in the input; "
                            f"drawn from the whole vocabulary, few would.")
            mistake = mistake or RANDOM_FROM_INPUT.description
        elif abs(s["random_mean"] - 0.5) > 0.1:
            problems.append(f"the random tokens average {s['random_mean']:.2f} x vocab_size; drawn uniformly from "
                            f"0 .. vocab_size - 1 they would average about 0.5 x vocab_size.")
            mistake = mistake or NARROW_VOCAB.description
    if observations.get("same_seed_same_output") is False:
        problems.append("called twice with generators seeded alike, it masked differently.")
        mistake = mistake or GENERATOR_IGNORED.description
    elif observations.get("other_seed_other_output") is False:
        problems.append("called with generators seeded differently, it masked exactly the same tokens.")
        mistake = mistake or OWN_GENERATOR.description
    return Problem("\n".join(problems), mistake) if problems else None


def explain_mask_tokens_error(case: Case, outcome) -> str | None:
    message = outcome.message
    if "expected a bool" in message.lower() or "must be a bool" in message.lower() or "boolean" in message.lower():
        return "special_tokens_mask is a boolean tensor (True = special): combine masks with &, | and ~"
    if "generator" in message:
        return ("`generator` is a torch.Generator (or None): torch.rand, torch.bernoulli and torch.randint take "
                "it as their `generator` keyword")
    if "shape mismatch" in message or "must match" in message:
        return ("a boolean mask selects as many values as it has True entries: assign one value to all of them, "
                "or select the new values with the same mask from a tensor of the full shape")
    return None


register(Exercise(
    name="mask_tokens", chapter="04",
    signature="(input_ids, special_tokens_mask, mask_token_id, vocab_size, mlm_probability=0.15, generator=None)",
    points=3, make_cases=mask_tokens_cases, judge=judge_mask_tokens, explain_error=explain_mask_tokens_error,
    forbidden=(MLM_COLLATOR,),
))


# ================================================================ the tiny classifier of evaluate and train_epoch

TINY_VOCAB, TINY_DIM, TINY_LABELS = 40, 8, 3


@dataclass
class TinyOutput:
    """What the tiny classifier returns, like Hugging Face's ``SequenceClassifierOutput``."""

    loss: torch.Tensor | None
    logits: torch.Tensor

    def __getitem__(self, key):
        """``out["loss"]`` and ``out[0]`` work too, as on Hugging Face's outputs (None fields are skipped)."""
        if isinstance(key, str):
            return getattr(self, key)
        return tuple(v for v in (self.loss, self.logits) if v is not None)[key]


class TinyClassifier(nn.Module):
    """A sequence classifier called like a Hugging Face model: ``model(input_ids=..., attention_mask=...,
    labels=...)`` returns ``.loss`` (mean cross-entropy) and ``.logits`` ``(B, num_labels)``.
    An embedding, the mean over the real tokens, a linear layer; no dropout, so every forward pass is
    deterministic. It records, for every forward pass, its mode (train/eval) and whether gradients were on."""

    def __init__(self, vocab_size=TINY_VOCAB, dim=TINY_DIM, num_labels=TINY_LABELS):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim)
        self.head = nn.Linear(dim, num_labels)
        self.passes: list[tuple[bool, bool]] = []  # (self.training, gradients on) per forward pass

    @property
    def device(self):
        return self.head.weight.device

    def forward(self, input_ids=None, attention_mask=None, labels=None, token_type_ids=None, **kwargs):
        self.passes.append((self.training, torch.is_grad_enabled()))
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        mask = attention_mask[..., None].to(self.embed.weight.dtype)  # (B, T, 1)
        pooled = (self.embed(input_ids) * mask).sum(1) / mask.sum(1)  # (B, D)
        logits = self.head(pooled)  # (B, num_labels)
        loss = None if labels is None else F.cross_entropy(logits, labels)
        return TinyOutput(loss, logits)


class RecordingSGD(torch.optim.SGD):
    """Plain SGD that records, at every ``step()``, the weights before the update, their gradients and the
    learning rate."""

    def __init__(self, params, lr):
        super().__init__(params, lr=lr)
        self.records: list[tuple] = []

    def step(self, closure=None):
        params = [p for group in self.param_groups for p in group["params"]]
        self.records.append(([p.detach().clone() for p in params],
                             [None if p.grad is None else p.grad.detach().clone() for p in params],
                             self.param_groups[0]["lr"]))
        return super().step(closure)


class LinearDecay:
    """Learning-rate factor 1 - step / n_steps (as a callable class, so nothing here is a lambda)."""

    def __init__(self, n_steps: int):
        self.n_steps = n_steps

    def __call__(self, step: int) -> float:
        return max(0.0, 1.0 - step / self.n_steps)


class CountingScheduler(torch.optim.lr_scheduler.LambdaLR):
    """A LambdaLR that counts the learner's ``step()`` calls (not the one its constructor makes)."""

    def __init__(self, optimizer, lr_lambda):
        super().__init__(optimizer, lr_lambda)
        self.calls = 0

    def step(self, *args, **kwargs):
        self.calls = getattr(self, "calls", 0) + 1
        return super().step(*args, **kwargs)


class BatchStream:
    """An iterable of batches without ``len()`` that can be iterated once, like a generator."""

    def __init__(self, batches):
        self._batches = list(batches)
        self._used = False

    def __iter__(self):
        batches, self._used = ([] if self._used else self._batches), True
        return iter(batches)


def tiny_batches(g, sizes, length: int, vocab_size: int = TINY_VOCAB, num_labels: int = TINY_LABELS) -> list[dict]:
    """Batches ``{"input_ids", "attention_mask", "labels"}`` of the given sizes, padded to ``length``."""
    batches = []
    for size in sizes:
        ids = torch.randint(1, vocab_size, (size, length), generator=g)
        lengths = torch.randint(2, length + 1, (size,), generator=g)
        mask = (torch.arange(length)[None, :] < lengths[:, None]).long()  # (B, T)
        batches.append({"input_ids": ids * mask, "attention_mask": mask,
                        "labels": torch.randint(num_labels, (size,), generator=g)})
    return batches


# ================================================================ evaluate

CRASHED = "crashed"  # ... and when it crashed on its own count of zero instead (ZeroDivisionError, NameError)


def _call_on_no_batches(fn, args, empty: bool):
    """``fn(*args)``; on a case without batches, the ValueError of the rule (or the crash of a loop that divides
    by its own count) comes back as a plain value for the judge."""
    if not empty:
        return fn(*args)
    try:
        return fn(*args)
    except ValueError as err:
        return (RAISED, str(err)[:200])
    except (ZeroDivisionError, NameError) as err:  # total / count with count 0; the loop's variable never bound
        return (CRASHED, f"{type(err).__name__}: {str(err)[:160]}")


@dataclass
class EvalCase(Case):
    """One ``evaluate`` call on a tiny classifier built here from ``seed``, handed over in train mode when
    ``training``, else in eval mode; batches of ``sizes`` examples (padded to ``length``), as a one-pass
    stream when ``stream``. It reports the mode and gradient mode of every forward pass and the mode after."""

    sizes: tuple = (8, 8)
    length: int = 6
    training: bool = True
    stream: bool = False
    seed: int = 0

    def setup(self) -> tuple:
        """(model, batches), the same every time (the judge rebuilds them to compute the expected values)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            model = TinyClassifier()
        batches = tiny_batches(torch.Generator().manual_seed(self.seed + 1), self.sizes, self.length)
        return model, batches

    def run(self, fn):
        model, batches = self.setup()
        model.train(self.training)
        given = BatchStream(batches) if self.stream else list(batches)
        value = _call_on_no_batches(fn, (model, given), empty=not self.sizes)
        return value, {"passes": list(model.passes), "training_at_end": model.training}


def evaluate_cases() -> list:
    return [
        EvalCase("2 batches of 8, the model handed over in train mode", (), sizes=(8, 8), seed=50),
        EvalCase("3 batches of 9, 2 and 5 examples (uneven: a mean over examples, not over batches), the model in "
                 "eval mode", (), sizes=(9, 2, 5), training=False, length=8, seed=51),
        EvalCase("4 batches (7, 7, 7, 3) given as a one-pass stream (like a generator: no len()), train mode", (),
                 sizes=(7, 7, 7, 3), stream=True, seed=52),
        EvalCase("a single batch of 1 example, eval mode", (), sizes=(1,), training=False, seed=53),
        EvalCase("no batches at all (an empty list): ValueError", (), sizes=(), seed=54),
    ]


def _evaluation_facts(case: EvalCase) -> dict:
    """Per batch: the mean loss, the number right, the mean probability of the right class; and the sizes."""
    model, batches = case.setup()
    model.eval()
    facts = {"losses": [], "right": [], "right_probability": [], "sizes": []}
    with torch.no_grad():
        for batch in batches:
            out = model(**batch)
            labels = batch["labels"]
            facts["losses"].append(out.loss.item())
            facts["right"].append(int((out.logits.argmax(-1) == labels).sum()))
            facts["right_probability"].append(out.logits.softmax(-1).gather(-1, labels[:, None]).mean().item())
            facts["sizes"].append(len(labels))
    return facts


EVAL_EMPTY = ("no batches at all must raise ValueError: there is no mean over zero examples, and a nan or a 0 "
              "would pass unnoticed into a learning curve; check the count after the loop, as the loop "
              "cannot know in advance that the iterable is empty")
EVAL_UNWEIGHTED = ("averaged the batches' means: a batch of 2 examples then counts as much as one of 9; the loss "
                   "and the accuracy are means over the examples, so weight each batch's mean loss by its size "
                   "and count the right predictions")
EVAL_NOT_RESTORED = ("the model was handed over in train mode and left in eval mode: remember `model.training` "
                     "before switching and put the model back in the mode it came in (the next training step "
                     "would run without dropout)")
EVAL_FORCED_TRAIN = ("the model was handed over in eval mode and left in train mode: restore the mode it came in "
                     "rather than always switching to train mode (an evaluation changes nothing about the model)")
EVAL_NEVER_EVAL = ("the forward passes ran in train mode: switch to eval mode (`model.eval()`) for the evaluation, "
                   "or dropout makes the scores noisy and lower than the model's")
EVAL_GRAD = ("the forward passes built a graph for backpropagation: run them under `torch.no_grad()` (or "
             "`torch.inference_mode()`); an evaluation needs no gradients and the graph costs memory")
EVAL_ACC_COUNT = "the accuracy is the number of right predictions, not the fraction: divide by the examples"
EVAL_MEAN_PROBABILITY = ("averaged the probability of the right class instead of counting argmax hits: a "
                         "prediction is the class with the largest logit, and it is right or wrong")
EVAL_LOSS_SUM = "the loss is a sum over the batches or examples, not the mean per example"
EVAL_LAST = "only the last batch counted: add up over every batch"
EVAL_BATCH_COUNT = "`examples` counts the batches: it is the number of examples (the labels) evaluated"
EVAL_TENSOR = ("returned tensors: return Python numbers (`.item()` on a one-element tensor), so that the results "
               "hold no graph or device memory and print plainly")


def _value_problem(name: str, value, expected: float, candidates: list):
    """What is wrong with ``value`` (text, mistake), or None when it equals ``expected``."""
    number = _number(value)
    inside = number if number is not None else _scalar_tensor(value)
    if inside is None:
        return (f"'{name}' should be a Python number; got {describe(value)}.", None)

    def near(a, b):
        return math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-6)

    if near(inside, expected):
        return None if number is not None else (f"'{name}' is right ({inside:.5f}) but {describe(value)}.",
                                                EVAL_TENSOR)
    text = f"'{name}' is {inside:.5f}; expected {expected:.5f}."
    return (text, next((m for candidate, m in candidates if not near(candidate, expected) and near(inside, candidate)),
                       None))


def judge_evaluate(case: EvalCase, out, observations: dict):
    if not case.sizes:
        if raised(out):
            return None
        if isinstance(out, tuple) and out and out[0] == CRASHED:
            return Problem(f"with no batches it crashed ({out[1]}) instead of raising ValueError.", EVAL_EMPTY)
        return Problem(f"with no batches it returned {describe(out)} instead of raising ValueError.", EVAL_EMPTY)
    if not isinstance(out, dict):
        return f"return a dict with the keys 'loss', 'accuracy' and 'examples'; got {describe(out)}"
    missing = [k for k in ("loss", "accuracy", "examples") if k not in out]
    if missing:
        return f"the dict has no {', '.join(repr(k) for k in missing)}: return 'loss', 'accuracy' and 'examples'"
    f = _evaluation_facts(case)
    n, sizes = sum(f["sizes"]), f["sizes"]
    losses = f["losses"]
    weighted = sum(loss * size for loss, size in zip(losses, sizes))
    loss_candidates = [(sum(losses) / len(losses), EVAL_UNWEIGHTED), (sum(losses), EVAL_LOSS_SUM),
                       (weighted, EVAL_LOSS_SUM), (losses[-1], EVAL_LAST)]
    accuracy = sum(f["right"]) / n
    accuracy_candidates = [(sum(r / s for r, s in zip(f["right"], sizes)) / len(sizes), EVAL_UNWEIGHTED),
                           (float(sum(f["right"])), EVAL_ACC_COUNT),
                           (sum(p * s for p, s in zip(f["right_probability"], sizes)) / n, EVAL_MEAN_PROBABILITY),
                           (sum(f["right_probability"]) / len(sizes), EVAL_MEAN_PROBABILITY),
                           (f["right"][-1] / sizes[-1], EVAL_LAST)]
    problems = [p for p in (_value_problem("loss", out["loss"], weighted / n, loss_candidates),
                            _value_problem("accuracy", out["accuracy"], accuracy, accuracy_candidates)) if p]
    examples = out["examples"]
    if isinstance(examples, bool) or not isinstance(examples, int):
        problems.append((f"'examples' should be an int; got {describe(examples)}.", None))
    elif examples != n:
        problems.append((f"'examples' is {examples}; {len(sizes)} batches hold {n} examples.",
                         EVAL_BATCH_COUNT if examples == len(sizes) else None))
    passes = observations["passes"]
    if any(training for training, _ in passes):
        problems.append((f"{sum(t for t, _ in passes)} of the {len(passes)} forward passes ran in train mode.",
                         EVAL_NEVER_EVAL))
    if any(grad for _, grad in passes):
        problems.append((f"{sum(g for _, g in passes)} of the {len(passes)} forward passes ran with gradients on.",
                         EVAL_GRAD))
    if observations["training_at_end"] != case.training:
        before, after = ("train", "eval") if case.training else ("eval", "train")
        problems.append((f"the model came in {before} mode and was left in {after} mode.",
                         EVAL_NOT_RESTORED if case.training else EVAL_FORCED_TRAIN))
    if not problems:
        return None
    return Problem("\n".join(text for text, _ in problems), next((m for _, m in problems if m), None))


def explain_evaluate_error(case: Case, outcome) -> str | None:
    message = outcome.message
    if "has no len()" in message:
        return ("`batches` may be any iterable (a DataLoader, a generator) without len(): count the batches and "
                "examples in the loop")
    if "not subscriptable" in message:
        return "`batches` may be any iterable: loop over it once, do not index it"
    if "unexpected keyword" in message:
        return "pass the batch's tensors by name, as a Hugging Face model takes them"
    if "must match the size" in message:
        return "take the argmax over the classes (the last dim): one prediction per example, shaped like the labels"
    return None


register(Exercise(
    name="evaluate", chapter="04", signature="(model, batches)", points=3,
    make_cases=evaluate_cases, judge=judge_evaluate, explain_error=explain_evaluate_error, pure=False,
    forbidden=(PREDICT, HELDOUT_ACCURACY),
))



# ================================================================ train_epoch

def _flat(tensors) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def _grad_status(observed, fresh, accumulated) -> str:
    """How the gradient at one optimizer step relates to that batch's own gradient."""
    if observed is None or not observed.abs().sum():
        return "none"

    def cosine(a, b):
        return float(a @ b / (a.norm() * b.norm() + 1e-30))

    if cosine(observed, fresh) > 1 - 1e-5:
        ratio = float(observed.norm() / fresh.norm())
        return "fresh" if abs(ratio - 1) < 1e-3 else ("clipped" if ratio < 1 else "scaled up")
    if cosine(observed, accumulated) > 1 - 1e-5 and abs(float(observed.norm() / accumulated.norm()) - 1) < 1e-3:
        return "accumulated"
    return "other"


@dataclass
class EpochCase(Case):
    """One ``train_epoch`` call on a tiny model built here from ``seed``: batches of ``sizes`` examples
    (padded to ``length``), SGD at ``lr``, a linearly decaying scheduler when ``scheduler``, the batches as
    a one-pass stream when ``stream``. The model is handed over in eval mode."""

    sizes: tuple = (8, 8, 8)
    length: int = 6
    lr: float = 0.5
    scheduler: bool = False
    stream: bool = False
    seed: int = 0

    def run(self, fn):
        g = torch.Generator().manual_seed(self.seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            model = TinyClassifier()
        batches = tiny_batches(g, self.sizes, self.length)
        model.eval()  # as after an evaluation: train_epoch must switch to training mode
        optimizer = RecordingSGD(model.parameters(), lr=self.lr)
        scheduler = CountingScheduler(optimizer, LinearDecay(len(batches))) if self.scheduler else None
        given = BatchStream(batches) if self.stream else list(batches)
        args = (model, given, optimizer) + ((scheduler,) if scheduler is not None else ())
        value = _call_on_no_batches(fn, args, empty=not self.sizes)
        return value, self._observe(model, batches, optimizer, scheduler)

    def _observe(self, model, batches, optimizer, scheduler) -> dict:
        """Recompute each batch's loss and gradient at the weights its optimizer step saw."""
        final = [p.detach().clone() for p in model.parameters()]
        with torch.random.fork_rng(devices=[]):
            reference = TinyClassifier()  # its weights are overwritten below
        statuses, losses, accumulated = [], [], None
        for k, batch in enumerate(batches):
            weights = optimizer.records[k][0] if k < len(optimizer.records) else final
            with torch.no_grad():
                for p, w in zip(reference.parameters(), weights):
                    p.copy_(w)
            reference.zero_grad(set_to_none=True)
            loss = reference(**batch).loss
            loss.backward()
            losses.append(loss.item())
            fresh = _flat(p.grad for p in reference.parameters())
            accumulated = fresh if accumulated is None else accumulated + fresh
            if k < len(optimizer.records):
                grads = optimizer.records[k][1]
                observed = None if any(gr is None for gr in grads) else _flat(grads)
                statuses.append(_grad_status(observed, fresh, accumulated))
        n = len(batches)
        return {
            "n_batches": n,
            "batch_sizes": [len(b["labels"]) for b in batches],
            "steps": len(optimizer.records),
            "grad_status": statuses,
            "lrs": [r[2] for r in optimizer.records],
            "expected_lrs": [self.lr * (LinearDecay(n)(k) if self.scheduler else 1.0) for k in range(n)],
            "scheduler_steps": None if scheduler is None else scheduler.calls,
            "forward_modes": [training for training, grad in model.passes if grad],  # the training passes
            "train_mode_at_end": model.training,
            "batch_losses": losses,
        }


def train_epoch_cases() -> list:
    return [
        EpochCase("3 batches of 8, SGD, no scheduler; the model is given in eval mode", (), sizes=(8, 8, 8), seed=44),
        EpochCase("5 batches (the last one of 3), SGD with a linearly decaying LambdaLR scheduler", (),
                  sizes=(6, 6, 6, 6, 3), scheduler=True, lr=0.8, seed=45),
        EpochCase("4 batches given as a one-pass stream (like a generator: no len()), with a scheduler", (),
                  sizes=(5, 5, 5, 5), scheduler=True, stream=True, seed=46),
        EpochCase("a single batch of 10, no scheduler", (), sizes=(10,), seed=47),
        EpochCase("no batches at all (an empty list), no scheduler: ValueError", (), sizes=(), seed=48),
    ]


STEP_ONCE = "optimizer.step called once per epoch (after the loop): step once per batch, inside the loop"
NO_STEP = "optimizer.step never called: after loss.backward, call optimizer.step for every batch"
ZERO_GRAD_FORGOTTEN = ("optimizer.zero_grad forgotten: gradients accumulate across batches, so each step "
                       "also applies every earlier batch's gradient; call optimizer.zero_grad once per batch")
ZERO_BEFORE_STEP = ("optimizer.zero_grad between loss.backward and optimizer.step: the step sees no "
                    "gradient; zero the gradients before the backward pass or after the step")
STEP_BEFORE_BACKWARD = ("optimizer.step before loss.backward: each step applies the previous batch's "
                        "gradient; the order is forward, loss.backward, optimizer.step")
SCHEDULER_ONCE = ("the scheduler stepped once per epoch: with a per-step schedule (warm-up, linear decay) "
                  "call scheduler.step after every optimizer.step")
SCHEDULER_NEVER = "the scheduler was given but never stepped: call scheduler.step after every optimizer.step"
SCHEDULER_FIRST = ("scheduler.step before optimizer.step: the first batch never uses the initial learning "
                   "rate; step the optimizer first, then the scheduler")
EVAL_MODE = ("the model stayed in eval mode while training: call model.train() at the start (the model may "
             "come from an evaluation; dropout must be on while fine-tuning)")
LEFT_IN_EVAL = ("the model left in eval mode at the end: train_epoch must leave it in train mode (an "
                "evaluation switches to eval mode itself, and puts back the mode it was given)")
LAST_LOSS = "returned the last batch's loss, not the mean over the epoch"
FIRST_LOSS = "returned the first batch's loss, not the mean over the epoch"
SUM_LOSS = "returned the sum of the batch losses: divide by the number of batches"
LOSS_TENSOR = ("returned a tensor: add up the batch losses as Python floats (`.item()`); adding up the loss "
               "tensors also keeps every batch's graph in memory")
EPOCH_EMPTY = ("no batches at all must raise ValueError: an epoch over nothing is a bug upstream (a generator "
               "already used up by the previous epoch, an empty data set), and a nan or a 0 returned as its loss "
               "would hide it; check the count after the loop, as the loop cannot know in advance")


def _loss_problem(value, observations: dict):
    """What is wrong with the returned mean loss (text, mistake), or None."""
    losses = observations["batch_losses"]
    sizes = observations["batch_sizes"]
    means = [sum(losses) / len(losses), sum(l * n for l, n in zip(losses, sizes)) / sum(sizes)]
    number = _number(value)
    inside = number if number is not None else _scalar_tensor(value)
    if inside is None:
        return (f"return the mean loss as a Python float; got {describe(value)}", None)

    def near(a, b):
        return math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-6)

    if not any(near(inside, m) for m in means):
        text = f"returned {inside:.5f}; the mean of the batch losses is {means[0]:.5f}"
        if len(losses) > 1 and near(inside, losses[-1]):
            return (text, LAST_LOSS)
        if len(losses) > 1 and near(inside, losses[0]):
            return (text, FIRST_LOSS)
        if len(losses) > 1 and near(inside, sum(losses)):
            return (text, SUM_LOSS)
        return (text, None)
    if number is None:
        return (f"the mean loss is right ({inside:.5f}) but it is {describe(value)}", LOSS_TENSOR)
    return None


def judge_train_epoch(case: Case, out, observations: dict):
    o = observations
    n = o["n_batches"]
    if not n:
        if raised(out):
            return None
        if isinstance(out, tuple) and out and out[0] == CRASHED:
            return Problem(f"with no batches it crashed ({out[1]}) instead of raising ValueError.", EPOCH_EMPTY)
        return Problem(f"with no batches it returned {describe(out)} instead of raising ValueError.", EPOCH_EMPTY)
    problems: list[tuple[str, str | None]] = []
    if o["steps"] == 0:
        hint = " (a one-pass stream: iterate over `batches` once only)" if getattr(case, "stream", False) else ""
        problems.append((f"optimizer.step was never called over {n} batches{hint}.", NO_STEP))
    elif o["steps"] != n:
        mistake = STEP_ONCE if o["steps"] == 1 else None
        problems.append((f"optimizer.step was called {o['steps']} times for {n} batches; expected once per batch.",
                         mistake))
    statuses = o["grad_status"]
    wrong = [k for k, s in enumerate(statuses) if s not in ("fresh", "clipped")]
    if wrong and o["steps"]:
        k = wrong[0]
        if all(s == "none" for s in statuses):
            problems.append(("every optimizer.step saw zero (or no) gradients.", ZERO_BEFORE_STEP))
        elif statuses[0] == "none":
            problems.append(("the first optimizer.step saw no gradient, later ones the wrong one.",
                             STEP_BEFORE_BACKWARD))
        elif any(statuses[j] == "accumulated" for j in wrong):
            problems.append((f"the gradient at step {k + 1} was the sum of the gradients of batches 1 to {k + 1}.",
                             ZERO_GRAD_FORGOTTEN))
        else:
            problems.append((f"the gradient at step {k + 1} was not batch {k + 1}'s gradient ({statuses[k]}).", None))
    if o["scheduler_steps"] is not None and o["steps"]:
        calls = o["scheduler_steps"]
        if calls == 0:
            problems.append((f"scheduler.step was never called over {n} batches.", SCHEDULER_NEVER))
        elif calls != n:
            problems.append((f"scheduler.step was called {calls} times for {n} batches; expected once per batch.",
                             SCHEDULER_ONCE if calls == 1 and n > 1 else None))
        elif not all(math.isclose(a, b, rel_tol=1e-6) for a, b in zip(o["lrs"], o["expected_lrs"])):
            lrs = ", ".join(f"{x:.3g}" for x in o["lrs"])
            expected = ", ".join(f"{x:.3g}" for x in o["expected_lrs"])
            shifted = all(math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-12)
                          for a, b in zip(o["lrs"], o["expected_lrs"][1:] + [0.0]))
            problems.append((f"the optimizer steps used learning rates {lrs}; expected {expected}.",
                             SCHEDULER_FIRST if shifted else None))
    modes = o["forward_modes"]
    if modes and not all(modes):
        problems.append((f"{modes.count(False)} of the {len(modes)} training forward passes ran in eval mode.",
                         EVAL_MODE))
    elif not o["train_mode_at_end"]:
        problems.append(("after the call the model is in eval mode (model.training is False).", LEFT_IN_EVAL))
    if o["steps"] == n and not wrong:
        loss = _loss_problem(out, o)
        if loss:
            problems.append(loss)
    if not problems:
        return None
    mistake = next((m for _, m in problems if m), None)
    return Problem("\n".join(text for text, _ in problems), mistake)


def explain_train_epoch_error(case: Case, outcome) -> str | None:
    message = outcome.message
    if "'NoneType' object has no attribute 'step'" in message:
        return "the scheduler is optional (None by default): step it only when one is given"
    if "has no len()" in message:
        return ("`batches` may be any iterable (a DataLoader, a generator) without len(): count the batches "
                "in the loop instead")
    if "not subscriptable" in message:
        return "`batches` may be any iterable: loop over it once, do not index it"
    if "does not require grad" in message:
        return ("loss.backward needs the graph of the forward pass: do not run the training forward pass under "
                "torch.no_grad() (keep that for evaluation)")
    if "backward through the graph a second time" in message:
        return "call loss.backward once per batch, on that batch's own loss"
    if "unexpected keyword" in message:
        return "pass the batch's tensors by name (unpack the dict), as a Hugging Face model takes them"
    return None


register(Exercise(
    name="train_epoch", chapter="04", signature="(model, batches, optimizer, scheduler=None)", points=3,
    make_cases=train_epoch_cases, judge=judge_train_epoch, explain_error=explain_train_epoch_error, pure=False,
    forbidden=(FIT,),
    timeout_s=60,  # the first optimizer a process builds imports torch._dynamo (several seconds)
))
