"""Lesson 11's helpers (llmcourse/instruct.py): the SFT data, the DPO pairs, the bootstrap interval, the KL of a
peft model from its reference, the forbidden helpers, and the committed beta sweep (tests/test_notebooks.py holds
the lesson's own quick run against it)."""

from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch

from llmcourse import bbq, instruct

ROOT = Path(__file__).resolve().parents[1]
LESSON = ROOT / "notebooks" / "11-instruction-tuning.ipynb"


def test_the_sft_data_is_chapter_05s_zero_shot_prompt_with_one_label_word():
    data = instruct.sft_dataset(16)
    assert len(data) == 16
    for row in data:
        assert row["prompt"].startswith("Review: ") and row["prompt"].endswith("\nSentiment:")
        assert row["completion"] in (" positive", " negative")
    assert {row["completion"] for row in data} == {" positive", " negative"}
    texts, labels = instruct.sentiment_test(60)
    assert len(texts) == 60 and set(labels) == {0, 1}


def test_the_dpo_pairs_mix_the_three_kinds_from_the_given_items():
    items, _ = bbq.load_items()
    train, held_out = bbq.split_by_template(items)
    pairs = instruct.dpo_pairs(train, 40)
    assert len(pairs) == 40 and instruct.dpo_pairs(train, 40) == pairs  # fixed by the seed
    assert {i.template for i, _, _ in pairs} <= {i.template for i in train}
    ambiguous = [(i, g, b) for i, g, b in pairs if i.ambiguous]
    assert len(ambiguous) == 20 and all((g, b) == (i.unknown, i.stereotyped) for i, g, b in ambiguous)
    rest = [(i, g, b) for i, g, b in pairs if not i.ambiguous]
    assert all(g == i.label for i, g, _ in rest)
    assert sum(b == i.unknown for i, _, b in rest) == 10 and sum(b == i.other for i, _, b in rest) == 10
    chosen = instruct.evaluation_items(held_out, 128, 64)
    assert sum(i.ambiguous for i in chosen) == 128 and sum(not i.ambiguous for i in chosen) == 64
    assert {i.template for i in chosen} <= {i.template for i in held_out}
    kl_items = instruct.kl_items(chosen, 8)
    assert [i.ambiguous for i in kl_items] == [True] * 4 + [False] * 4


def test_the_reward_pairs_hold_the_three_kinds_equally_often():
    items, _ = bbq.load_items()
    train, _ = bbq.split_by_template(items)
    pairs = instruct.reward_pairs(train)
    assert len(pairs) == len(instruct.all_pairs(train)) and instruct.reward_pairs(train) == pairs
    counts = {kind: sum(instruct.pair_kind(p) == kind for p in pairs) for kind in instruct.PAIR_KINDS}
    assert max(counts.values()) - min(counts.values()) < 0.1 * len(pairs), counts
    for item, good, bad in pairs:
        assert good != bad and good == (item.unknown if item.ambiguous else item.label)


def test_the_reward_models_held_out_pairs_keep_both_questions_of_a_context():
    items, _ = bbq.load_items()
    _, held_out = bbq.split_by_template(items)
    pairs = instruct.reward_test_pairs(held_out, n_contexts=20, n_other=30)
    assert instruct.reward_test_pairs(held_out, n_contexts=20, n_other=30) == pairs  # fixed by the seed
    kinds = [instruct.pair_kind(p) for p in pairs]
    assert kinds.count("two people") == 40 and kinds.count("ambiguous") == kinds.count("over unknown") == 30
    two = [item for (item, _, _), kind in zip(pairs, kinds) if kind == "two people"]
    assert all(sum(other.context == item.context for other in two) == 2 for item in two)
    assert {item.template for item, _, _ in pairs} <= {item.template for item in held_out}


