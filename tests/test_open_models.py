"""Tests for llmcourse.open_models: shapes and the meta-device models, held-out text and perplexity, swapped
weights, measured cache and speed (on a tiny random Llama: fast, no downloads), absmax by PyTorch's
quantizers, the Q4_1 decoder and gguf's own reading (on a GGUF written here and on the shipped one), and
the parallel texts and tokenizers of lesson 10."""

import math
import unicodedata

import numpy as np
import pytest
import torch

from llmcourse import open_models as om


@pytest.fixture(scope="module")
def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         tie_word_embeddings=True)
    return LlamaForCausalLM(config).eval()


def _kv_formula(config, n_tokens, batch=1, nbytes=4):
    head_dim = config.hidden_size // config.num_attention_heads
    return 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * n_tokens * batch * nbytes


# ---------------------------------------------------------------- shapes

def test_bloom_parameters_follow_from_its_shape():
    h, layers, vocab = 14_336, 70, 250_880
    assert vocab * h + layers * (12 * h * h + 13 * h) + 4 * h == om.OPEN_MODELS["BLOOM-176B"].n_params


def test_shapes_give_the_published_kv_cache_per_token():
    opt = om.OPEN_MODELS["OPT-175B"]
    assert 2 * opt.n_layers * opt.n_kv_heads * opt.head_dim * 2 == 4_718_592  # 96 layers x 12,288 x 2 x 2 bytes
    assert opt.n_kv_heads * opt.head_dim == 12_288
    assert om.OPEN_MODELS["BLOOM-176B"].n_kv_heads * om.OPEN_MODELS["BLOOM-176B"].head_dim == 14_336


# ---------------------------------------------------------------- perplexity

class UniformLM(torch.nn.Module):
    """Every next token equally likely: perplexity = vocabulary size."""

    def __init__(self, vocab=7):
        super().__init__()
        self.vocab = vocab
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return type("Out", (), {"logits": torch.zeros(*x.shape, self.vocab) + self.dummy})()


def test_perplexity_of_a_uniform_model_is_the_vocabulary_size():
    ids = torch.randint(0, 7, (100,))
    assert om.causal_lm_perplexity(UniformLM(7), ids, window=10, progress=False) == pytest.approx(7.0)


