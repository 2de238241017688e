"""Tests for llmcourse.finetune: batching, features, the training loop, and cached recipes.

Most tests run on a tiny random BERT (fast, no downloads); the ones that need MiniLM's own config
load it from the shipped package (as the lesson does).
"""

import pytest
import torch

from llmcourse import finetune
from llmcourse.finetune import (LinearProbe, Recipe, batch_order, collate, encode, eval_points, feature_batches, fit,
                                heldout_accuracy, make_batches, padding_stats, predict, sentence_features,
                                training_pass_seconds)

PAD = 0
SEQUENCES = [[1, 5, 6, 2], [1, 7, 2], [1, 5, 6, 7, 8, 9, 2], [1, 9, 2], [1, 5, 5, 5, 5, 2], [1, 8, 8, 2]]
LABELS = [0, 1, 0, 1, 0, 1]


@pytest.fixture(scope="module")
def tiny_config():
    from transformers import BertConfig

    return BertConfig(vocab_size=20, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                      max_position_embeddings=32, num_labels=2, hidden_dropout_prob=0.0,
                      attention_probs_dropout_prob=0.0)


@pytest.fixture
def tiny_classifier(tiny_config):
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    return BertForSequenceClassification(tiny_config)


# ---------------------------------------------------------------- tokens and batches

def test_collate_pads_on_the_right_and_masks_the_padding():
    batch = collate([[1, 5, 2], [1, 2]], [1, 0], PAD)
    assert batch["input_ids"].tolist() == [[1, 5, 2], [1, 2, PAD]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].tolist() == [1, 0] and batch["labels"].dtype == torch.long
    assert "labels" not in collate([[1, 2]], None, PAD)


def test_collate_pads_to_a_fixed_length_and_refuses_longer_sequences():
    assert collate([[1, 2]], [0], PAD, pad_to=5)["input_ids"].shape == (1, 5)
    with pytest.raises(ValueError, match="longer than pad_to"):
        collate([[1, 2, 3, 4]], [0], PAD, pad_to=3)


@pytest.mark.parametrize("batching", finetune.BATCHINGS)
def test_batch_order_uses_every_example_once(batching):
    lengths = [len(s) for s in SEQUENCES]
    groups = batch_order(lengths, 4, batching, seed=1)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    assert sorted(len(g) for g in groups) == [2, 4]


def test_bucketed_batches_hold_similar_lengths_and_come_in_shuffled_order():
    lengths = list(range(100))  # example i has length i
    groups = batch_order(lengths, 10, "bucket", seed=0)
    assert all(max(lengths[i] for i in g) - min(lengths[i] for i in g) == 9 for g in groups)
    assert [min(g) for g in groups] != sorted(min(g) for g in groups)  # not short-to-long
    assert batch_order(lengths, 10, "bucket", seed=0) == groups  # seeded
    assert batch_order(lengths, 10, "dynamic", shuffle=False) == [list(range(i, i + 10)) for i in range(0, 100, 10)]


def test_batch_order_refuses_an_unknown_batching():
    with pytest.raises(ValueError, match="batching must be one of"):
        batch_order([1, 2], 1, "sorted")


def test_fixed_batches_pad_to_max_length_dynamic_ones_to_their_longest():
    fixed = make_batches(SEQUENCES, LABELS, 3, PAD, "fixed", max_length=8)
    dynamic = make_batches(SEQUENCES, LABELS, 3, PAD, "dynamic")
    assert all(b["input_ids"].shape[1] == 8 for b in fixed)
    assert all(b["input_ids"].shape[1] == int(b["attention_mask"].sum(1).max()) for b in dynamic)
    with pytest.raises(ValueError, match="max_length"):
        make_batches(SEQUENCES, LABELS, 3, PAD, "fixed")


def test_padding_stats_count_real_tokens_and_padding():
    stats = padding_stats([collate([[1, 2, 3], [1]], [0, 1], PAD)])
    assert stats == {"real_tokens": 4, "positions": 6, "padding_share": pytest.approx(1 / 3)}
    fixed = padding_stats(make_batches(SEQUENCES, LABELS, 2, PAD, "fixed", max_length=8))
    bucket = padding_stats(make_batches(SEQUENCES, LABELS, 2, PAD, "bucket"))
    assert fixed["real_tokens"] == bucket["real_tokens"] == sum(map(len, SEQUENCES))
    assert bucket["padding_share"] < fixed["padding_share"]


def test_encode_adds_special_tokens_and_truncates():
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(finetune.encoder_folder())
    ids = encode(tokenizer, ["a short one", "one two three four five six seven eight nine ten"], max_length=6)
    assert ids[0][0] == tokenizer.cls_token_id and ids[0][-1] == tokenizer.sep_token_id
    assert len(ids[1]) == 6


# ---------------------------------------------------------------- models and features

def test_sentence_features_are_means_over_real_tokens_whatever_the_padding(tiny_config):
    from transformers import BertModel

    torch.manual_seed(0)
    encoder = BertModel(tiny_config, add_pooling_layer=False).eval()
    features = sentence_features(encoder, SEQUENCES, PAD, batch_size=4, progress=False)  # (N, D)
    assert features.shape == (len(SEQUENCES), tiny_config.hidden_size)
    for i, seq in enumerate(SEQUENCES):  # each sentence alone, no padding at all
        with torch.no_grad():
            alone = encoder(input_ids=torch.tensor([seq])).last_hidden_state.mean(1)[0]
        torch.testing.assert_close(features[i], alone, atol=1e-5, rtol=1e-4)


def test_linear_probe_is_called_like_a_hugging_face_model():
    probe = LinearProbe(3)
    out = probe(features=torch.randn(4, 3), labels=torch.tensor([0, 1, 1, 0]))
    assert out.logits.shape == (4, 2) and out.loss.shape == ()
    assert probe(features=torch.randn(2, 3)).loss is None