def test_the_reward_models_input_marks_the_answers_person_only():
    item = bbq.BbqItem(1, "t", False, "A man and a woman met. The woman left early, and the man stayed.",
                       "Who left early?", ("The woman", "Unknown", "The man"), 0, 0, 1)
    assert (instruct.marked_context(item, 0)
            == "A man and ** a woman ** met. ** The woman ** left early, and the man stayed.")
    assert (instruct.marked_context(item, 2)
            == "** A man ** and a woman met. The woman left early, and ** the man ** stayed.")
    assert instruct.marked_context(item, 1) == item.context


def test_the_bootstrap_interval_holds_the_share_and_narrows_with_more_groups():
    values = np.array([1, 1, 0, 1] * 25)
    groups = np.repeat(np.arange(25), 4)
    result = instruct.share_with_interval(values, groups, samples=500)
    assert result["share"] == pytest.approx(0.75) and result["n"] == 100
    assert result["interval"] == pytest.approx((0.75, 0.75))  # every group holds the same share
    noisy = instruct.share_with_interval(np.arange(100) % 3 == 0, np.arange(100) // 2, samples=500)
    assert noisy["interval"][0] < noisy["share"] < noisy["interval"][1]


def test_a_reward_model_that_ignores_the_question_prefers_one_person_per_context():
    def item(n, question, label):
        return bbq.BbqItem(n, "t", False, f"context {n // 2}", question, ("The man", "Unknown", "The woman"),
                           label, 0, 1)

    pairs = [(item(0, "Who was the secretary?", 0), 0, 2), (item(1, "Who was the board chair?", 2), 2, 0),
             (item(2, "Who was the secretary?", 2), 2, 0), (item(3, "Who was the board chair?", 0), 0, 2),
             (item(4, "Who was late?", 0), 0, 1)]  # a person over "unknown": not counted
    assert instruct.same_person_share(pairs, [True, False, True, True, True]) == {"same": 1, "contexts": 2}
    assert instruct.same_person_share(pairs[:3], [True, True, True]) == {"same": 0, "contexts": 1}


def test_disambiguated_accuracy_weighs_its_two_kinds_equally_against_always_unknown():
    items, _ = bbq.load_items()
    _, held_out = bbq.split_by_template(items)
    pairs = instruct.reward_test_pairs(held_out, n_contexts=40, n_other=20)  # 80 of two people, 20 over unknown
    kinds = np.array([instruct.pair_kind(p) for p in pairs])
    always_unknown = [good == item.unknown for item, good, _ in pairs]  # a strict one: ties between people are wrong
    none = instruct.disambiguated_accuracy(pairs, always_unknown, samples=200)
    assert none["share"] == 0 and none["interval"] == (0, 0) and none["n"] == 100 and none["baseline"] == 0.25
    settles = instruct.disambiguated_accuracy(pairs, kinds == "over unknown", samples=200)  # a person, never which
    assert settles["share"] == 0.5 and settles["interval"] == (0.5, 0.5)
    coin = np.random.default_rng(0).random(len(pairs)) < 0.5
    mixed = instruct.disambiguated_accuracy(pairs, coin, samples=200)
    by_kind = instruct.accuracy_by_kind(pairs, coin)
    assert mixed["share"] == pytest.approx((by_kind["two people"]["share"] + by_kind["over unknown"]["share"]) / 2)
    assert mixed["interval"][0] < mixed["share"] < mixed["interval"][1]


def tiny_peft_model():
    from peft import get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2)
    return get_peft_model(LlamaForCausalLM(config), instruct.lora_config(r=4, alpha=8)).eval()


class Chars:
    """A tokenizer of one id per character."""

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) % 64 for c in text]}