def test_perplexity_matches_the_models_own_loss_on_one_window(tiny_llama):
    ids = torch.randint(0, 50, (24,), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        loss = tiny_llama(ids[None], labels=ids[None]).loss
    assert om.causal_lm_perplexity(tiny_llama, ids, window=24, progress=False) == pytest.approx(
        math.exp(loss.item()), rel=1e-5)


def test_perplexity_drops_the_last_partial_window_and_refuses_too_few_tokens(tiny_llama):
    ids = torch.randint(0, 50, (30,), generator=torch.Generator().manual_seed(2))
    assert om.causal_lm_perplexity(tiny_llama, ids, 12, progress=False) == pytest.approx(
        om.causal_lm_perplexity(tiny_llama, ids[:24], 12, progress=False))
    with pytest.raises(ValueError):
        om.causal_lm_perplexity(tiny_llama, ids[:5], 12, progress=False)


def test_heldout_text_is_the_end_of_the_corpus_from_a_line_start():
    from llmcourse.data import text_corpus

    corpus, heldout = text_corpus(), om.heldout_shakespeare()
    assert corpus.endswith(heldout)
    assert corpus[len(corpus) - len(heldout) - 1] == "\n"
    assert 0.09 < len(heldout) / len(corpus) <= om.HELDOUT_FRACTION


def test_heldout_token_ids_has_exactly_the_tokens_asked_for():
    from transformers import AutoTokenizer

    from llmcourse.models import CAUSAL_LMS, DEFAULT_CAUSAL_LM, resolve

    tokenizer = AutoTokenizer.from_pretrained(resolve(None, CAUSAL_LMS, DEFAULT_CAUSAL_LM))
    ids = om.heldout_token_ids(tokenizer, 700)
    assert ids.shape == (700,) and ids.dtype == torch.long
    assert om.heldout_shakespeare().startswith(tokenizer.decode(ids[:50]))


# ---------------------------------------------------------------- swapped weights

def test_block_linear_layers_leave_out_the_tied_output_layer(tiny_llama):
    layers = om.block_linear_layers(tiny_llama)
    assert len(layers) == 2 * 7  # q, k, v, o, gate, up, down per block
    assert all(layer is not tiny_llama.lm_head for _, layer in layers)


def test_weights_replaced_swaps_and_restores(tiny_llama):
    before = {name: layer.weight.detach().clone() for name, layer in om.block_linear_layers(tiny_llama)}
    with om.weights_replaced(tiny_llama, torch.zeros_like) as layers:
        assert all(layer.weight.abs().sum() == 0 for _, layer in layers)
        assert tiny_llama.lm_head.weight.abs().sum() > 0
    assert all(torch.equal(layer.weight, before[name]) for name, layer in om.block_linear_layers(tiny_llama))


def test_weights_replaced_restores_after_an_error_and_refuses_a_wrong_shape(tiny_llama):
    before = [layer.weight.detach().clone() for _, layer in om.block_linear_layers(tiny_llama)]
    with pytest.raises(RuntimeError):
        with om.weights_replaced(tiny_llama, lambda w: w * 2):
            raise RuntimeError("inside")
    with pytest.raises(ValueError, match="returned"):
        with om.weights_replaced(tiny_llama, lambda w: w[:1]):
            pass
    after = [layer.weight for _, layer in om.block_linear_layers(tiny_llama)]
    assert all(torch.equal(a, b) for a, b in zip(after, before))


def test_weights_replaced_leaves_the_caller_s_tensor_alone(tiny_llama):
    def in_place(w):
        return w.mul_(0)  # gets a copy: the model's own weight must survive

    before = [layer.weight.detach().clone() for _, layer in om.block_linear_layers(tiny_llama)]
    with om.weights_replaced(tiny_llama, in_place):
        pass
    assert all(torch.equal(layer.weight, b) for (_, layer), b in zip(om.block_linear_layers(tiny_llama), before))


# ---------------------------------------------------------------- memory, cache and speed

def test_parameter_bytes_counts_a_tied_matrix_once(tiny_llama):
    expected = sum(p.numel() * 4 for p in tiny_llama.parameters()) + sum(b.numel() * b.element_size()
                                                                        for b in tiny_llama.buffers())
    assert om.parameter_bytes(tiny_llama) == expected
    assert tiny_llama.lm_head.weight is tiny_llama.model.embed_tokens.weight


def test_resident_memory_is_positive():
    assert om.resident_memory_mb() > 10


def test_kv_cache_holds_keys_and_values_of_every_layer_and_is_the_formula(tiny_llama):
    ids = torch.randint(0, 50, (3, 9))
    cache = om.kv_cache(tiny_llama, ids)
    assert len(cache) == 2 and all(k.shape == v.shape == (3, 2, 9, 4) for k, v in cache)
    assert sum(k.nbytes + v.nbytes for k, v in cache) == _kv_formula(tiny_llama.config, 9, batch=3)
    assert om.cache_nbytes([tuple(pair) for pair in cache]) == _kv_formula(tiny_llama.config, 9, batch=3)


def test_meta_models_have_the_published_sizes_and_no_memory():
    bloom = om.meta_model("BLOOM-176B")
    assert bloom.device.type == "meta"
    assert bloom.num_parameters() == om.OPEN_MODELS["BLOOM-176B"].n_params  # the model card's count
    assert bloom.get_memory_footprint() >= 2 * bloom.num_parameters()  # fp16, buffers on top
    opt = om.meta_model("OPT-175B")
    assert 174e9 < opt.num_parameters() < 175e9  # "175B" rounds it
    cache = om.kv_cache(opt, torch.zeros(2, 16, dtype=torch.long, device=opt.device))
    assert len(cache) == 96 and cache[0][0].shape == (2, 96, 16, 128) and cache[0][0].dtype == torch.float16
    assert sum(k.nbytes + v.nbytes for k, v in cache) == 2 * 16 * 4_718_592  # the formula's bytes per token


def test_generation_speed_is_greedy_decoding_with_the_cache(tiny_llama):
    prompt = torch.randint(0, 50, (1, 5), generator=torch.Generator().manual_seed(3))
    speed = om.generation_speed(tiny_llama, prompt, 6)
    ids = prompt
    with torch.no_grad():
        for _ in range(6):  # without a cache: recompute everything, take the argmax
            ids = torch.cat([ids, tiny_llama(ids).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(speed["ids"], ids)
    assert speed["cache_bytes"] == _kv_formula(tiny_llama.config, 5 + 6 - 1)
    assert speed["prefill_tokens_per_s"] > 0 and speed["decode_tokens_per_s"] > 0
    assert speed["prompt_tokens"] == 5 and speed["new_tokens"] == 6


# ---------------------------------------------------------------- absmax by PyTorch's quantizers

def test_absmax_round_trip_is_the_lessons_worked_example():
    w = torch.tensor([0.12, -0.30, 0.05, 2.10, -0.18, 0.08, -0.04, 0.21])
    assert om.absmax_scale(w, 4) == pytest.approx(0.30)
    torch.testing.assert_close(om.absmax_round_trip(w, 4), torch.tensor([0, -0.3, 0, 2.1, -0.3, 0, 0, 0.3]))
    torch.testing.assert_close(om.absmax_scale(w, 4, 4), torch.tensor([0.30, 0.03]))
    torch.testing.assert_close(om.absmax_round_trip(w, 4, 4),
                               torch.tensor([0, -0.3, 0, 2.1, -0.18, 0.09, -0.03, 0.21]))


def test_absmax_round_trip_keeps_the_shape_and_zero_blocks_and_stays_on_its_levels():
    w = torch.randn(4, 64, generator=torch.Generator().manual_seed(0))
    w[0, :32] = 0
    for bits, top in ((8, 127), (4, 7), (2, 1)):
        out = om.absmax_round_trip(w, bits, 32)
        assert out.shape == w.shape and out.dtype == w.dtype and (out[0, :32] == 0).all()
        scales = om.absmax_scale(w, bits, 32)
        levels = out.view(-1, 32)[1:] / scales[1:, None]
        torch.testing.assert_close(levels, levels.round(), atol=1e-4, rtol=0)
        assert levels.abs().max() <= top + 1e-4
        per_tensor = om.absmax_round_trip(w, bits)
        assert (per_tensor.abs().max() - w.abs().max()).abs() < 1e-6


# ---------------------------------------------------------------- GGUF Q4_1

@pytest.fixture(scope="module")
def small_gguf(tmp_path_factory):
    from gguf import GGMLQuantizationType, GGUFWriter, quants

    weights = np.random.default_rng(0).standard_normal((6, 96)).astype(np.float32)  # 6 rows of 3 blocks
    path = tmp_path_factory.mktemp("gguf") / "small.gguf"
    writer = GGUFWriter(str(path), "llama")
    packed = quants.quantize(weights, GGMLQuantizationType.Q4_1)
    writer.add_tensor("blk.0.attn_output.weight", packed, raw_shape=packed.shape, raw_dtype=GGMLQuantizationType.Q4_1)
    writer.add_tensor("output_norm.weight", np.ones(96, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path, weights


def test_q4_1_blocks_decode_like_gguf_itself(small_gguf):
    from gguf import GGUFReader, quants

    path, weights = small_gguf
    blocks = om.q4_1_blocks("blk.0.attn_output.weight", path)
    assert blocks["d"].shape == (6, 3) and blocks["q"].shape == (6, 3, 32) and blocks["q"].max() <= 15
    decoded = (blocks["d"][..., None] * blocks["q"].float() + blocks["m"][..., None]).reshape(6, 96)
    (tensor,) = [t for t in GGUFReader(path).tensors if t.name == "blk.0.attn_output.weight"]
    np.testing.assert_array_equal(decoded.numpy(), quants.dequantize(tensor.data, tensor.tensor_type))
    assert np.abs(decoded.numpy() - weights).max() < 0.5  # 16 levels per block: a coarse copy
    assert blocks["n_bytes"] == 6 * 3 * 20


def test_gguf_dequantized_is_gguf_s_own_reading(small_gguf):
    path, weights = small_gguf
    blocks = om.q4_1_blocks("blk.0.attn_output.weight", path)
    decoded = om.gguf_dequantized("blk.0.attn_output.weight", path)
    assert decoded.shape == (6, 96) and decoded.dtype == torch.float32
    torch.testing.assert_close(decoded, (blocks["d"][..., None] * blocks["q"].float()
                                         + blocks["m"][..., None]).reshape(6, 96), atol=1e-6, rtol=0)


def test_q4_1_blocks_refuses_another_format(small_gguf):
    path, _ = small_gguf
    assert om.gguf_tensor_types(path) == {"Q4_1": 1, "F32": 1}
    with pytest.raises(ValueError, match="F32"):
        om.q4_1_blocks("output_norm.weight", path)


def test_the_shipped_gguf_is_q4_1_with_an_8_bit_embedding():
    types = om.gguf_tensor_types()
    assert types["Q4_1"] == 210 and types["Q8_0"] == 1
    blocks = om.q4_1_blocks("blk.0.attn_output.weight")
    assert blocks["q"].shape == (576, 18, 32)
    assert blocks["n_bytes"] * 8 / (576 * 576) == 5.0


# ---------------------------------------------------------------- parallel texts and tokenizers

def _script(text):
    letters = [c for c in text if c.isalpha()]
    return {unicodedata.name(c).split()[0] for c in letters}


def test_parallel_texts_are_six_parallel_sentences_in_their_scripts():
    assert list(om.PARALLEL_TEXTS) == ["English", "French", "Spanish", "Arabic", "Hindi", "Swahili"]
    assert {len(texts) for texts in om.PARALLEL_TEXTS.values()} == {6}
    assert _script(" ".join(om.PARALLEL_TEXTS["Arabic"])) == {"ARABIC"}
    assert _script(" ".join(om.PARALLEL_TEXTS["Hindi"])) == {"DEVANAGARI"}
    for language in ("English", "French", "Spanish", "Swahili"):
        assert _script(" ".join(om.PARALLEL_TEXTS[language])) == {"LATIN"}, language
    # same content: the numbers of words stay within a factor of 2 of English's
    words = {lang: sum(len(t.split()) for t in texts) for lang, texts in om.PARALLEL_TEXTS.items()}
    assert all(0.5 < n / words["English"] < 2 for n in words.values())


@pytest.fixture(scope="module")
def tokenizers():
    return om.course_tokenizers()


def test_course_tokenizers_tokenize_and_only_wordpiece_has_an_unknown_token(tokenizers):
    assert list(tokenizers) == ["MiniLM WordPiece", "SmolLM2 BPE", "GPT-2 BPE"]
    assert tokenizers["MiniLM WordPiece"].unk_token == "[UNK]"
    assert tokenizers["SmolLM2 BPE"].unk_token is None and tokenizers["GPT-2 BPE"].unk_token is None
    for tok in tokenizers.values():
        assert len(tok.tokenize("The cat sat on the mat.")) == 7


def test_wordpiece_loses_hindi_words_and_byte_level_bpes_lose_nothing(tokenizers):
    hindi = " ".join(om.PARALLEL_TEXTS["Hindi"])
    assert "[UNK]" in tokenizers["MiniLM WordPiece"].tokenize(hindi)
    from llmcourse.data import gpt2_tokenizer

    gpt2 = gpt2_tokenizer()
    assert gpt2.decode(tokenizers["GPT-2 BPE"].tokenize(hindi)) == hindi  # bytes round-trip exactly
    arabic = om.PARALLEL_TEXTS["Arabic"][0]
    assert len(tokenizers["MiniLM WordPiece"].tokenize(arabic)) > 3 * len(arabic.split())  # letter by letter
