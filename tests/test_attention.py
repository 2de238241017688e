"""Tests for llmcourse.attention on a tiny random BERT (fast, no downloads)."""

import pytest
import torch
import torch.nn.functional as F

from llmcourse.attention import minilm_attentions, per_head_qkv

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "mat"]


def tiny_bert(tmp_path, attn_implementation="eager"):
    from transformers import BertConfig, BertModel, BertTokenizer

    (tmp_path / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    tokenizer = BertTokenizer(str(tmp_path / "vocab.txt"))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(VOCAB), hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=16, attn_implementation=attn_implementation)
    return tokenizer, BertModel(config, add_pooling_layer=False).eval()


def test_attentions_are_the_models_own_per_layer_on_the_cpu(tmp_path):
    tokenizer, model = tiny_bert(tmp_path)
    tokens, att = minilm_attentions(tokenizer, model, "the cat sat on the mat")
    assert tokens == ["[CLS]", "the", "cat", "sat", "on", "the", "mat", "[SEP]"]
    assert att.shape == (2, 2, 8, 8) and att.device.type == "cpu"
    torch.testing.assert_close(att.sum(-1), torch.ones(2, 2, 8))


def test_per_head_qkv_gives_what_each_layer_attends_with(tmp_path):
    tokenizer, model = tiny_bert(tmp_path)
    batch = tokenizer(["the cat sat on the mat", "the cat"], padding=True, return_tensors="pt")
    qkv = per_head_qkv(model, batch)
    assert len(qkv) == 2 and all(t.shape == (2, 2, 8, 4) for layer in qkv for t in layer)
    with torch.no_grad():
        hidden = model(**batch, output_hidden_states=True).hidden_states
        query = model.encoder.layer[1].attention.self.query(hidden[1])  # (B, T, D): head h owns features h*4..h*4+3
    torch.testing.assert_close(qkv[1][0][:, 1], query[..., 4:8])
    _, att = minilm_attentions(tokenizer, model, "the cat sat on the mat")
    one = per_head_qkv(model, tokenizer("the cat sat on the mat", return_tensors="pt"))
    weights = torch.stack([F.scaled_dot_product_attention(q, k, torch.eye(8))[0] for q, k, _ in one])
    torch.testing.assert_close(weights, att)


def test_per_head_qkv_leaves_the_model_as_it_was_and_needs_eager_attention(tmp_path):
    import transformers.models.bert.modeling_bert as bert

    original = bert.eager_attention_forward
    tokenizer, model = tiny_bert(tmp_path)
    per_head_qkv(model, tokenizer("the cat", return_tensors="pt"))
    assert bert.eager_attention_forward is original
    _, sdpa_model = tiny_bert(tmp_path, attn_implementation="sdpa")
    with pytest.raises(RuntimeError, match="eager"):
        per_head_qkv(sdpa_model, tokenizer("the cat", return_tensors="pt"))
    assert bert.eager_attention_forward is original