def test_the_kl_is_zero_before_training_and_matches_the_definition_after():
    model = tiny_peft_model()
    assert instruct.response_kl(model, Chars(), ["abcd", "xy"], ["ef", "zzz"]) == pytest.approx(0, abs=1e-7)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    ids = torch.tensor([[ord(c) % 64 for c in "abcdef"]])
    with torch.no_grad():
        policy = torch.log_softmax(model(ids).logits[0, 3:5], -1)
        with model.disable_adapter():
            reference = torch.log_softmax(model(ids).logits[0, 3:5], -1)
    expected = (policy.exp() * (policy - reference)).sum(-1).mean().item()
    assert expected > 0
    assert instruct.response_kl(model, Chars(), ["abcd"], ["ef"]) == pytest.approx(expected, rel=1e-5)
    # two responses of different lengths to one prompt (one batch, right-padded): the mean over their 5 tokens
    per_token = []
    for response in ["ef", "zzz"]:
        ids = torch.tensor([[ord(c) % 64 for c in "abcd" + response]])
        scored = slice(3, 3 + len(response))
        with torch.no_grad():
            policy = torch.log_softmax(model(ids).logits[0, scored], -1)
            with model.disable_adapter():
                reference = torch.log_softmax(model(ids).logits[0, scored], -1)
        per_token += (policy.exp() * (policy - reference)).sum(-1).tolist()
    assert instruct.response_kl(model, Chars(), ["abcd", "abcd"], ["ef", "zzz"]) == pytest.approx(
        np.mean(per_token), rel=1e-5)


def test_the_adapter_state_goes_back_into_a_fresh_model():
    model = tiny_peft_model()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    state = instruct._adapter_state(model)
    fresh = tiny_peft_model()
    ids = torch.tensor([[1, 2, 3, 4]])
    instruct.with_adapter(fresh, state, instruct.lora_config(r=4, alpha=8))
    with torch.no_grad():
        assert torch.allclose(fresh(ids).logits, model(ids).logits)


def test_a_trained_model_gets_its_float32_forward_back():
    """accelerate wraps the forward of a model it trains in bf16 in autocast and leaves it so; ``_train`` undoes it,
    as accelerate's own unwrapping does (the wrapping below is accelerate's, for mixed precision)."""
    from types import MethodType, SimpleNamespace

    from accelerate.utils import convert_outputs_to_fp32

    torch.manual_seed(0)
    model = torch.nn.Linear(16, 4)
    x = torch.randn(8, 16)
    exact = model(x)
    model._original_forward = model.forward
    model.forward = MethodType(convert_outputs_to_fp32(torch.autocast("cpu", dtype=torch.bfloat16)(
        model.forward.__func__)), model)
    assert not torch.equal(model(x), exact)  # bf16 products
    trainer = SimpleNamespace(model=model, train=lambda: None, state=SimpleNamespace(global_step=1, log_history=[]))
    instruct._train(trainer)
    assert torch.equal(model(x), exact)


def lesson_constants() -> str:
    return next(c.source for c in nbformat.read(LESSON, as_version=4).cells if "BETA =" in c.source)


def test_the_lesson_runs_the_sweeps_configurations():
    source = lesson_constants()
    assert 'DPO = pick(full=LESSON_DPO["full"], quick=LESSON_DPO["quick"])' in source and 'BETA = DPO["beta"]' in source
    assert instruct.LESSON_DPO["quick"]["beta"] == instruct.LESSON_DPO["full"]["beta"]


def test_the_committed_sweep_holds_the_lessons_configuration_and_its_trend():
    sweep = instruct.load_beta_sweep()
    assert sweep is not None, "llmcourse/course_data/dpo_beta_sweep.json is missing: run benchmarks/dpo_beta_sweep.py"
    assert sweep["config"] == instruct.LESSON_DPO and len(sweep["commit"]) == 40 and sweep["seed"] == 0
    assert instruct.sweep_point(sweep, instruct.LESSON_DPO["full"]["beta"]) is not None
    full = instruct.LESSON_DPO["full"]
    for run in sweep["runs"]:
        assert run["before"]["disambiguated accuracy"] == sweep["runs"][0]["before"]["disambiguated accuracy"]
    assert full["n_ambiguous"] >= 64 and full["n_disambiguated"] >= 64
    runs = sorted(sweep["runs"], key=lambda r: r["beta"])
    assert runs[0]["kl"] > runs[-1]["kl"]  # a larger beta holds the policy closer to the reference