def test_fit_learns_a_separable_problem_and_records_its_history():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1024, 4, generator=g)
    y = (x[:, 0] > 0).long()
    groups = batch_order([1] * 1024, 32, "dynamic", seed=0)
    torch.manual_seed(0)
    probe = LinearProbe(4)
    history = fit(probe, feature_batches(x, y, groups), 0.5, feature_batches(x, y, [list(range(1024))]), n_evals=4)
    assert len(history["loss"]) == len(groups) == 32
    assert history["step_examples"][-1] == 1024
    assert history["eval_examples"] == [256, 512, 768, 1024]
    assert history["eval_accuracy"][-1] > 0.95
    assert history["loss"][-1] < history["loss"][0]
    assert history["train_seconds"] > 0 and history["eval_seconds"] >= 0
    assert probe.training  # fit leaves the model in train mode


def test_eval_points_are_evenly_spaced_and_end_at_the_last_step():
    assert eval_points(100, 4) == [25, 50, 75, 100]
    assert eval_points(6, 4) == [2, 3, 4, 6]
    assert eval_points(2, 4) == [1, 2]


def test_predict_runs_in_eval_mode_and_heldout_accuracy_compares_argmax(tiny_classifier):
    batches = make_batches(SEQUENCES, LABELS, 4, PAD, "dynamic", shuffle=False)
    tiny_classifier.train()
    logits, labels = predict(tiny_classifier, batches)
    assert not tiny_classifier.training
    assert logits.shape == (6, 2) and labels.tolist() == LABELS
    assert heldout_accuracy(tiny_classifier, batches) == pytest.approx(
        (logits.argmax(-1) == labels).float().mean().item())


def test_training_pass_seconds_leaves_the_weights_and_gradients_alone(tiny_classifier):
    before = {k: v.clone() for k, v in tiny_classifier.state_dict().items()}
    seconds = training_pass_seconds(tiny_classifier, make_batches(SEQUENCES, LABELS, 3, PAD, "bucket"))
    assert seconds > 0
    assert all(torch.equal(before[k], v) for k, v in tiny_classifier.state_dict().items())
    assert all(p.grad is None for p in tiny_classifier.parameters())


def test_sequence_classifier_pretrained_keeps_minilm_and_random_does_not():
    from transformers import AutoModel

    minilm = AutoModel.from_pretrained(finetune.encoder_folder())
    pretrained = finetune.sequence_classifier(pretrained=True, seed=0)
    random_a = finetune.sequence_classifier(pretrained=False, seed=0)
    random_b = finetune.sequence_classifier(pretrained=False, seed=0)
    word = "embeddings.word_embeddings.weight"
    assert torch.equal(pretrained.bert.state_dict()[word], minilm.state_dict()[word])
    assert not torch.equal(random_a.bert.state_dict()[word], minilm.state_dict()[word])
    assert all(torch.equal(a, b) for a, b in zip(random_a.state_dict().values(), random_b.state_dict().values()))
    assert pretrained.config.num_labels == 2


def test_freeze_below_trains_only_the_top_layers_and_the_head(tiny_config):
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(**{**tiny_config.to_dict(), "num_hidden_layers": 3})
    model = finetune.freeze_below(BertForSequenceClassification(config), 1)
    trained = {name.split(".")[0] + "." + name.split(".")[1] if name.startswith("bert.") else name.split(".")[0]
               for name, p in model.named_parameters() if p.requires_grad}
    assert trained == {"bert.encoder", "bert.pooler", "classifier"}
    assert all(not p.requires_grad for p in model.bert.encoder.layer[1].parameters())
    assert all(p.requires_grad for p in model.bert.encoder.layer[2].parameters())
    with pytest.raises(ValueError, match="train_layers"):
        finetune.freeze_below(model, 4)


# ---------------------------------------------------------------- recipes and the cache

def test_recipe_validates_its_settings_and_counts_its_steps():
    assert Recipe("finetune", n_train=100, batch_size=32).steps == 4
    with pytest.raises(ValueError, match="kind"):
        Recipe("pretrain")
    with pytest.raises(ValueError, match="batching"):
        Recipe("scratch", batching="sorted")


def test_run_recipe_is_cached_and_trains_again_on_request(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("LLMCOURSE_CACHE_DIR", str(tmp_path))
    calls = []

    def fake_train(recipe, keep_weights):
        calls.append(recipe)
        return {"steps": 2, "test_accuracy": 0.75, "train_seconds": 1.0, "eval_seconds": 0.5,
                "eval_accuracy": [0.6, 0.75], "state_dict": {"w": torch.ones(2)}}

    monkeypatch.setattr(finetune, "_train_recipe", fake_train)
    recipe = Recipe("finetune", n_train=10)
    first = finetune.run_recipe(recipe, keep_weights=True)
    second = finetune.run_recipe(recipe, keep_weights=True)
    assert len(calls) == 1 and second["test_accuracy"] == 0.75 and torch.equal(second["state_dict"]["w"], torch.ones(2))
    assert "loaded the cached run" in capsys.readouterr().out
    finetune.run_recipe(recipe, keep_weights=True, retrain=True)
    monkeypatch.setenv("LLMCOURSE_RETRAIN", "1")
    finetune.run_recipe(recipe, keep_weights=True)
    assert len(calls) == 3
    finetune.run_recipe(Recipe("finetune", n_train=11), keep_weights=True)  # another config, another key
    assert len(calls) == 4 and first["wall_seconds"] >= 0


def test_load_classifier_needs_kept_weights():
    with pytest.raises(ValueError, match="keep_weights=True"):
        finetune.load_classifier({"test_accuracy": 0.5})
