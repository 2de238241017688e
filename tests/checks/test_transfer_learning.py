"""Tests for the chapter-04 checks (grader/checks/transfer_learning.py): mask_tokens, evaluate, train_epoch.

What is tested (COURSE.md, "One set of checks, three consumers"):
- every check passes the reference solution (from the solutions notebook) and other correct ways of
  writing the answer (one uniform draw with thresholds, exact counts, NumPy, gradient clipping, ...);
- every check fails a stub with "not implemented yet";
- every check fails common wrong answers, written here the way a learner would write them, and its
  feedback names the mistake; for train_epoch these are side effects (a forgotten zero_grad, a
  scheduler stepped once per epoch, the model left in eval mode), observed by the case;
- the observations survive the trip from a child process (the isolated runner);
- the checks leave the learner's random stream alone and the cases pickle;
- the hidden checks pass the reference and fail a wrong answer without showing the hidden labels.

The wrong answers are deliberately written out by hand, not taken from the grader's own list of
mistakes, so that a mistake the grader models differently from how learners write it shows up here.
"""

import pickle

import nbformat
import pytest
import torch
from chapter_contract import A_LIST, DEFAULT_GARBAGE, ChapterContract, assert_fails_naming, reference_fn

import grader
from grader import check
from grader.checks import transfer_learning as transfer

ASSIGNMENT = "04-transfer-learning"

EXERCISES = ["mask_tokens", "evaluate", "train_epoch"]


# =============================================================== mask_tokens

# ---- correct, written in other ways

def mask_tokens_one_uniform(input_ids, special_tokens_mask, mask_token_id, vocab_size, mlm_probability=0.15,
                            generator=None):
    """One uniform draw decides the fate of a chosen token: < 0.8 mask, < 0.9 random, else keep."""
    chosen = (torch.rand(input_ids.shape, generator=generator) < mlm_probability) & ~special_tokens_mask
    fate = torch.rand(input_ids.shape, generator=generator)
    random_ids = torch.randint(0, vocab_size, input_ids.shape, generator=generator)
    inputs = torch.where(chosen & (fate < 0.8), torch.tensor(mask_token_id), input_ids)
    inputs = torch.where(chosen & (fate >= 0.8) & (fate < 0.9), random_ids, inputs)
    labels = torch.where(chosen, input_ids, torch.tensor(-100))
    return inputs, labels


def mask_tokens_exact_counts(input_ids, special_tokens_mask, mask_token_id, vocab_size, mlm_probability=0.15,
                             generator=None):
    """Exactly round(p * n) chosen tokens, exactly 80 % / 10 % of them masked / randomised."""
    inputs = input_ids.clone()
    labels = torch.full_like(input_ids, -100)
    candidates = (~special_tokens_mask).flatten().nonzero().flatten()
    n = round(mlm_probability * len(candidates))
    chosen = candidates[torch.randperm(len(candidates), generator=generator)[:n]]
    labels.view(-1)[chosen] = input_ids.flatten()[chosen]
    n_mask, n_random = round(0.8 * n), round(0.1 * n)
    inputs.view(-1)[chosen[:n_mask]] = mask_token_id
    inputs.view(-1)[chosen[n_mask:n_mask + n_random]] = torch.randint(vocab_size, (n_random,), generator=generator)
    return inputs, labels


def mask_tokens_hf_style(input_ids, special_tokens_mask, mask_token_id, vocab_size, mlm_probability=0.15,
                         generator=None):
    """As Hugging Face's DataCollatorForLanguageModeling writes it."""
    labels = input_ids.clone()
    inputs = input_ids.clone()
    probability_matrix = torch.full(labels.shape, mlm_probability)
    probability_matrix.masked_fill_(special_tokens_mask, value=0.0)
    masked_indices = torch.bernoulli(probability_matrix, generator=generator).bool()
    labels[~masked_indices] = -100
    indices_replaced = torch.bernoulli(torch.full(labels.shape, 0.8), generator=generator).bool() & masked_indices
    inputs[indices_replaced] = mask_token_id
    indices_random = (torch.bernoulli(torch.full(labels.shape, 0.5), generator=generator).bool()
                      & masked_indices & ~indices_replaced)
    random_words = torch.randint(vocab_size, labels.shape, dtype=torch.long, generator=generator)
    inputs[indices_random] = random_words[indices_random]
    return inputs, labels


