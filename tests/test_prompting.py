"""Tests for llmcourse/prompting.py, lesson 05's helpers: prompt layouts, shot draws, reading labels,
generation with a reused prefix cache (the same answers as without), timing, and the figures.

The model is a tiny random Llama (fast, deterministic) with SmolLM2's real tokenizer and chat template.
"""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from llmcourse import prompting as P  # noqa: E402


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from llmcourse.models import CAUSAL_LMS, DEFAULT_CAUSAL_LM, resolve

    return AutoTokenizer.from_pretrained(resolve(None, CAUSAL_LMS, DEFAULT_CAUSAL_LM))


@pytest.fixture(scope="module")
def tiny_model(tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.eos_token_id)
    return LlamaForCausalLM(config).eval()


class FakeDataset(dict):
    """What draw_shots reads of a datasets.Dataset: columns by name, rows by index."""

    def __getitem__(self, key):
        if isinstance(key, int):
            return {"text": dict.__getitem__(self, "text")[key], "label": dict.__getitem__(self, "label")[key]}
        return dict.__getitem__(self, key)


TRAIN = FakeDataset(text=[f"sentence {i}" for i in range(20)], label=[i % 2 for i in range(20)])


# ---------------------------------------------------------------- prompt layouts

def test_review_format_layout():
    fmt = P.PromptFormat("r")
    shots = [("great fun", 1), ("a bore", 0)]
    assert fmt.render(shots, "so so") == ("Review: great fun\nSentiment: positive\n\nReview: a bore\nSentiment: "
                                          "negative\n\nReview: so so\nSentiment:")
    assert fmt.render([], "so so") == "Review: so so\nSentiment:"
    assert fmt.prefix([]) == ""


def test_instruction_and_separator():
    fmt = P.PromptFormat("i", instruction="Classify.", separator="\n")
    assert fmt.render([("ok", 1)], "q") == "Classify.\nReview: ok\nSentiment: positive\nReview: q\nSentiment:"
    assert fmt.render([], "q") == "Classify.\nReview: q\nSentiment:"


@pytest.mark.parametrize("n_shots", [0, 1, 3])
def test_input_output_format_ends_where_the_label_begins(n_shots):
    """The lesson's Input/Output format, in which exercise 05's payoff classifies by likelihood: blocks joined by a
    blank line, ending with "Output:" and nothing after it (the label brings its own leading space)."""
    fmt = P.PromptFormat("io", input_prefix="Input: ", output_prefix="Output:")
    shots = [("a", 0), ("b", 1), ("c", 1)][:n_shots]
    blocks = [f"Input: {text}\nOutput: {P.SENTIMENT_LABELS[y]}" for text, y in shots] + ["Input: query\nOutput:"]
    assert fmt.render(shots, "query") == "\n\n".join(blocks)


def test_draw_shots_is_balanced_and_repeatable():
    shots = P.draw_shots(TRAIN, 4, seed=1)
    assert len(shots) == 4 and sorted(y for _, y in shots) == [0, 0, 1, 1]
    assert shots == P.draw_shots(TRAIN, 4, seed=1)
    assert shots != P.draw_shots(TRAIN, 4, seed=2)
    assert P.draw_shots(TRAIN, 0, seed=1) == []
    odd = P.draw_shots(TRAIN, 3, seed=5)
    assert len(odd) == 3 and sorted(y for _, y in odd) in ([0, 0, 1], [0, 1, 1])
    assert len({text for text, _ in P.draw_shots(TRAIN, 8, seed=0)}) == 8


@pytest.mark.parametrize("text, expected", [(" positive\n\n", 1), (" Negative.", 0), ("positive, clearly", 1),
                                            (" neutral", None), ("", None), ("  ", None), (" posi", None),
                                            (" 1", None)])
def test_read_label(text, expected):
    assert P.read_label(text, P.SENTIMENT_LABELS) == expected


def test_repeated_ngram_share():
    assert P.repeated_ngram_share([1, 2, 3, 1, 2, 3]) == pytest.approx(0.25)
    assert P.repeated_ngram_share([1, 2, 3, 4]) == 0.0
    assert P.repeated_ngram_share([7, 7, 7, 7, 7], n=2) == pytest.approx(0.75)
    assert P.repeated_ngram_share([1]) == 0.0


def test_few_shot_run_counts_unreadable_answers_as_wrong():
    run = P.FewShotRun("f", 2, 0, predictions=[1, None, 0, 0], answers=["", "", "", ""], labels=[1, 1, 0, 1],
                       seconds=2.0)
    assert run.share_right == 0.5 and run.unreadable == 1 and run.seconds_per_example == 0.5


# ---------------------------------------------------------------- generation

def test_encode_adds_no_special_tokens(tokenizer):
    ids = P.encode(tokenizer, "Hello there")
    assert ids.shape[0] == 1 and ids.dtype == torch.long
    assert ids[0].tolist() == tokenizer.encode("Hello there", add_special_tokens=False)


