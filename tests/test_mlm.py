"""Tests for llmcourse.mlm: MiniLM's masked-LM head (tied, the encoder frozen), its training on
cached encoder states, fill-mask, the cache, and the next-sentence pairs."""

import pytest
import torch

from llmcourse import mlm
from llmcourse.mlm import (dialogue_sentences, fill_mask, head_accuracy, head_state, load_head, masked_lm,
                           masked_states, nsp_pairs, train_head)

PLAY = """THE TRAGEDY OF NOBODY

PERSONS REPRESENTED.

KING.
QUEEN.

ACT I.

[Enter King and Queen.]

King.
Good morrow, madam. How fares the court today?
I hope it fares--as ever--well.

Queen.
[Aside.] He knows.
It fares as you would have it, lord!

[Exit.]
"""


@pytest.fixture(scope="module")
def minilm_mlm():
    return masked_lm(seed=0)


def test_the_head_is_new_its_decoder_tied_and_only_it_trains(minilm_mlm):
    tokenizer, model = minilm_mlm
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(name.startswith("cls.predictions.") and "decoder" not in name for name in trainable)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 384 * 384 + 384 + 2 * 384 + 30522
    assert not model.training


def test_fill_mask_gives_the_k_most_probable_tokens_per_mask(minilm_mlm):
    tokenizer, model = minilm_mlm
    (first, second) = fill_mask(model, tokenizer, "a [MASK] movie , a [MASK] night .", k=3)
    assert len(first) == len(second) == 3
    probs = [p for _, p in first]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1
    assert all(isinstance(token, str) for token, _ in first)
    with pytest.raises(ValueError, match="no \\[MASK\\]"):
        fill_mask(model, tokenizer, "no mask here")


def test_masked_states_are_the_encoder_states_at_the_chosen_tokens(minilm_mlm):
    tokenizer, model = minilm_mlm
    texts = ["the film is a quiet triumph of acting .", "a dull , lifeless and predictable story .",
             "funny , sad and wise .", "it never finds its footing ."]
    states, targets = masked_states(model, tokenizer, texts, rounds=2, seed=3, progress=False)
    assert states.shape == (len(targets), 384) and len(targets) > 0
    vocabulary = set(tokenizer(texts)["input_ids"][0] + tokenizer(texts)["input_ids"][1]
                     + tokenizer(texts)["input_ids"][2] + tokenizer(texts)["input_ids"][3])
    assert set(targets.tolist()) <= vocabulary - {tokenizer.cls_token_id, tokenizer.sep_token_id}
    again, same = masked_states(model, tokenizer, texts, rounds=2, seed=3, progress=False)
    assert torch.equal(same, targets) and torch.allclose(again, states)  # seeded


def test_train_head_fits_a_small_set_and_the_head_state_round_trips(minilm_mlm):
    tokenizer, model = minilm_mlm
    g = torch.Generator().manual_seed(0)
    states, targets = torch.randn(64, 384, generator=g), torch.randint(30522, (64,), generator=g)
    initial = head_state(model)
    before = head_accuracy(model, states, targets)
    losses = train_head(model, states, targets, steps=60, batch_size=32, lr=5e-3, progress=False)
    after = head_accuracy(model, states, targets)
    assert len(losses) == 60 and after["loss"] < before["loss"] and after["top5"] > before["top5"]
    trained = head_state(model)
    load_head(model, initial)
    assert head_accuracy(model, states, targets)["loss"] == pytest.approx(before["loss"], rel=1e-5)
    load_head(model, trained)
    assert head_accuracy(model, states, targets)["loss"] == pytest.approx(after["loss"], rel=1e-5)
    assert not model.training


def test_cached_head_trains_once(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("LLMCOURSE_CACHE_DIR", str(tmp_path))
    calls = []

    def fake(config):
        calls.append(config)
        return {"head": {"w": torch.zeros(1)}, "losses": [1.0], "before": {"top1": 0.0}, "after": {"top1": 0.5},
                "n_train_positions": 10, "n_heldout_positions": 5, "encode_seconds": 1.0, "train_seconds": 1.0}

    monkeypatch.setattr(mlm, "_train_cached", fake)
    config = mlm.HeadConfig(n_train=10, steps=1)
    mlm.cached_head(config)
    assert mlm.cached_head(config)["after"]["top1"] == 0.5 and len(calls) == 1
    mlm.cached_head(config, retrain=True)
    assert len(calls) == 2
    assert "held-out top-1 0.0% -> 50.0%" in capsys.readouterr().out


def test_dialogue_sentences_keep_speech_only():
    sentences = dialogue_sentences(PLAY)
    assert sentences == ["Good morrow, madam.", "How fares the court today?", "I hope it fares as ever well.",
                         "He knows.", "It fares as you would have it, lord!"]


def test_nsp_pairs_are_half_true_successors_half_random():
    sentences = [f"sentence number {i} is here." for i in range(200)]
    pairs = nsp_pairs(sentences, 1000, seed=0)
    assert sum(p["is_next"] for p in pairs) == 500
    for p in pairs:
        i, j = sentences.index(p["a"]), sentences.index(p["b"])
        assert (j == i + 1) == p["is_next"]
    assert sum(p["is_next"] for p in nsp_pairs(sentences, 40, seed=3)) == 20  # a small sample too
    assert 5 < sum(p["is_next"] for p in pairs[:20]) < 15  # shuffled, not all true ones first
    assert nsp_pairs(sentences, 1000, seed=0) == pairs


def test_nsp_pairs_respect_the_length_limits():
    sentences = ["one two three four", "short", "one two three four five", "six seven eight nine ten"]
    pairs = nsp_pairs(sentences, 20, seed=1, min_words=4)
    assert all(len(p["a"].split()) >= 4 and len(p["b"].split()) >= 4 for p in pairs)
    assert all(p["a"] == sentences[2] for p in pairs if p["is_next"])
    with pytest.raises(ValueError, match="consecutive"):
        nsp_pairs(["a b", "c d"], 1, min_words=4)


def test_head_accuracy_counts_top1_top5_and_the_mean_loss_per_position():
    torch.manual_seed(0)
    model = torch.nn.Module()
    model.cls = torch.nn.Linear(8, 40)  # what head_logits calls: 8-wide states, a vocabulary of 40
    states, targets = torch.randn(50, 8), torch.randint(40, (50,))
    logits = model.cls(states).detach()
    best = logits.topk(5, dim=-1).indices
    expected = {"top1": (best[:, 0] == targets).float().mean().item(),
                "top5": (best == targets[:, None]).any(-1).float().mean().item(),
                "loss": torch.nn.functional.cross_entropy(logits, targets).item()}
    found = head_accuracy(model, states, targets, batch_size=7)  # uneven chunks: 7 x 7 + 1
    assert found == pytest.approx(expected, rel=1e-5)