# ---- wrong, as learners write them

def _choose(input_ids, special_tokens_mask, p, generator):
    return (torch.rand(input_ids.shape, generator=generator) < p) & ~special_tokens_mask


def mask_tokens_in_place(input_ids, special_tokens_mask, mask_token_id, vocab_size, mlm_probability=0.15,
                         generator=None):
    inputs = input_ids  # no copy
    chosen = _choose(input_ids, special_tokens_mask, mlm_probability, generator)
    labels = input_ids.clone()
    labels[~chosen] = -100
    fate = torch.rand(input_ids.shape, generator=generator)
    inputs[chosen & (fate < 0.8)] = mask_token_id
    random_ids = torch.randint(vocab_size, input_ids.shape, generator=generator)
    inputs[chosen & (fate >= 0.9)] = random_ids[chosen & (fate >= 0.9)]
    return inputs, labels


def mask_tokens_special_too(input_ids, special_tokens_mask, mask_token_id, vocab_size, mlm_probability=0.15,
                            generator=None):
    chosen = torch.rand(input_ids.shape, generator=generator) < mlm_probability  # special tokens not excluded
    fate = torch.rand(input_ids.shape, generator=generator)
    inputs = input_ids.clone()
    inputs[chosen & (fate < 0.8)] = mask_token_id
    random_ids = torch.randint(vocab_size, input_ids.shape, generator=generator)
    inputs[chosen & (fate >= 0.9)] = random_ids[chosen & (fate >= 0.9)]
    return inputs, input_ids.masked_fill(~chosen, -100)


def mask_tokens_all_mask(input_ids, special_tokens_mask, mask_token_id, vocab_size, mlm_probability=0.15,
                         generator=None):
    chosen = _choose(input_ids, special_tokens_mask, mlm_probability, generator)
    return input_ids.masked_fill(chosen, mask_token_id), input_ids.masked_fill(~chosen, -100)


def mask_tokens_labels_everywhere(input_ids, special_tokens_mask, mask_token_id, vocab_size, mlm_probability=0.15,
                                  generator=None):
    inputs, _ = mask_tokens_hf_style(input_ids, special_tokens_mask, mask_token_id, vocab_size, mlm_probability,
                                     generator)
    return inputs, input_ids.clone()  # every position keeps its label


def mask_tokens_random_from_masked(input_ids, special_tokens_mask, mask_token_id, vocab_size, mlm_probability=0.15,
                                   generator=None):
    chosen = _choose(input_ids, special_tokens_mask, mlm_probability, generator)
    fate = torch.rand(input_ids.shape, generator=generator)
    inputs = input_ids.clone()
    inputs[chosen & (fate < 0.8)] = mask_token_id
    randomised = chosen & (fate >= 0.9)
    pool = input_ids[chosen]  # "random" tokens taken from the chosen ones
    inputs[randomised] = pool[torch.randint(len(pool), (int(randomised.sum()),), generator=generator)]
    return inputs, input_ids.masked_fill(~chosen, -100)


def mask_tokens_no_generator(input_ids, special_tokens_mask, mask_token_id, vocab_size, mlm_probability=0.15,
                             generator=None):
    return mask_tokens_one_uniform(input_ids, special_tokens_mask, mask_token_id, vocab_size, mlm_probability)


def mask_tokens_random_ten_percent_of_rest(input_ids, special_tokens_mask, mask_token_id, vocab_size,
                                           mlm_probability=0.15, generator=None):
    inputs, labels = input_ids.clone(), input_ids.clone()
    chosen = torch.bernoulli(torch.full(input_ids.shape, mlm_probability), generator=generator).bool()
    chosen &= ~special_tokens_mask
    labels[~chosen] = -100
    masked = torch.bernoulli(torch.full(input_ids.shape, 0.8), generator=generator).bool() & chosen
    inputs[masked] = mask_token_id
    randomised = torch.bernoulli(torch.full(input_ids.shape, 0.1), generator=generator).bool() & chosen & ~masked
    inputs[randomised] = torch.randint(vocab_size, input_ids.shape, generator=generator)[randomised]
    return inputs, labels


def mask_tokens_fixed_15(input_ids, special_tokens_mask, mask_token_id, vocab_size, mlm_probability=0.15,
                         generator=None):
    return mask_tokens_hf_style(input_ids, special_tokens_mask, mask_token_id, vocab_size, 0.15, generator)