def test_prefix_cache_gives_the_answers_of_the_whole_prompt(tiny_model, tokenizer):
    fmt = P.PromptFormat("r")
    shots = [("a fine film", 1), ("awful", 0), ("too long", 0)]
    prefix_ids, cache = P.prefix_cache(tiny_model, tokenizer, fmt.prefix(shots))
    for text in ["great fun", "dull and long, very long"]:
        whole = P.encode(tokenizer, fmt.render(shots, text))
        joined = torch.cat([prefix_ids, P.encode(tokenizer, fmt.separator + fmt.query(text))], dim=1)
        assert torch.equal(whole, joined)  # the pieces tokenize like the whole prompt
        plain = P.generate_ids(tiny_model, tokenizer, whole, 4, do_sample=False)
        cached = P.generate_ids(tiny_model, tokenizer, joined, 4, cache=cache, do_sample=False)
        assert torch.equal(plain, cached)
    empty_ids, no_cache = P.prefix_cache(tiny_model, tokenizer, "")
    assert empty_ids.shape == (1, 0) and no_cache is None


def test_classify_by_generation_matches_generating_from_each_prompt(tiny_model, tokenizer):
    fmt = P.PromptFormat("io", input_prefix="Input: ", output_prefix="Output:")
    shots, texts, labels = [("good", 1), ("bad", 0)], ["fine", "terrible", "ok then"], [1, 0, 1]
    run = P.classify_by_generation(tiny_model, tokenizer, fmt, shots, texts, labels, max_new_tokens=3)
    for text, answer in zip(texts, run.answers):
        assert answer == P.continue_text(tiny_model, tokenizer, fmt.render(shots, text), max_new_tokens=3)
    assert run.predictions == [P.read_label(a, fmt.labels) for a in run.answers]
    assert run.k == 2 and len(run.prompt_tokens) == 3 and run.seconds > 0


def test_zero_shot_without_instruction_has_no_prefix(tiny_model, tokenizer):
    run = P.classify_by_generation(tiny_model, tokenizer, P.PromptFormat("r"), [], ["fine"], [1], max_new_tokens=2)
    assert run.answers[0] == P.continue_text(tiny_model, tokenizer, "Review: fine\nSentiment:", max_new_tokens=2)


def test_shots_sweep_runs_one_zero_shot_and_n_draws_of_the_others(tiny_model, tokenizer):
    runs = P.shots_sweep(tiny_model, tokenizer, P.PromptFormat("r"), TRAIN, ["a", "b"], [0, 1], [0, 1, 2],
                         n_draws=2, max_new_tokens=1)
    assert [r.k for r in runs] == [0, 1, 1, 2, 2]
    assert len({r.seed for r in runs}) == 5
    table = P.accuracy_table(runs)
    assert sorted(table) == [0, 1, 2] and len(table[0]) == 1 and len(table[2]) == 2


def test_time_generation_with_and_without_cache(tiny_model, tokenizer):
    ids = P.encode(tokenizer, "Once upon a time")
    with_cache = P.time_generation(tiny_model, ids, 6, True, tokenizer.eos_token_id)
    without = P.time_generation(tiny_model, ids, 6, False, tokenizer.eos_token_id)
    assert len(with_cache["tokens"]) == 6 and torch.equal(with_cache["tokens"], without["tokens"])
    assert with_cache["tokens_per_second"] == pytest.approx(6 / with_cache["seconds"])


def test_chat_uses_the_chat_template(tiny_model, tokenizer, monkeypatch):
    seen = {}
    original = P.generate_ids

    def spy(model, tok, input_ids, max_new_tokens, **kwargs):
        seen["text"] = tok.decode(input_ids[0])
        return original(model, tok, input_ids, max_new_tokens, **kwargs)

    monkeypatch.setattr(P, "generate_ids", spy)
    answer = P.chat(tiny_model, tokenizer, "Hello?", max_new_tokens=3, system="Be brief.")
    assert isinstance(answer, str)
    assert "<|im_start|>system\nBe brief.<|im_end|>" in seen["text"]
    assert seen["text"].endswith("<|im_start|>user\nHello?<|im_end|>\n<|im_start|>assistant\n")


# ---------------------------------------------------------------- figures

def test_next_token_bars():
    ax = P.plot_next_token_bars([" Paris", " the"], [0.7, 0.1], "after x")
    assert ax.get_title() == "after x" and ax.get_xlabel()
    plt.close("all")
    with pytest.raises(ValueError):
        P.plot_next_token_bars(["a"], [0.5, 0.5], "t")


def test_accuracy_plot():
    table = {0: np.array([0.5]), 1: np.array([0.55, 0.6]), 4: np.array([0.7, 0.65])}
    ax = P.plot_accuracy_vs_shots(table, {"random guess": 0.5, "majority label": 0.52}, "title")
    assert ax.get_xlabel() and ax.get_ylabel() == "accuracy"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "1", "4"]
    assert len(ax.get_legend().get_texts()) == 3
    plt.close("all")
