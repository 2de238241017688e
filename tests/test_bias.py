"""Tests for llmcourse.bias: batched next-token log-probabilities, MiniLM sentence vectors, the WEAT, the sentiment
head and the timed fine-tuning burst. Tiny random models where the point is the mechanics; the real MiniLM where the
point is that the helper runs on it."""

import math

import pytest
import torch

from grader.checks.bias_and_cost import ToyTokenizer
from llmcourse.bias import (last_token_logprobs, sentence_embeddings, time_finetuning_steps, train_sentiment_head,
                            weat_test)

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "mat", "a", "dog", "ran"]
SENTENCES = ["the cat sat on the mat", "a dog", "the dog ran on a mat and the cat sat"]


@pytest.fixture(scope="module")
def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = ToyTokenizer((" the", " nurse", " said", " that", " he", " she"))
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                         pad_token_id=tokenizer.pad_token_id)
    return tokenizer, LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    from transformers import BertConfig, BertModel, BertTokenizer

    folder = tmp_path_factory.mktemp("tiny-bert")
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(VOCAB), hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=16)
    return BertTokenizer(str(folder / "vocab.txt")), BertModel(config, add_pooling_layer=False).eval()


def test_last_token_logprobs_equal_one_prompt_at_a_time(tiny_llama):
    tokenizer, model = tiny_llama
    prompts = ["The nurse said that", "a", "The nurse said that the nurse said", "said"]
    batched = last_token_logprobs(model, tokenizer, prompts, batch_size=3)  # two batches, both padded
    assert batched.shape == (4, len(tokenizer)) and batched.dtype == torch.float32
    for i, prompt in enumerate(prompts):
        with torch.no_grad():
            alone = torch.log_softmax(model(torch.tensor([tokenizer(prompt)["input_ids"]])).logits[0, -1], dim=-1)
        torch.testing.assert_close(batched[i], alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batched.exp().sum(-1), torch.ones(4))


def test_sentence_embeddings_are_unit_mean_pooled_vectors_in_the_given_order(tiny_bert):
    tokenizer, model = tiny_bert
    vectors = sentence_embeddings(tokenizer, model, SENTENCES, batch_size=2)  # sorted by length inside
    assert vectors.shape == (3, 8)
    torch.testing.assert_close(vectors.norm(dim=-1), torch.ones(3))
    for i, sentence in enumerate(SENTENCES):
        with torch.no_grad():
            hidden = model(**tokenizer(sentence, return_tensors="pt")).last_hidden_state[0]  # (T, D), no padding
        torch.testing.assert_close(vectors[i], torch.nn.functional.normalize(hidden.mean(0), dim=-1),
                                   atol=1e-5, rtol=1e-5)



def _cosine_by_cosine(X, Y, A, B):
    """WEAT word by word, from the definition: (s of X's words then Y's, d with the sample standard deviation)."""
    def cos(u, v):
        return float(u @ v) / float(u.norm() * v.norm())

    s = [sum(cos(w, a) for a in A) / len(A) - sum(cos(w, b) for b in B) / len(B) for w in [*X, *Y]]
    mean_x, mean_y = sum(s[:len(X)]) / len(X), sum(s[len(X):]) / len(Y)
    mean = sum(s) / len(s)
    std = math.sqrt(sum((v - mean) ** 2 for v in s) / (len(s) - 1))
    return s, (mean_x - mean_y) / std


def test_weat_test_follows_the_definition_with_an_exact_permutation_test():
    import itertools

    g = torch.Generator().manual_seed(0)
    X, Y, A, B = (torch.randn(n, 6, generator=g) * 3 for n in (4, 5, 3, 7))  # any lengths, any sizes
    result = weat_test(X, Y, A, B, n_permutations=1_000)  # 126 splits of 9 words into 4 and 5: every one
    s, d = _cosine_by_cosine(X.double(), Y.double(), A.double(), B.double())
    assert result["s"] == pytest.approx(s, abs=1e-12) and result["d"] == pytest.approx(d, rel=1e-12)
    statistic = sum(s[:4]) - sum(s[4:])
    splits = [sum(s[i] for i in chosen) - sum(s[i] for i in range(9) if i not in chosen)
              for chosen in itertools.combinations(range(9), 4)]
    assert result["statistic"] == pytest.approx(statistic)
    assert len(result["permuted"]) == 126
    assert result["p"] == pytest.approx(sum(v >= statistic - 1e-12 for v in splits) / 126)
    swapped = weat_test(X.numpy(), Y.numpy(), B.numpy(), A.numpy(), n_permutations=1_000)  # NumPy arrays too
    assert swapped["d"] == pytest.approx(-d, rel=1e-12)


def test_weat_test_draws_random_re_splits_when_there_are_too_many_and_is_nan_without_spread():
    g = torch.Generator().manual_seed(1)
    X, Y, A = (torch.randn(12, 5, generator=g) for _ in range(3))
    result = weat_test(X, Y, A, A + 0.0, n_permutations=500)  # B = A: every s(w) is 0
    assert len(result["permuted"]) == 500 and math.isnan(result["d"])
    again = weat_test(X, Y, A, torch.randn(4, 5, generator=g), n_permutations=500)
    assert 1 / 501 <= again["p"] <= 1 and len(again["permuted"]) == 500

@pytest.fixture
def runs_in_tmp(tmp_path, monkeypatch):
    """cached_run writes its files under tmp_path (the data and models stay in the real cache)."""
    import llmcourse.cache as cache

    real = cache.cache_dir

    def cache_dir(*parts):
        if parts == ("runs",):
            (tmp_path / "runs").mkdir(exist_ok=True)
            return tmp_path / "runs"
        return real(*parts)

    monkeypatch.setattr(cache, "cache_dir", cache_dir)
    monkeypatch.delenv(cache.RETRAIN_ENV, raising=False)
    return tmp_path / "runs"


def test_sentiment_head_trains_on_the_course_data_and_is_cached(tiny_bert, runs_in_tmp, capsys):
    tokenizer, model = tiny_bert
    head = train_sentiment_head(tokenizer, model, n_train=48, n_test=24, steps=20)
    assert head["weight"].shape == (8,) and head["bias"].shape == ()
    assert head["n_train"] == 48 and head["n_test"] == 24
    assert 0.0 <= head["test_accuracy"] <= 1.0 and head["seconds"] > 0
    assert len(list(runs_in_tmp.glob("sentiment-head-*.pt"))) == 1
    again = train_sentiment_head(tokenizer, model, n_train=48, n_test=24, steps=20)
    assert "loaded the cached run" in capsys.readouterr().out
    torch.testing.assert_close(again["weight"], head["weight"])


def test_sentiment_head_on_minilm_beats_chance(runs_in_tmp):
    from llmcourse.models import load_encoder

    tokenizer, encoder = load_encoder()
    head = train_sentiment_head(tokenizer, encoder, n_train=240, n_test=120)
    assert head["train_accuracy"] > 0.75
    assert head["test_accuracy"] > 0.6


def test_finetuning_burst_times_real_steps_of_minilm():
    result = time_finetuning_steps(1, batch_size=2, max_length=16)
    assert result["n_steps"] == 1 and result["batch_size"] == 2
    assert result["seconds_per_step"] > 0
    assert len(result["losses"]) == 1 and math.isfinite(result["losses"][0])
    assert 22_000_000 < result["n_parameters"] < 23_000_000  # MiniLM's 22.7 M and a 2-label head