def mask_tokens_labels_after(input_ids, special_tokens_mask, mask_token_id, vocab_size, mlm_probability=0.15,
                             generator=None):
    chosen = _choose(input_ids, special_tokens_mask, mlm_probability, generator)
    fate = torch.rand(input_ids.shape, generator=generator)
    inputs = input_ids.clone()
    inputs[chosen & (fate < 0.8)] = mask_token_id
    inputs[chosen & (fate >= 0.9)] = torch.randint(vocab_size, input_ids.shape, generator=generator)[
        chosen & (fate >= 0.9)]
    labels = inputs.clone()  # copied after the replacements
    labels[~chosen] = -100
    return inputs, labels


def mask_tokens_random_everywhere(input_ids, special_tokens_mask, mask_token_id, vocab_size, mlm_probability=0.15,
                                  generator=None):
    chosen = _choose(input_ids, special_tokens_mask, mlm_probability, generator)
    inputs = input_ids.clone()
    masked = chosen & (torch.rand(input_ids.shape, generator=generator) < 0.8)
    inputs[masked] = mask_token_id
    randomised = (torch.rand(input_ids.shape, generator=generator) < 0.1) & ~masked  # forgot `& chosen`
    inputs[randomised] = torch.randint(vocab_size, input_ids.shape, generator=generator)[randomised]
    return inputs, input_ids.masked_fill(~chosen, -100)


def mask_tokens_labels_only_replaced(input_ids, special_tokens_mask, mask_token_id, vocab_size,
                                     mlm_probability=0.15, generator=None):
    inputs, _ = mask_tokens_hf_style(input_ids, special_tokens_mask, mask_token_id, vocab_size, mlm_probability,
                                     generator)
    return inputs, input_ids.masked_fill(inputs == input_ids, -100)  # the unchanged 10 % lose their label


MASK_CORRECT = [mask_tokens_one_uniform, mask_tokens_exact_counts, mask_tokens_hf_style]

MASK_MISTAKES = [
    pytest.param(mask_tokens_in_place, "changed `input_ids` in place", id="input-changed-in-place"),
    pytest.param(mask_tokens_special_too, "special tokens ([CLS], [SEP], [PAD]) were chosen", id="special-tokens"),
    pytest.param(mask_tokens_all_mask, "100 % [MASK] replacement", id="all-mask"),
    pytest.param(mask_tokens_labels_everywhere, "labels kept at the positions that were not chosen",
                 id="labels-kept-everywhere"),
    pytest.param(mask_tokens_random_from_masked, "drawn from the masked tokens", id="random-from-masked-ids"),
    pytest.param(mask_tokens_no_generator, "ignored `generator`", id="generator-ignored"),
    pytest.param(mask_tokens_random_ten_percent_of_rest, "10 % of 20 % = 2 %", id="random-10-percent-of-rest"),
    pytest.param(mask_tokens_fixed_15, "ignored `mlm_probability`", id="fixed-15-percent"),
    pytest.param(mask_tokens_labels_after, "the labels hold the replaced tokens", id="labels-after-replacing"),
    pytest.param(mask_tokens_random_everywhere, "tokens that were not chosen were replaced",
                 id="random-not-limited-to-chosen"),
    pytest.param(mask_tokens_labels_only_replaced, "labels only where a token was replaced",
                 id="unchanged-tokens-unlabelled"),
]


@pytest.mark.parametrize("fn", MASK_CORRECT, ids=lambda f: f.__name__)
def test_mask_tokens_accepts_other_correct_answers(fn):
    result = check("mask_tokens", fn)
    assert result.passed, result.feedback


@pytest.mark.parametrize("fn, phrase", MASK_MISTAKES)
def test_mask_tokens_names_the_mistake(fn, phrase):
    assert_fails_naming(check("mask_tokens", fn), phrase)


@pytest.mark.parametrize("mistake", transfer.MASK_MISTAKES, ids=lambda m: m.description[:40])
def test_mask_tokens_names_each_of_the_graders_own_mistakes(mistake):
    """The statistical judge recognises the output of every mistake it lists."""
    assert_fails_naming(check("mask_tokens", mistake.make), mistake.description)


