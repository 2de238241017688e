"""Tests for llmcourse.transformer on a tiny random BERT (fast, no downloads)."""

import pytest
import torch

from llmcourse.transformer import additive_padding_mask, embed_batch, hf_layer_output, minilm_layer_params

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "mat"]
SENTENCES = ["the cat sat on the mat", "the cat"]  # 8 and 4 tokens with [CLS] and [SEP]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    from transformers import BertConfig, BertModel, BertTokenizer

    folder = tmp_path_factory.mktemp("tiny-bert")
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    tokenizer = BertTokenizer(str(folder / "vocab.txt"))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(VOCAB), hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=16, attn_implementation="eager")
    return tokenizer, BertModel(config, add_pooling_layer=False).eval()


def test_layer_params_use_the_bertlayer_names_and_are_detached_copies(tiny_bert):
    _, model = tiny_bert
    params = minilm_layer_params(model, 1)
    assert params.keys() == model.encoder.layer[1].state_dict().keys()
    assert "attention.self.query.weight" in params and "output.LayerNorm.bias" in params
    assert params["intermediate.dense.weight"].shape == (16, 8)
    assert not any(t.requires_grad for t in params.values())
    params["attention.self.query.weight"].zero_()  # changing the copy leaves the model alone
    assert model.encoder.layer[1].attention.self.query.weight.abs().sum() > 0
    torch.testing.assert_close(minilm_layer_params(model, -1)["output.dense.bias"], params["output.dense.bias"])
    with pytest.raises(IndexError):
        minilm_layer_params(model, 2)


def test_embed_batch_pads_and_returns_the_embedding_layer_output(tiny_bert):
    tokenizer, model = tiny_bert
    batch, hidden = embed_batch(tokenizer, model, SENTENCES)
    assert hidden.shape == (2, 8, 8) and not hidden.requires_grad
    assert batch["attention_mask"].tolist() == [[1] * 8, [1] * 4 + [0] * 4]
    with torch.no_grad():
        expected = model.embeddings(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"])
    torch.testing.assert_close(hidden, expected)


def test_additive_mask_is_zero_for_real_keys_and_very_negative_for_padding():
    mask = additive_padding_mask(torch.tensor([[1, 1, 0]]))
    assert mask.shape == (1, 1, 1, 3)
    assert mask[0, 0, 0, :2].tolist() == [0.0, 0.0]
    assert mask[0, 0, 0, 2].item() == torch.finfo(torch.float32).min


def test_chained_layer_outputs_reproduce_the_model_with_padding(tiny_bert):
    tokenizer, model = tiny_bert
    batch, hidden = embed_batch(tokenizer, model, SENTENCES)
    for i in range(len(model.encoder.layer)):
        hidden = hf_layer_output(model, i, hidden, batch["attention_mask"])
    with torch.no_grad():
        expected = model(**batch).last_hidden_state
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(hidden[real], expected[real])


def test_layer_output_ignores_padding_keys(tiny_bert):
    tokenizer, model = tiny_bert
    batch, hidden = embed_batch(tokenizer, model, SENTENCES)
    padded = hf_layer_output(model, 0, hidden, batch["attention_mask"])[1, :4]
    _, alone_hidden = embed_batch(tokenizer, model, SENTENCES[1:])
    alone = hf_layer_output(model, 0, alone_hidden, torch.ones(1, 4, dtype=torch.long))[0]
    torch.testing.assert_close(padded, alone)
    unmasked = hf_layer_output(model, 0, hidden, torch.ones_like(batch["attention_mask"]))[1, :4]
    assert (unmasked - alone).abs().max() > 1e-3  # the mask is what makes them equal
