"""Hidden cases for chapter 11 (instructor's tree only: never released, never shown in feedback).

They test the same behaviour as the visible checks on other models, shapes and values, so that an answer
fitted to the visible cases fails. ``grader.hidden.run_hidden`` judges them with the visible judge.
"""

from grader.checks.instruction_tuning import (ENDOFTEXT, IM_END, DPOCase, LoraCase, RewardCase, bag_pairs,
                                              chat_rows, dpo_args, feature_pairs, label_batch, large_margin_args,
                                              random_rows)
from grader.core import Case


def response_only_labels_cases():
    chats = chat_rows()
    return [
        Case("two chats padded far beyond the longer one",
             label_batch([chats[2], chats[0]], length=60)),
        Case("six rows of mixed lengths, one of them all answer",
             label_batch(random_rows(2101, [(7, 2), (0, 9), (4, 4), (9, 1), (3, 3), (5, 0)]), length=13)),
        Case("padding with <|endoftext|> and answers that hold it",
             label_batch(random_rows(2102, [(3, 6), (5, 4)], with_pad_token=ENDOFTEXT), pad_id=ENDOFTEXT,
                         length=14)),
        Case("a row of one token, all prompt, beside a longer one",
             label_batch(random_rows(2103, [(1, 0), (2, 5)]), pad_id=IM_END)),
    ]


def add_lora_cases():
    wide = {"hidden": 48, "heads": 6, "kv_heads": 2, "intermediate": 40, "layers": 3}
    return [
        LoraCase("a wider Llama, key and up projections", (), kind="llama", dims=wide, model_seed=2110,
                 targets=["k_proj", "up_proj"], r=5, alpha=10, seed=11),
        LoraCase("the output head of a tied Llama", (), kind="llama", model_seed=2111, targets=("lm_head",), r=2,
                 alpha=3.0, seed=12),
        LoraCase("three blocks, a two-part target and a bare one", (), kind="projnet",
                 dims={"width": 10, "hidden": 14, "n_blocks": 3}, model_seed=2112,
                 targets=["blocks.2.out_proj", "proj_out"], r=3, alpha=1.5, seed=13),
        LoraCase("a name that only a substring test would find", (), kind="projnet", model_seed=2113,
                 targets=["out"], r=2, alpha=4, seed=14),
        LoraCase("a float alpha and rank 1", (), kind="llama", model_seed=2114, targets=["o_proj", "gate_proj"],
                 r=1, alpha=2.5, seed=15),
    ]


def reward_model_step_cases():
    return [
        RewardCase("many pairs, stale gradients and ties", bag_pairs(2130, 9, ties=3, length=8), kind="bag",
                   seed=2130, stale=True),
        RewardCase("features at both extremes", feature_pairs(2131, [-300.0, 250.0, 0.5, -0.5]), kind="features",
                   seed=2131, stale=True, lr=0.001),
        RewardCase("two pairs with a fresh optimizer", bag_pairs(2132, 2, length=4), kind="bag", seed=2132),
    ]


def dpo_loss_cases():
    return [
        DPOCase("four pairs of uneven lengths and a larger beta",
                dpo_args(2140, [1, 3, 0, 2], [5, 2, 6, 3], [2, 6, 3, 4], (9, 10), 1.5, vocab=9)),
        DPOCase("one pair with a long padded tail", dpo_args(2141, [2], [2], [3], (11, 12), 0.05, vocab=15)),
        DPOCase("large margins again", large_margin_args(2142), atol=1e-2),
        DPOCase("policy far from the reference", dpo_args(2143, [2, 2], [4, 4], [4, 4], (7, 7), 0.3, drift=3.0)),
    ]


CASES = {
    "response_only_labels": response_only_labels_cases,
    "add_lora": add_lora_cases,
    "reward_model_step": reward_model_step_cases,
    "dpo_loss": dpo_loss_cases,
}