def test_mask_tokens_leaves_the_input_unchanged_or_says_so():
    result = check("mask_tokens", mask_tokens_in_place)
    assert "input_ids was modified in place" in result.feedback
    assert "The call also changed `input_ids`" in result.feedback


def test_mask_tokens_tolerances_are_stated_in_the_feedback():
    feedback = check("mask_tokens", mask_tokens_all_mask).feedback
    assert "expected 80 / 10 / 10 % (+- 3 points each)" in feedback


# =============================================================== evaluate

def _no_batches(examples):
    if examples == 0:
        raise ValueError("nothing to evaluate")


# ---- correct

def evaluate_inference_mode(model, batches):
    """torch.inference_mode, the loss computed by hand as a sum, a set_to-mode restore without try/finally."""
    mode = model.training
    model.eval()
    loss_sum, right, n = 0.0, 0, 0
    with torch.inference_mode():
        for batch in batches:
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            loss_sum += torch.nn.functional.cross_entropy(logits, batch["labels"], reduction="sum").item()
            right += int((logits.argmax(1) == batch["labels"]).sum())
            n += batch["labels"].numel()
    model.train(mode)
    _no_batches(n)
    return {"loss": loss_sum / n, "accuracy": right / n, "examples": n}


def evaluate_collect_then_concatenate(model, batches):
    """Collects every batch's logits and labels, then scores them all at once (like llmcourse's predict)."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        outputs = [(model(**batch).logits, batch["labels"]) for batch in batches]
    if was_training:
        model.train()
    if not outputs:
        raise ValueError("no batches")
    logits = torch.cat([o for o, _ in outputs])
    labels = torch.cat([y for _, y in outputs])
    return {"loss": torch.nn.functional.cross_entropy(logits, labels).item(),
            "accuracy": (logits.argmax(-1) == labels).double().mean().item(), "examples": len(labels)}


def evaluate_numpy_counts(model, batches):
    """Weights the batch accuracies by size, in NumPy."""
    import numpy as np

    mode = model.training
    model.eval()
    losses, accuracies, sizes = [], [], []
    with torch.no_grad():
        for batch in batches:
            out = model(**batch)
            losses.append(out.loss.item())
            accuracies.append(float((out.logits.argmax(-1) == batch["labels"]).float().mean()))
            sizes.append(len(batch["labels"]))
    model.train(mode)
    if not sizes:
        raise ValueError("no batches")
    return {"loss": float(np.average(losses, weights=sizes)), "accuracy": float(np.average(accuracies, weights=sizes)),
            "examples": int(sum(sizes))}


# ---- wrong

def _scored(model, batches):
    """(per-batch mean losses, per-batch right counts, per-batch sizes), evaluated the right way."""
    losses, right, sizes = [], [], []
    with torch.no_grad():
        for batch in batches:
            out = model(**batch)
            losses.append(out.loss.item())
            right.append(int((out.logits.argmax(-1) == batch["labels"]).sum()))
            sizes.append(len(batch["labels"]))
    return losses, right, sizes


def _weighted(losses, right, sizes):
    n = sum(sizes)
    _no_batches(n)
    return {"loss": sum(l * s for l, s in zip(losses, sizes)) / n, "accuracy": sum(right) / n, "examples": n}


def evaluate_mean_of_batch_means(model, batches):
    mode = model.training
    model.eval()
    losses, right, sizes = _scored(model, batches)
    model.train(mode)
    _no_batches(len(sizes))
    return {"loss": sum(losses) / len(losses), "accuracy": sum(r / s for r, s in zip(right, sizes)) / len(sizes),
            "examples": sum(sizes)}


def evaluate_always_back_to_train(model, batches):
    model.eval()
    result = _weighted(*_scored(model, batches))
    model.train()
    return result


def evaluate_left_in_eval(model, batches):
    model.eval()
    return _weighted(*_scored(model, batches))


def evaluate_in_train_mode(model, batches):
    return _weighted(*_scored(model, batches))


def evaluate_with_gradients(model, batches):
    mode = model.training
    model.eval()
    losses, right, sizes = [], [], []
    for batch in batches:
        out = model(**batch)
        losses.append(out.loss.item())
        right.append(int((out.logits.argmax(-1) == batch["labels"]).sum()))
        sizes.append(len(batch["labels"]))
    model.train(mode)
    return _weighted(losses, right, sizes)


def evaluate_no_empty_rule(model, batches):
    mode = model.training
    model.eval()
    losses, right, sizes = _scored(model, batches)
    model.train(mode)
    n = sum(sizes)
    return {"loss": sum(l * s for l, s in zip(losses, sizes)) / n, "accuracy": sum(right) / n, "examples": n}


def evaluate_nan_when_empty(model, batches):
    mode = model.training
    model.eval()
    losses, right, sizes = _scored(model, batches)
    model.train(mode)
    if not sizes:
        return {"loss": float("nan"), "accuracy": float("nan"), "examples": 0}
    return _weighted(losses, right, sizes)


def evaluate_count_not_fraction(model, batches):
    mode = model.training
    model.eval()
    losses, right, sizes = _scored(model, batches)
    model.train(mode)
    result = _weighted(losses, right, sizes)
    return {**result, "accuracy": float(sum(right))}


def evaluate_tensors(model, batches):
    mode = model.training
    model.eval()
    loss, right, n = torch.tensor(0.0), torch.tensor(0), 0
    with torch.no_grad():
        for batch in batches:
            out = model(**batch)
            loss = loss + out.loss * len(batch["labels"])
            right = right + (out.logits.argmax(-1) == batch["labels"]).sum()
            n += len(batch["labels"])
    model.train(mode)
    _no_batches(n)
    return {"loss": loss / n, "accuracy": right / n, "examples": n}


def evaluate_mean_probability(model, batches):
    mode = model.training
    model.eval()
    loss, hit, n = 0.0, 0.0, 0
    with torch.no_grad():
        for batch in batches:
            out = model(**batch)
            probabilities = out.logits.softmax(-1)
            hit += probabilities[torch.arange(len(batch["labels"])), batch["labels"]].sum().item()
            loss += out.loss.item() * len(batch["labels"])
            n += len(batch["labels"])
    model.train(mode)
    _no_batches(n)
    return {"loss": loss / n, "accuracy": hit / n, "examples": n}


def evaluate_counts_batches(model, batches):
    mode = model.training
    model.eval()
    losses, right, sizes = _scored(model, batches)
    model.train(mode)
    return {**_weighted(losses, right, sizes), "examples": len(sizes)}


EVAL_CORRECT = [evaluate_inference_mode, evaluate_collect_then_concatenate, evaluate_numpy_counts]

EVAL_MISTAKES = [
    pytest.param(evaluate_mean_of_batch_means, "averaged the batches' means", id="mean-of-batch-means"),
    pytest.param(evaluate_always_back_to_train, "handed over in eval mode and left in train mode", id="forced-train"),
    pytest.param(evaluate_left_in_eval, "handed over in train mode and left in eval mode", id="mode-not-restored"),
    pytest.param(evaluate_in_train_mode, "the forward passes ran in train mode", id="never-eval"),
    pytest.param(evaluate_with_gradients, "built a graph for backpropagation", id="gradients-on"),
    pytest.param(evaluate_no_empty_rule, "no batches at all must raise ValueError", id="empty-divides-by-zero"),
    pytest.param(evaluate_nan_when_empty, "no batches at all must raise ValueError", id="empty-gives-nan"),
    pytest.param(evaluate_count_not_fraction, "the number of right predictions, not the fraction", id="count"),
    pytest.param(evaluate_tensors, "returned tensors", id="tensors"),
    pytest.param(evaluate_mean_probability, "averaged the probability of the right class", id="mean-probability"),
    pytest.param(evaluate_counts_batches, "`examples` counts the batches", id="examples-are-batches"),
]


@pytest.mark.parametrize("fn", EVAL_CORRECT, ids=lambda f: f.__name__)
def test_evaluate_accepts_other_correct_answers(fn):
    result = check("evaluate", fn)
    assert result.passed, result.feedback


@pytest.mark.parametrize("fn, phrase", EVAL_MISTAKES)
def test_evaluate_names_the_mistake(fn, phrase):
    assert_fails_naming(check("evaluate", fn), phrase)


def test_evaluate_refuses_the_lessons_helpers():
    def evaluate(model, batches):
        from llmcourse.finetune import heldout_accuracy, predict

        batches = list(batches)
        logits, labels = predict(model, batches)
        return {"loss": torch.nn.functional.cross_entropy(logits, labels).item(),
                "accuracy": heldout_accuracy(model, batches), "examples": len(labels)}

    result = check("evaluate", evaluate)
    assert not result.passed
    assert "calls `llmcourse.finetune.predict`, which this exercise asks you to build yourself" in result.mistakes


def test_train_epoch_refuses_the_lessons_fit():
    def train_epoch(model, batches, optimizer, scheduler=None):
        from llmcourse.finetune import fit

        return fit(model, list(batches), lr=0.1, eval_batches=[])["loss"][-1]

    result = check("train_epoch", train_epoch)
    assert not result.passed
    assert "calls `llmcourse.finetune.fit`, which this exercise asks you to build yourself" in result.mistakes


# =============================================================== train_epoch

def _epoch_mean(total, n):
    """The rule for no batches, which every answer below but the one that leaves it out follows."""
    if n == 0:
        raise ValueError("no batches")
    return total / n


# ---- correct

def train_epoch_zero_first(model, batches, optimizer, scheduler=None):
    model.train()
    losses = []
    for batch in batches:
        optimizer.zero_grad()
        output = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
        output["loss"].backward()  # indexing works on Hugging Face outputs too
        optimizer.step()
        if scheduler:
            scheduler.step()
        losses.append(output["loss"].item())
    return _epoch_mean(sum(losses), len(losses))


def train_epoch_clipped_weighted(model, batches, optimizer, scheduler=None):
    """Moves batches to the model's device, clips gradients, weights the mean by batch size."""
    model.train()
    total, examples = 0.0, 0
    for batch in batches:
        batch = {k: v.to(model.device) for k, v in batch.items()}
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        model.zero_grad(set_to_none=True)
        n = len(batch["labels"])
        total += loss.item() * n
        examples += n
    return _epoch_mean(total, examples)


