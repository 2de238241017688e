"""The small GPT shared by lessons 07 and 08 (llmcourse/tinygpt.py): shapes, causality, parameter counts,
the character tokenizer, a training loop that learns and repeats itself, auxiliary losses and the step hook."""

import math

import pytest
import torch
import torch.nn as nn

from llmcourse.tinygpt import (MLP, CharTokenizer, GPTConfig, TinyGPT, char_dataset, collect_aux_losses,
                               flops_per_token, get_batch, learning_rate, train, validation_loss)

CONFIG = GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16)


def model(config=CONFIG, seed=0, ffn_factory=None):
    torch.manual_seed(seed)
    return TinyGPT(config, ffn_factory)


def test_forward_shapes_and_loss():
    m = model()
    idx = torch.randint(0, 11, (3, 8))
    logits, loss = m(idx)
    assert logits.shape == (3, 8, 11) and loss is None
    logits, loss = m(idx, idx)
    assert loss.shape == () and abs(loss.item() - math.log(11)) < 0.2  # near uniform at initialisation


def test_causal_a_later_token_does_not_change_earlier_logits():
    m = model()
    idx = torch.randint(0, 11, (1, 8))
    changed = idx.clone()
    changed[0, 5] = (idx[0, 5] + 1) % 11
    a, _ = m(idx)
    b, _ = m(changed)
    assert torch.allclose(a[0, :5], b[0, :5], atol=1e-6)
    assert not torch.allclose(a[0, 5:], b[0, 5:])


def test_too_long_a_sequence_is_refused():
    with pytest.raises(ValueError, match="block_size"):
        model()(torch.zeros(1, 9, dtype=torch.long))


def test_parameter_counts_with_and_without_embeddings():
    m = model()
    d, L, V, T = 16, 2, 11, 8
    per_block = (3 * d * d + 3 * d) + (d * d + d) + (4 * d * d + 4 * d) + (4 * d * d + d) + 4 * d
    non_embedding = L * per_block + 2 * d  # blocks and the final LayerNorm
    assert m.n_params() == non_embedding
    assert m.n_params(non_embedding=False) == non_embedding + V * d + T * d  # tied output layer counted once
    assert m.lm_head.weight is m.wte.weight


def test_ffn_factory_plugs_in_another_feed_forward():
    class Doubler(nn.Module):
        def __init__(self, config):
            super().__init__()
            self.inner = MLP(config)

        def forward(self, x):
            return 2 * self.inner(x)

    m = model(ffn_factory=Doubler)
    assert all(isinstance(block.ffn, Doubler) for block in m.blocks)
    assert m(torch.zeros(1, 4, dtype=torch.long))[0].shape == (1, 4, 11)


def test_flops_per_token_is_6n_plus_the_attention_term():
    assert flops_per_token(CONFIG, 1000, with_attention=False) == 6000
    assert flops_per_token(CONFIG, 1000) == 6000 + 12 * 2 * 16 * 8


def test_char_tokenizer_round_trip_and_unknown_characters():
    tok = CharTokenizer("hello, wörld")
    assert tok.vocab_size == len(set("hello, wörld"))
    ids = tok.encode("low, hello")
    assert tok.decode(ids) == "low, hello"
    assert tok.encode_array("ö").tolist() == [tok.chars.index("ö")]
    with pytest.raises(ValueError, match="not in the vocabulary"):
        tok.encode("xyz")


def test_char_dataset_holds_out_the_end():
    tok, train_ids, val_ids = char_dataset("abcdefghij" * 10, val_fraction=0.2)
    assert len(train_ids) == 80 and len(val_ids) == 20
    assert tok.decode(val_ids[:3]) == "abc"
    assert train_ids.dtype == torch.long


def test_get_batch_targets_are_the_next_tokens():
    data = torch.arange(100)
    x, y = get_batch(data, 8, 4, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (4, 8)
    assert torch.equal(y, x + 1)


def test_learning_rate_warms_up_then_decays_to_the_floor():
    lrs = [learning_rate(s, 100, 1.0) for s in range(100)]
    assert lrs[0] < lrs[4] == pytest.approx(1.0)
    assert lrs[-1] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[5:], lrs[6:]))


def repeating_text_data():
    _, ids, _ = char_dataset("the cat sat on the mat. " * 200, val_fraction=0.0001)
    return ids


def test_training_learns_and_repeats_with_the_same_seed():
    data = repeating_text_data()
    config = GPTConfig(vocab_size=int(data.max()) + 1, block_size=16, n_layer=1, n_head=2, n_embd=16)
    runs = []
    for _ in range(2):
        m = model(config)
        before = validation_loss(m, data, batch_size=8, n_batches=4)
        result = train(m, data, steps=60, batch_size=8, lr=1e-2, progress=False)
        runs.append((result, validation_loss(m, data, batch_size=8, n_batches=4), before))
    (first, after, before), (second, _, _) = runs
    assert after < before - 1.0  # a repeated sentence is easy to learn
    assert first["loss"] == second["loss"]  # fixed seed: the same batches, the same numbers
    assert first["tokens"] == 60 * 8 * 16 and first["seconds"] > 0


class LoudFFN(MLP):
    """An MLP that sets an auxiliary loss (its mean squared output) and counts its calls."""

    def forward(self, x):
        out = super().forward(x)
        self.aux_loss = out.pow(2).mean()
        return out


def test_aux_losses_are_collected_weighted_and_reported():
    data = repeating_text_data()
    config = GPTConfig(vocab_size=int(data.max()) + 1, block_size=16, n_layer=2, n_head=2, n_embd=16)
    m = model(config, ffn_factory=LoudFFN)
    m(data[:16][None])
    assert collect_aux_losses(m).item() == pytest.approx(sum(b.ffn.aux_loss.item() for b in m.blocks))
    steps_seen = []
    result = train(m, data, steps=5, batch_size=4, aux_weight=0.5, progress=False,
                   on_step=lambda step, model: steps_seen.append((step, model is m)))
    assert steps_seen == [(s, True) for s in range(5)]
    assert len(result["aux_loss"]) == 5 and all(a > 0 for a in result["aux_loss"])


def test_aux_weight_changes_the_training():
    data = repeating_text_data()
    config = GPTConfig(vocab_size=int(data.max()) + 1, block_size=16, n_layer=1, n_head=2, n_embd=16)
    plain = train(model(config, ffn_factory=LoudFFN), data, steps=10, batch_size=4, progress=False)
    weighted = train(model(config, ffn_factory=LoudFFN), data, steps=10, batch_size=4, aux_weight=100.0,
                     progress=False)
    assert plain["loss"][0] == weighted["loss"][0]  # the same first batch and weights
    assert plain["loss"][-1] != weighted["loss"][-1]


def test_no_aux_loss_is_zero():
    assert collect_aux_losses(model()).item() == 0.0


def test_generate_appends_tokens():
    m = model()
    out = m.generate(torch.zeros(1, 3, dtype=torch.long), 10, generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 13) and int(out.max()) < 11
