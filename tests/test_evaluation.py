"""Tests for llmcourse.evaluation, the BIG-bench harness of lesson 09.

Most tests use a tiny random Llama model with the real SmolLM2 tokenizer (fast, and the scoring code
does not care whether the weights are trained); one test runs the shipped model on a question whose
answer it knows. The BIG-bench files ship with the package.
"""

import math
import random
import re

import numpy as np
import pytest
import torch

from llmcourse import evaluation as harness


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from llmcourse.models import CAUSAL_LMS, DEFAULT_CAUSAL_LM, resolve

    return AutoTokenizer.from_pretrained(resolve(None, CAUSAL_LMS, DEFAULT_CAUSAL_LM))


@pytest.fixture(scope="module")
def tiny_model(tokenizer):
    """A 2-layer Llama with SmolLM2's vocabulary and grouped key-value heads, random weights."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096)
    return LlamaForCausalLM(config).eval()


def naive_logprobs(model, tokenizer, prefix_ids, choices_ids):
    """One full pass per choice: the reference the cached scoring must reproduce."""
    totals = []
    with torch.no_grad():
        for ids in choices_ids:
            full = torch.tensor([prefix_ids + ids])
            logprobs = model(full).logits[0].log_softmax(-1)
            totals.append(sum(logprobs[len(prefix_ids) - 1 + j, t].item() for j, t in enumerate(ids)))
    return totals


# ---------------------------------------------------------------- load_task

def test_load_task_samples_with_a_seed_and_holds_out_the_shots():
    task = harness.load_task("emoji_movie", 20, seed=3)
    again = harness.load_task("emoji_movie", 20, seed=3)
    other = harness.load_task("emoji_movie", 20, seed=4)
    assert len(task.items) == 20 and len(task.shots) == harness.MAX_SHOTS and task.n_examples == 100
    assert task.items == again.items and task.shots == again.shots
    assert task.items != other.items
    assert not set(task.items) & set(task.shots)
    assert harness.load_task("emoji_movie", 50, seed=3).items[:20] == task.items  # quick mode is a prefix of full


def test_load_task_reads_the_tasks_own_format():
    chess = harness.load_task("checkmate_in_one", 2)
    assert chess.task_prefix.startswith("In the following chess position")
    assert chess.input_prefix == "\n" and chess.output_prefix == " " and chess.append_choices is False
    emoji = harness.load_task("emoji_movie", 2)
    assert (emoji.input_prefix, emoji.output_prefix) == (harness.INPUT_PREFIX, harness.OUTPUT_PREFIX)
    item = emoji.items[0]
    assert len(item.choices) == len(item.target_scores) == 5 and sum(item.target_scores) == 1
    assert item.target_scores[item.choices.index(item.best_choice)] == 1


def test_chance_is_the_mean_of_one_over_the_number_of_choices():
    task = harness.load_task("checkmate_in_one", 30)
    assert task.chance == pytest.approx(np.mean([1 / len(item.choices) for item in task.items]))


def test_load_task_without_n_takes_every_example_but_the_shots():
    task = harness.load_task("emoji_movie")
    assert len(task.items) == 100 - harness.MAX_SHOTS


# ---------------------------------------------------------------- prompts

def test_bigbench_prompt_lists_every_choice_once_and_ends_with_A():
    task = harness.load_task("emoji_movie", 3)
    item = task.items[1]
    prompt, gap = harness.build_prompt(task, item, 1)
    assert prompt.startswith("\nQ: " + item.input) and prompt.endswith("\nA:") and gap == " "
    listed = re.findall(r"\n  choice: (.*)", prompt)
    assert sorted(listed) == sorted(item.choices)
    assert harness.build_prompt(task, item, 1) == (prompt, gap)  # the order of the listed choices is seeded


def test_no_choices_format_and_tasks_that_do_not_list_choices():
    task = harness.load_task("emoji_movie", 1)
    prompt, _ = harness.build_prompt(task, task.items[0], 0, "no_choices")
    assert "choice:" not in prompt and prompt == "\nQ: " + task.items[0].input + "\nA:"
    chess = harness.load_task("checkmate_in_one", 1)
    prompt, gap = harness.build_prompt(chess, chess.items[0], 0)
    assert "choice:" not in prompt and prompt == "\n" + chess.items[0].input and gap == " "


def test_chat_format_uses_the_template_and_no_gap(tokenizer):
    task = harness.load_task("date_understanding", 1)
    prompt, gap = harness.build_prompt(task, task.items[0], 0, "chat", tokenizer)
    assert gap == "" and prompt.endswith("<|im_start|>assistant\n") and task.items[0].input in prompt
    with pytest.raises(ValueError, match="fmt must be one of"):
        harness.build_prompt(task, task.items[0], 0, "markdown")


def test_shots_text_holds_k_solved_examples():
    task = harness.load_task("emoji_movie", 2)
    text = harness.shots_text(task, 3)
    assert text.count("\nQ: ") == 3 and text.count("\nA: ") == 3
    for shot in task.shots[:3]:
        assert f"\nA: {shot.best_choice}" in text
    assert harness.shots_text(task, 0) == task.task_prefix
    with pytest.raises(ValueError):
        harness.shots_text(task, harness.MAX_SHOTS + 1)
    with pytest.raises(ValueError):
        harness.shots_text(task, 1, "chat")


# ---------------------------------------------------------------- scoring choices

def test_shared_prompt_scores_equal_one_pass_per_choice(tiny_model, tokenizer):
    prompt = "\nQ: What movie does this emoji describe? 🦁👑\nA:"
    choices = ["the lion king", "up", "a very long title with many words in it", "x"]
    fast = harness.choice_logprobs(tiny_model, tokenizer, prompt, choices)
    slow = naive_logprobs(tiny_model, tokenizer, harness.encode(tokenizer, prompt),
                          [harness.encode(tokenizer, " " + c) for c in choices])
    assert fast == pytest.approx(slow, abs=1e-4)


def test_small_batches_give_the_same_scores(tiny_model, tokenizer, monkeypatch):
    prompt = "Q: Which move mates?\nA:"
    choices = [f"Q{f}{r}#" for f in "abcdefgh" for r in "1234"]  # 32 choices
    whole = harness.choice_logprobs(tiny_model, tokenizer, prompt, choices)
    monkeypatch.setattr(harness, "MAX_BATCH_TOKENS", 40)  # a few choices per batch
    assert harness.choice_logprobs(tiny_model, tokenizer, prompt, choices) == pytest.approx(whole, abs=1e-5)


def test_a_cached_context_equals_reading_everything_at_once(tiny_model, tokenizer):
    shots, prompt, choices = "\nQ: 1 plus 1?\nA: 2", "\nQ: 2 plus 2?\nA:", ["4", "22", "four"]
    context = harness.read(tiny_model, harness.encode(tokenizer, shots))
    with_context = harness.choice_logprobs(tiny_model, tokenizer, prompt, choices, " ", context)
    again = harness.choice_logprobs(tiny_model, tokenizer, prompt, choices, " ", context)  # the context is not consumed
    prefix = harness.encode(tokenizer, shots) + harness.encode(tokenizer, prompt)
    slow = naive_logprobs(tiny_model, tokenizer, prefix, [harness.encode(tokenizer, " " + c) for c in choices])
    assert with_context == pytest.approx(slow, abs=1e-4)
    assert again == with_context
    assert context.length == len(harness.encode(tokenizer, shots))


def test_evaluate_multiple_choice_takes_the_first_best_choice(tiny_model, tokenizer):
    task = harness.load_task("emoji_movie", 4)
    for shots in (0, 1):
        run = harness.evaluate_multiple_choice(tiny_model, tokenizer, task, shots=shots, progress=False)
        assert len(run["logprobs"]) == 4 and run["seconds"] > 0
        for logprobs, chosen, earned, item in zip(run["logprobs"], run["chosen"], run["earned"], task.items):
            assert chosen == int(np.argmax(logprobs)) and earned == item.target_scores[chosen]
    zero = harness.evaluate_multiple_choice(tiny_model, tokenizer, task, progress=False)
    one = harness.evaluate_multiple_choice(tiny_model, tokenizer, task, shots=1, progress=False)
    assert all(b > a for a, b in zip(zero["prompt_tokens"], one["prompt_tokens"]))


def test_pick_choices_takes_the_first_highest_score_and_its_target():
    logprobs = [[-2.3, -0.9, -4.1], [-1.2, -1.2, -3.0], [-5.0, -0.4, -0.7, -2.2], [-1.0]]  # a tie; partial credit
    targets = [[0, 1, 0], [0, 1, 0], [0, 0.5, 1, 0], [1]]
    chosen, earned = harness.pick_choices(logprobs, targets)
    assert chosen == [1, 0, 1, 0] and earned == [1.0, 0.0, 0.5, 1.0]
    assert all(type(c) is int for c in chosen) and all(type(e) is float for e in earned)
    rng = np.random.default_rng(0)
    rows = [rng.integers(-3, 1, size=int(rng.integers(1, 6))).astype(float).tolist() for _ in range(200)]  # ties
    targets = [rng.random(len(row)).tolist() for row in rows]
    chosen, earned = harness.pick_choices(rows, targets)
    assert chosen == [int(np.argmax(row)) for row in rows]
    assert earned == [t[c] for t, c in zip(targets, chosen)]


def test_the_task_prefix_is_read_before_every_item(tiny_model, tokenizer):
    task = harness.load_task("checkmate_in_one", 1)
    task.items = [harness.Item("1. e4 e5 2. Qh5 Nc6 3. Bc4 Nf6", ("Qxf7#", "Qxe5+"), (1.0, 0.0), ("Qxf7#",))]
    run = harness.evaluate_multiple_choice(tiny_model, tokenizer, task, progress=False)
    prompt, gap = harness.build_prompt(task, task.items[0], 0)
    prefix = harness.encode(tokenizer, task.task_prefix) + harness.encode(tokenizer, prompt)
    choices = [harness.encode(tokenizer, gap + c) for c in task.items[0].choices]
    slow = naive_logprobs(tiny_model, tokenizer, prefix, choices)
    assert run["logprobs"][0] == pytest.approx(slow, abs=1e-4)


def test_cached_multiple_choice_reuses_its_result(tiny_model, tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("LLMCOURSE_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("LLMCOURSE_RETRAIN", raising=False)
    task = harness.load_task("emoji_movie", 2)
    first = harness.cached_multiple_choice(tiny_model, tokenizer, task, progress=False)
    second = harness.cached_multiple_choice(tiny_model, tokenizer, task, progress=False)
    assert second == first and list(tmp_path.glob("runs/bigbench-emoji_movie-*.pt"))


# ---------------------------------------------------------------- aggregate

def test_wilson_interval_matches_the_formula():
    low, high = harness.wilson_interval(5, 10)
    assert (low, high) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    low, high = harness.wilson_interval(0, 20)
    assert low == 0 and high == pytest.approx(0.1611, abs=1e-4)


def test_chance_scores_average_to_the_baseline():
    targets = [[1, 0, 0, 0]] * 30 + [[0, 1]] * 10
    guessers = harness.chance_scores(targets, n_simulations=40_000)
    assert guessers.mean() == pytest.approx((30 * 0.25 + 10 * 0.5) / 40, abs=2e-3)


def test_summarise_verdicts():
    targets = [[1.0, 0.0, 0.0, 0.0]] * 40
    perfect = harness.summarise([1.0] * 40, targets)
    assert perfect["verdict"] == "above chance" and perfect["p_value"] < 1e-3 and perfect["chance"] == 0.25
    guessing = harness.summarise([1.0] * 10 + [0.0] * 30, targets)
    assert guessing["verdict"] == "at chance" and guessing["chance_low"] < 0.25 < guessing["chance_high"]
    assert guessing["low"] < 0.25 < guessing["high"] and guessing["p_value"] > 0.3
    never = harness.summarise([0.0] * 40, targets)
    assert never["verdict"] == "below chance"
    partial = harness.summarise([0.5, 1.0, 0.0, 0.5], [[0.5, 1.0, 0.0]] * 4)
    assert partial["score"] == 0.5 and partial["low"] < 0.5 < partial["high"]


def test_normalised_score():
    assert harness.normalised_score(0.25, 0.25) == 0 and harness.normalised_score(1.0, 0.25) == 100
    assert harness.normalised_score(0.0, 0.5) == -100


# ---------------------------------------------------------------- free-form answers

def test_cut_at_stop_and_first_integer():
    assert harness.cut_at_stop(" 83.\n\nQ: What is 1 plus 1?") == " 83."
    assert harness.cut_at_stop(" 83.\nQ: next") == " 83."
    assert harness.cut_at_stop("no stop") == "no stop"
    assert harness.first_integer(" The answer is 109.") == "109"
    assert harness.first_integer("-12 or 4") == "-12" and harness.first_integer("none") is None


def test_final_integers_reads_the_integer_after_the_last_answer_phrase():
    texts = ["80 + 20 = 100 and 100 + 9 = 109. The answer is 109.", "the answer is -3\nTHE ANSWER IS  +7",
             "The answer is", "no phrase 12", "The answer is 5. Then the answer is x.", "The answer is\n8"]
    assert harness.final_integers(texts) == [109, 7, None, None, None, None]
    assert harness.final_integers([]) == []


@pytest.mark.parametrize("op", ["plus", "minus", "times"])
def test_arithmetic_reasoning_is_right(op):
    rng = random.Random(op)
    for _ in range(50):
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        reasoning, answer = harness.arithmetic_reasoning(f"What is {a} {op} {b}?")
        assert answer == {"plus": a + b, "minus": a - b, "times": a * b}[op]
        for x, sign, y, z in re.findall(r"(-?\d+) ([-+*]) (\d+) = (-?\d+)", reasoning):
            assert {"+": int(x) + int(y), "-": int(x) - int(y), "*": int(x) * int(y)}[sign] == int(z), reasoning
        assert reasoning.endswith(f"= {answer}.")


def test_arithmetic_exemplars_come_from_the_held_out_shots():
    task = harness.load_task("arithmetic/2_digit_addition", 3)
    exemplars = harness.arithmetic_exemplars(task)
    assert [q for q, _, _ in exemplars] == [shot.input for shot in task.shots]
    assert all(str(answer) == shot.targets[0] for (_, _, answer), shot in zip(exemplars, task.shots))


def test_generate_returns_cut_strings(tiny_model, tokenizer):
    texts = harness.generate(tiny_model, tokenizer, ["Q: What is 2 plus 2?\nA:", "Hello"], max_new_tokens=5,
                             progress=False)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    assert not any(stop in t for t in texts for stop in harness.STOP_STRINGS)
    assert tokenizer.padding_side == "right"  # restored


def test_mean_token_logprob_is_a_per_token_average(tiny_model, tokenizer):
    value = harness.mean_token_logprob(tiny_model, tokenizer, "canary GUID ", "26b5c67b")
    ids = harness.encode(tokenizer, "26b5c67b")
    total = naive_logprobs(tiny_model, tokenizer, harness.encode(tokenizer, "canary GUID "), [ids])[0]
    assert value == pytest.approx(total / len(ids), abs=1e-5) and value < 0


# ---------------------------------------------------------------- the shipped model

def test_the_shipped_model_knows_the_capital_of_france():
    from llmcourse.models import load_causal_lm

    tokenizer, model = load_causal_lm()
    scores = harness.choice_logprobs(model, tokenizer, "Q: What is the capital of France?\nA:",
                                   ["Berlin", "Paris", "Madrid", "Rome"])
    assert int(np.argmax(scores)) == 1 and all(math.isfinite(s) for s in scores)


def test_published_numbers_are_consistent():
    assert all(cot > standard for standard, cot in harness.WEI_2022_GSM8K.values())
    assert all(0 < won <= total for won, total, *_ in harness.TASK_SHARES)