def train_epoch_enumerate(model, batches, optimizer, scheduler=None):
    model.train()
    running = 0.0
    step = 0  # stays 0 when there are no batches
    for step, batch in enumerate(batches, start=1):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        loss = torch.nn.functional.cross_entropy(logits, batch["labels"])  # the loss computed by hand
        optimizer.zero_grad(set_to_none=False)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        running += loss.detach().item()
    return _epoch_mean(running, step)


# ---- wrong

def train_epoch_no_zero_grad(model, batches, optimizer, scheduler=None):
    model.train()
    total, n = 0.0, 0
    for batch in batches:
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total += loss.item()
        n += 1
    return _epoch_mean(total, n)


def train_epoch_scheduler_per_epoch(model, batches, optimizer, scheduler=None):
    model.train()
    total, n = 0.0, 0
    for batch in batches:
        optimizer.zero_grad()
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        total += loss.item()
        n += 1
    if scheduler is not None:
        scheduler.step()
    return _epoch_mean(total, n)


def train_epoch_ends_in_eval(model, batches, optimizer, scheduler=None):
    model.train()
    total, n = 0.0, 0
    for batch in batches:
        optimizer.zero_grad()
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total += loss.item()
        n += 1
    model.eval()
    return _epoch_mean(total, n)


def train_epoch_never_train_mode(model, batches, optimizer, scheduler=None):
    total, n = 0.0, 0
    for batch in batches:
        optimizer.zero_grad()
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total += loss.item()
        n += 1
    return _epoch_mean(total, n)


