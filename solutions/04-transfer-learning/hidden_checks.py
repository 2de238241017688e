"""Hidden cases for chapter 04 (instructor's tree only: never released, never shown in feedback).

They test the same behaviour as the visible checks on other sizes, probabilities, vocabularies and
training set-ups, so that an answer fitted to the visible cases fails. ``grader.hidden.run_hidden``
judges them with the visible judge.
"""

import torch

from grader.checks.transfer_learning import BERT_SPECIALS, SMALL_SPECIALS, EpochCase, EvalCase, MaskCase, masked_batch


def mask_tokens_cases():
    g = torch.Generator().manual_seed(4002)
    wide = masked_batch(g, 160, 330, 2000, (500, 900), SMALL_SPECIALS)
    dense = masked_batch(g, 128, 400, 30522, (5000, 9000), BERT_SPECIALS, padded=False)
    return [
        MaskCase("hidden: 160 padded rows of 330, vocab 2,000, p = 0.2", (*wide, SMALL_SPECIALS["mask"], 2000),
                 {"mlm_probability": 0.2}, seed=4003),
        MaskCase("hidden: 128 unpadded rows of 400, BERT vocab, p = 0.5", (*dense, BERT_SPECIALS["mask"], 30522),
                 {"mlm_probability": 0.5}, seed=4004),
    ]


def evaluate_cases():
    return [
        EvalCase("hidden: 4 batches of 6, 6, 6 and 1, train mode", (), sizes=(6, 6, 6, 1), seed=4011),
        EvalCase("hidden: 3 uneven batches as a stream, eval mode", (), sizes=(3, 10, 4), stream=True,
                 training=False, length=9, seed=4012),
    ]


def train_epoch_cases():
    return [
        EpochCase("hidden: 6 batches of 4 with a scheduler", (), sizes=(4,) * 6, scheduler=True, lr=0.3, seed=4021),
        EpochCase("hidden: 3 uneven batches as a stream, no scheduler", (), sizes=(9, 2, 5), stream=True,
                  length=9, seed=4022),
    ]


CASES = {
    "mask_tokens": mask_tokens_cases,
    "evaluate": evaluate_cases,
    "train_epoch": train_epoch_cases,
}