def train_epoch_last_loss(model, batches, optimizer, scheduler=None):
    model.train()
    for batch in batches:
        optimizer.zero_grad()
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
    return loss.item()


def train_epoch_tensor_loss(model, batches, optimizer, scheduler=None):
    model.train()
    total, n = 0, 0
    for batch in batches:
        optimizer.zero_grad()
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total = total + loss
        n += 1
    return _epoch_mean(total, n)


def train_epoch_zero_before_step(model, batches, optimizer, scheduler=None):
    model.train()
    total, n = 0.0, 0
    for batch in batches:
        loss = model(**batch).loss
        loss.backward()
        optimizer.zero_grad()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total += loss.item()
        n += 1
    return _epoch_mean(total, n)


def train_epoch_scheduler_first(model, batches, optimizer, scheduler=None):
    model.train()
    total, n = 0.0, 0
    for batch in batches:
        optimizer.zero_grad()
        loss = model(**batch).loss
        loss.backward()
        if scheduler is not None:
            scheduler.step()
        optimizer.step()
        total += loss.item()
        n += 1
    return _epoch_mean(total, n)


def train_epoch_len_of_batches(model, batches, optimizer, scheduler=None):
    model.train()
    total = 0.0
    for batch in batches:
        optimizer.zero_grad()
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total += loss.item()
    return total / len(batches)


def train_epoch_scheduler_always(model, batches, optimizer, scheduler=None):
    model.train()
    total, n = 0.0, 0
    for batch in batches:
        optimizer.zero_grad()
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        scheduler.step()
        total += loss.item()
        n += 1
    return _epoch_mean(total, n)


def train_epoch_under_no_grad(model, batches, optimizer, scheduler=None):
    model.train()
    total, n = 0.0, 0
    with torch.no_grad():
        for batch in batches:
            optimizer.zero_grad()
            loss = model(**batch).loss
            loss.backward()
            optimizer.step()
            total += loss.item()
            n += 1
    return _epoch_mean(total, n)


def train_epoch_no_empty_rule(model, batches, optimizer, scheduler=None):
    model.train()
    total, n = 0.0, 0
    for batch in batches:
        optimizer.zero_grad()
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total += loss.item()
        n += 1
    return total / n


def train_epoch_nan_when_empty(model, batches, optimizer, scheduler=None):
    model.train()
    losses = []
    for batch in batches:
        optimizer.zero_grad()
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        losses.append(loss.item())
    return float(torch.tensor(losses).mean())  # nan for no batches


EPOCH_CORRECT = [train_epoch_zero_first, train_epoch_clipped_weighted, train_epoch_enumerate]

EPOCH_MISTAKES = [
    pytest.param(train_epoch_no_zero_grad, "optimizer.zero_grad forgotten", id="zero-grad-forgotten"),
    pytest.param(train_epoch_scheduler_per_epoch, "the scheduler stepped once per epoch", id="scheduler-per-epoch"),
    pytest.param(train_epoch_ends_in_eval, "the model left in eval mode", id="left-in-eval-mode"),
    pytest.param(train_epoch_never_train_mode, "call model.train() at the start", id="never-model-train"),
    pytest.param(train_epoch_last_loss, "returned the last batch's loss", id="last-loss"),
    pytest.param(train_epoch_tensor_loss, "returned a tensor", id="loss-tensors-added-up"),
    pytest.param(train_epoch_zero_before_step, "between loss.backward and optimizer.step",
                 id="zero-grad-before-step"),
    pytest.param(train_epoch_scheduler_first, "scheduler.step before optimizer.step", id="scheduler-first"),
    pytest.param(train_epoch_len_of_batches, "count the batches in the loop", id="len-of-a-stream"),
    pytest.param(train_epoch_scheduler_always, "the scheduler is optional", id="scheduler-none"),
    pytest.param(train_epoch_under_no_grad, "do not run the training forward pass under torch.no_grad()",
                 id="under-no-grad"),
    pytest.param(train_epoch_no_empty_rule, "no batches at all must raise ValueError", id="empty-divides-by-zero"),
    pytest.param(train_epoch_nan_when_empty, "no batches at all must raise ValueError", id="empty-gives-nan"),
]


@pytest.mark.parametrize("fn", EPOCH_CORRECT, ids=lambda f: f.__name__)
def test_train_epoch_accepts_other_correct_answers(fn):
    result = check("train_epoch", fn)
    assert result.passed, result.feedback


@pytest.mark.filterwarnings("ignore:Detected call of:UserWarning")  # the scheduler-first mistake
@pytest.mark.parametrize("fn, phrase", EPOCH_MISTAKES)
def test_train_epoch_names_the_mistake(fn, phrase):
    assert_fails_naming(check("train_epoch", fn), phrase)


def test_train_epoch_accepts_any_model_called_like_hugging_face():
    """The tiny model of the check takes the batch by name and answers .loss and .logits, like BERT."""
    model = transfer.TinyClassifier()
    batch = transfer.tiny_batches(torch.Generator().manual_seed(0), (4,), 5)[0]
    out = model(**batch)
    assert out.loss.shape == () and out.logits.shape == (4, transfer.TINY_LABELS)
    assert out["loss"] is out.loss and out[0] is out.loss and out[1] is out.logits
    assert model(input_ids=batch["input_ids"])[0] is not None  # logits only, as without labels
    assert model.device == torch.device("cpu")


# =============================================================== the API around the checks

@pytest.mark.parametrize("fn", [mask_tokens_hf_style, mask_tokens_no_generator], ids=["seeded", "global-stream"])
def test_mask_tokens_check_leaves_the_learners_random_stream_alone(fn):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    check("mask_tokens", fn)
    assert torch.equal(torch.rand(3), expected)


def test_train_epoch_check_leaves_the_learners_random_stream_alone(reference):
    torch.manual_seed(321)
    expected = torch.rand(3)
    torch.manual_seed(321)
    check("train_epoch", reference_fn(reference, "train_epoch"))
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("name", EXERCISES)
def test_cases_pickle(name):
    """Cases are built in the grading process and may be sent to a child process."""
    cases = grader.get_exercise(name).make_cases()
    assert [c.label for c in pickle.loads(pickle.dumps(cases))] == [c.label for c in cases]


def test_observations_survive_the_isolated_runner(tmp_path, reference):
    """In a child process (as when grading untrusted submissions) the side effects still decide."""
    from grader.isolated import check_notebook

    source = ("import torch\n\n"
              "def train_epoch(model, batches, optimizer, scheduler=None):\n"
              "    model.train()\n    total, n = 0.0, 0\n    for batch in batches:\n"
              "        loss = model(**batch).loss\n        loss.backward()\n        optimizer.step()\n"
              "        if scheduler is not None:\n            scheduler.step()\n"
              "        total += loss.item()\n        n += 1\n    return total / n\n")  # no zero_grad
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)])
    path = tmp_path / "submission.ipynb"
    nbformat.write(nb, path)
    (result,) = check_notebook(path, ["train_epoch"])
    assert_fails_naming(result, "optimizer.zero_grad forgotten")


# =============================================================== hidden checks

HIDDEN_WRONG = {
    "mask_tokens": mask_tokens_all_mask,
    "evaluate": evaluate_mean_of_batch_means,
    "train_epoch": train_epoch_no_zero_grad,
}


# =============================================================== the chapter contract (tests/chapter_contract.py)

class TestChapterContract(ChapterContract):
    ASSIGNMENT = ASSIGNMENT
    EXERCISES = EXERCISES

    NAMED_MISTAKES = [
        pytest.param("mask_tokens", mask_tokens_all_mask, id="mask-all"),
        pytest.param("mask_tokens", mask_tokens_special_too, id="mask-special"),
        pytest.param("mask_tokens", mask_tokens_in_place, id="mask-in-place"),
        pytest.param("mask_tokens", mask_tokens_labels_everywhere, id="mask-labels-everywhere"),
        pytest.param("evaluate", evaluate_mean_of_batch_means, id="evaluate-mean-of-batch-means"),
        pytest.param("evaluate", evaluate_always_back_to_train, id="evaluate-forced-train"),
        pytest.param("evaluate", evaluate_with_gradients, id="evaluate-gradients-on"),
        pytest.param("evaluate", evaluate_no_empty_rule, id="evaluate-empty"),
        pytest.param("train_epoch", train_epoch_no_zero_grad, id="epoch-no-zero-grad"),
        pytest.param("train_epoch", train_epoch_ends_in_eval, id="epoch-ends-in-eval"),
        pytest.param("train_epoch", train_epoch_last_loss, id="epoch-last-loss"),
        pytest.param("train_epoch", train_epoch_scheduler_per_epoch, id="epoch-scheduler-per-epoch"),
        pytest.param("train_epoch", train_epoch_no_empty_rule, id="epoch-empty"),
    ]
    ALL_OR_NOTHING = [
        ("mask_tokens", mask_tokens_one_uniform, mask_tokens_all_mask),
        ("evaluate", evaluate_inference_mode, evaluate_mean_of_batch_means),
        ("train_epoch", train_epoch_zero_first, train_epoch_no_zero_grad),
    ]
    GARBAGE = DEFAULT_GARBAGE + [A_LIST]
    # train_epoch is judged by what it does to the model and optimizer: garbage returned fails on those
    # ("optimizer.step() never called"), not on its type
    GARBAGE_EXERCISES = ["mask_tokens", "evaluate"]

    def hidden_wrong(self, exercise, reference):
        return HIDDEN_WRONG[exercise]
