"""What an exercise forbids (grader/forbidden.py): refused when the learner's code calls it, under every
obvious alias, in a notebook check and in `llmcourse check`; library code that calls it keeps working.
"""

import re
from pathlib import Path

import nbformat
import pytest
import torch
import torch.nn.functional as F
from chapter_contract import own_layer_norm, own_softmax
from nbformat.v4 import new_code_cell, new_notebook
from torch import nn

import grader
from grader import check
from grader.forbidden import SOFTMAX, ForbiddenCall, enforced, not_enforced

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- softmax, under every alias

def softmax_torch(x, dim=-1):
    return torch.softmax(x, dim=dim)


def softmax_method(x, dim=-1):
    return x.softmax(dim)


def softmax_functional(x, dim=-1):
    return F.softmax(x, dim=dim)


def softmax_functional_long_name(x, dim=-1):
    return torch.nn.functional.softmax(x, dim=dim)


def softmax_special(x, dim=-1):
    return torch.special.softmax(x, dim)


def softmax_module(x, dim=-1):
    return nn.Softmax(dim=dim)(x)


def softmax_log_softmax_exp(x, dim=-1):
    return torch.log_softmax(x, dim=dim).exp()


from torch.nn.functional import softmax as early_bound_softmax  # noqa: E402  (bound before any check runs)


def softmax_imported_by_name(x, dim=-1):
    return early_bound_softmax(x, dim=dim)


def softmax_caught_and_hidden(x, dim=-1):
    """Tries the forbidden call, swallows the refusal, falls back to a correct softmax: still refused."""
    try:
        return torch.softmax(x, dim=dim)
    except Exception:
        return own_softmax(x, dim)


SOFTMAX_ALIASES = [softmax_torch, softmax_method, softmax_functional, softmax_functional_long_name, softmax_special,
                   softmax_module, softmax_log_softmax_exp, softmax_imported_by_name, softmax_caught_and_hidden]


@pytest.mark.parametrize("fn", SOFTMAX_ALIASES, ids=lambda f: f.__name__)
def test_softmax_refuses_every_alias_with_what_to_use_instead(fn):
    result = check("softmax", fn)
    assert not result.passed
    assert result.mistakes == {SOFTMAX.mistake: len(result.cases)}, result.feedback
    assert "use `exp`, `max` and `sum`" in result.feedback
    assert result.feedback.count("Likely mistake") == 1


def test_the_refusal_names_the_module_the_learner_called():
    result = check("softmax", softmax_module)
    assert "`nn.Softmax` (it calls `F.softmax`)" in result.feedback


def sdpa_with_torch(q, k, v, mask=None):
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    scores = q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return out, own_softmax(scores)


def self_attention_with_torch(x, w_q, w_k, w_v, mask=None):
    q, k, v = x @ w_q, x @ w_k, x @ w_v
    scores = q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return weights @ v, weights


@pytest.mark.parametrize("name, fn, called", [
    ("scaled_dot_product_attention", sdpa_with_torch, "F.scaled_dot_product_attention"),
    ("self_attention", self_attention_with_torch, "torch.softmax"),
])
def test_attention_exercises_refuse_the_library_attention_and_softmax(name, fn, called):
    result = check(name, fn)
    assert not result.passed
    assert list(result.mistakes) == [f"calls `{called}`, which this exercise asks you to build yourself"]


# ---------------------------------------------------------------- chapter 03

def mha_module(query, key, value, params, n_heads, mask=None):
    mha = nn.MultiheadAttention(query.shape[-1], n_heads, batch_first=True)
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([params["w_q"], params["w_k"], params["w_v"]]))
        mha.in_proj_bias.copy_(torch.cat([params["b_q"], params["b_k"], params["b_v"]]))
        mha.out_proj.weight.copy_(params["w_o"])
        mha.out_proj.bias.copy_(params["b_o"])
    B, Tq, Tk = query.shape[0], query.shape[1], key.shape[1]
    attn_mask = None if mask is None else ~mask.expand(B, n_heads, Tq, Tk).reshape(B * n_heads, Tq, Tk)
    return mha.eval()(query, key, value, attn_mask=attn_mask, need_weights=False)[0]


def mha_functional(query, key, value, params, n_heads, mask=None):
    p, (B, Tq, D), Tk = params, query.shape, key.shape[1]
    attn_mask = None if mask is None else ~mask.expand(B, n_heads, Tq, Tk).reshape(B * n_heads, Tq, Tk)
    out, _ = F.multi_head_attention_forward(
        query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1), D, n_heads,
        torch.cat([p["w_q"], p["w_k"], p["w_v"]]), torch.cat([p["b_q"], p["b_k"], p["b_v"]]),
        None, None, False, 0.0, p["w_o"], p["b_o"], training=False, need_weights=False, attn_mask=attn_mask)
    return out.transpose(0, 1)


def layer_norm_functional(x, weight, bias, eps=1e-5):
    return F.layer_norm(x, x.shape[-1:], weight, bias, eps)


def layer_norm_torch_namespace(x, weight, bias, eps=1e-5):
    return torch.layer_norm(x, x.shape[-1:], weight, bias, eps)


def layer_norm_module(x, weight, bias, eps=1e-5):
    ln = nn.LayerNorm(x.shape[-1], eps=eps)
    with torch.no_grad():
        ln.weight.copy_(weight)
        ln.bias.copy_(bias)
    return ln(x)


def hugging_faces_bert_layer(width, params, n_heads, eps):
    """Hugging Face's BertLayer holding ``params``, in eval mode."""
    from transformers import BertConfig
    from transformers.models.bert.modeling_bert import BertLayer

    config = BertConfig(hidden_size=width, num_attention_heads=n_heads,
                        intermediate_size=params["intermediate.dense.weight"].shape[0], layer_norm_eps=eps,
                        attn_implementation="eager")
    layer = BertLayer(config).eval()
    layer.load_state_dict(params)
    return layer


def bert_layer_hugging_face(hidden_states, attention_mask, params, n_heads, eps=1e-12):
    layer = hugging_faces_bert_layer(hidden_states.shape[-1], params, n_heads, eps)
    additive = (1.0 - attention_mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
    out = layer(hidden_states, attention_mask=additive)
    return out[0] if isinstance(out, tuple) else out


def bert_layer_with_torch_layer_norm(hidden_states, attention_mask, params, n_heads, eps=1e-12):
    """Everything by hand but the LayerNorms: bert_layer forbids F.layer_norm too."""
    p, x = params, hidden_states
    B, T, D = x.shape

    def heads(name):
        return F.linear(x, p[f"attention.self.{name}.weight"], p[f"attention.self.{name}.bias"]) \
            .view(B, T, n_heads, -1).transpose(1, 2)

    out = F.scaled_dot_product_attention(heads("query"), heads("key"), heads("value"),
                                         attn_mask=attention_mask.bool()[:, None, None, :])
    attn = F.linear(out.transpose(1, 2).reshape(B, T, D), p["attention.output.dense.weight"],
                    p["attention.output.dense.bias"])
    h = F.layer_norm(x + attn, (D,), p["attention.output.LayerNorm.weight"], p["attention.output.LayerNorm.bias"], eps)
    ff = F.linear(F.gelu(F.linear(h, p["intermediate.dense.weight"], p["intermediate.dense.bias"])),
                  p["output.dense.weight"], p["output.dense.bias"])
    return F.layer_norm(h + ff, (D,), p["output.LayerNorm.weight"], p["output.LayerNorm.bias"], eps)


@pytest.mark.parametrize("name, fn, forbidden, shown", [
    ("multi_head_attention", mha_module, "nn.MultiheadAttention", "nn.MultiheadAttention"),
    ("multi_head_attention", mha_functional, "nn.MultiheadAttention", "F.multi_head_attention_forward"),
    ("layer_norm", layer_norm_functional, "F.layer_norm", "F.layer_norm"),
    ("layer_norm", layer_norm_torch_namespace, "F.layer_norm", "torch.layer_norm"),
    ("layer_norm", layer_norm_module, "F.layer_norm", "nn.LayerNorm"),
    ("bert_layer", bert_layer_hugging_face, "BertLayer", "BertLayer"),
    ("bert_layer", bert_layer_with_torch_layer_norm, "F.layer_norm", "F.layer_norm"),
], ids=lambda v: v if isinstance(v, str) else v.__name__)
def test_chapter_03_refuses_the_modules_it_rebuilds(name, fn, forbidden, shown):
    result = check(name, fn)
    assert not result.passed
    assert list(result.mistakes) == [f"calls `{forbidden}`, which this exercise asks you to build yourself"], \
        result.feedback
    assert f"`{shown}`" in result.feedback


def test_chapter_03_allows_what_chapter_02_taught():
    """multi_head_attention may use F.scaled_dot_product_attention and torch.softmax (chapter 02's)."""
    def mha_sdpa(query, key, value, params, n_heads, mask=None):
        p, (B, Tq, D) = params, query.shape

        def heads(t, n):
            return F.linear(t, p[f"w_{n}"], p[f"b_{n}"]).view(B, -1, n_heads, D // n_heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(heads(query, "q"), heads(key, "k"), heads(value, "v"), attn_mask=mask)
        return F.linear(out.transpose(1, 2).reshape(B, Tq, D), p["w_o"], p["b_o"])

    assert check("multi_head_attention", mha_sdpa).passed
    assert check("layer_norm", own_layer_norm).passed


# ---------------------------------------------------------------- library code keeps working

def test_library_code_may_call_a_forbidden_function_inside_a_check():
    """A Hugging Face model calls softmax in its attention; inside the guard it still runs."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    model = BertModel(BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                 vocab_size=50, attn_implementation="eager")).eval()
    ids = torch.randint(0, 50, (1, 5))
    with torch.no_grad():
        expected = model(ids).last_hidden_state
        with enforced((SOFTMAX,)) as hits:
            got = model(ids).last_hidden_state  # the model's own softmax calls are allowed
            with pytest.raises(ForbiddenCall, match="torch.softmax"):
                torch.softmax(got, dim=-1)  # this test's own call is the learner's
    torch.testing.assert_close(got, expected)
    assert len(hits) == 1


def test_the_guards_are_gone_after_a_check():
    originals = (torch.softmax, F.softmax, torch.Tensor.softmax, F.layer_norm)
    check("softmax", softmax_torch)
    check("layer_norm", layer_norm_module)
    assert (torch.softmax, F.softmax, torch.Tensor.softmax, F.layer_norm) == originals
    assert "softmax" not in vars(torch.Tensor)  # the method is inherited again, not shadowed
    assert early_bound_softmax is F.softmax  # a learner's own binding is restored too


def test_not_enforced_judges_the_output_alone():
    with not_enforced():
        assert check("softmax", softmax_torch).passed


# ---------------------------------------------------------------- in the child process (`llmcourse check`)

def test_llmcourse_check_refuses_a_forbidden_call(tmp_path):
    from grader.isolated import check_notebook

    nb = tmp_path / "02-mine.ipynb"
    nbformat.write(new_notebook(cells=[new_code_cell("import torch\nimport torch.nn.functional as F"),
                                       new_code_cell("def softmax(x, dim=-1):\n    return F.softmax(x, dim=dim)")]),
                   nb)
    (result,) = check_notebook(nb, ["softmax"])
    assert not result.passed
    assert list(result.mistakes) == [SOFTMAX.mistake]
    assert "`F.softmax` is what this exercise builds" in result.feedback


# ---------------------------------------------------------------- the exercise text says it

def _chapters_with_forbidden():
    from grader.checks import register_all

    register_all()
    return sorted({ex.chapter for ex in grader.core.REGISTRY.values() if ex.forbidden})


@pytest.mark.parametrize("chapter", _chapters_with_forbidden())
def test_each_exercise_text_names_what_it_forbids(chapter):
    (source,) = (ROOT / "solutions").glob(f"{chapter}-*/{chapter}-*.ipynb")
    cells = {c.metadata.get("nbgrader", {}).get("grade_id"): c.source for c in nbformat.read(source, 4).cells}
    for exercise in grader.exercises_of(chapter):
        intro = cells[f"{exercise.name}_intro"]
        for item in exercise.forbidden:
            assert f"`{item.name}`" in intro, f"{source.name}: the text of {exercise.name} does not name {item.name}"


def test_readme_lists_what_every_exercise_forbids():
    from grader.checks import register_all

    register_all()
    readme = (ROOT / "README.md").read_text()
    for exercise in grader.core.REGISTRY.values():
        if exercise.forbidden:
            row = re.search(rf"^\| `{exercise.name}` \|(.*)$", readme, flags=re.M)
            assert row, f"README's table of forbidden functions has no row for {exercise.name}"
            for item in exercise.forbidden:
                assert f"`{item.name}`" in row.group(1), f"README: {exercise.name} should list {item.name}"


def test_absmax_quantize_refuses_torchs_quantizer():
    def absmax_quantize(w, bits=8, block_size=None):
        scale = w.abs().max().item() / (2 ** (bits - 1) - 1)
        return torch.quantize_per_tensor(w, scale, 0, torch.qint8).int_repr(), scale

    result = check("absmax_quantize", absmax_quantize)
    assert list(result.mistakes) == ["calls `torch.quantize_per_tensor`, which this exercise asks you to build yourself"]


def test_absmax_quantize_refuses_the_lessons_helpers_and_torchs_observer():
    from torch.ao.quantization.observer import MinMaxObserver

    from llmcourse import open_models

    def with_helper(w, bits=8, block_size=None):
        scale = open_models.absmax_scale(w, bits, block_size)
        return torch.round(w / scale).to(torch.int8), scale

    def with_observer(w, bits=8, block_size=None):
        observer = MinMaxObserver(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)
        observer(w)
        scale = observer.calculate_qparams()[0].item()
        return torch.round(w / scale).to(torch.int8), scale

    assert ("calls `llmcourse.open_models.absmax_round_trip`, which this exercise asks you to build yourself"
            in check("absmax_quantize", with_helper).mistakes)
    assert ("calls `torch.quantize_per_tensor`, which this exercise asks you to build yourself"
            in check("absmax_quantize", with_observer).mistakes)


def test_dequantize_refuses_torchs_quantized_tensors():
    def dequantize(q, scale, block_size=None):
        return torch._make_per_tensor_quantized_tensor(q, scale, 0).dequantize()

    assert "calls `torch.dequantize`, which this exercise asks you to build yourself" in check("dequantize",
                                                                                             dequantize).mistakes


def test_the_filters_refuse_hugging_faces_warpers():
    from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

    def top_k_filter(logits, k):
        return TopKLogitsWarper(top_k=k)(None, logits)

    def top_p_filter(logits, p):
        return TopPLogitsWarper(top_p=p)(None, logits)

    for name, fn, warper in [("top_k_filter", top_k_filter, "TopKLogitsWarper"),
                             ("top_p_filter", top_p_filter, "TopPLogitsWarper")]:
        result = check(name, fn)
        assert list(result.mistakes) == [f"calls `{warper}`, which this exercise asks you to build yourself"], \
            result.feedback


def test_sample_next_token_refuses_hugging_faces_warpers_the_lesson_samples_with():
    from transformers.generation.logits_process import TopKLogitsWarper

    def sample_next_token(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
        if temperature == 0:
            return int(logits.argmax())
        logits = logits / temperature
        if top_k is not None:
            logits = TopKLogitsWarper(top_k=top_k)(None, logits[None])[0]
        return torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator).item()

    result = check("sample_next_token", sample_next_token)
    assert "calls `TopKLogitsWarper`, which this exercise asks you to build yourself" in result.mistakes, \
        result.feedback


def test_chapter_07_refuses_the_lessons_helpers():
    """Each exercise of chapter 07 refuses the helper that computes its answer in the lesson."""
    from llmcourse import moe
    from llmcourse.tinygpt import GPTConfig

    def top_k_gating(router_logits, k):
        if not 1 <= k <= router_logits.shape[-1]:
            raise ValueError(f"k = {k}")
        _, gates, experts = moe.router_gates(router_logits, k)
        return gates, experts

    def moe_forward(x, router_weight, experts, k):
        return moe.MoEFeedForward(GPTConfig(n_embd=x.shape[-1]), n_experts=len(experts), k=k)(x[None])[0]

    def load_balancing_loss(router_logits, n_experts):
        from transformers.models.switch_transformers.modeling_switch_transformers import load_balancing_loss_func

        return load_balancing_loss_func(router_logits.softmax(-1)[None], router_logits.argmax(-1)[None])

    def load_balancing_loss_by_the_layer(router_logits, n_experts):
        layer = moe.MoEFeedForward(GPTConfig(n_embd=n_experts), n_experts=n_experts, k=1)
        with torch.no_grad():
            layer.router.weight.copy_(torch.eye(n_experts))
        layer(router_logits[None])
        return layer.aux_loss

    def moe_param_counts(d_model, d_ff, n_experts, k, n_layers, moe_every=2):
        counts = moe.feed_forward_params(d_model, d_ff, n_experts, k, n_layers, moe_every)
        return counts["total"], counts["active"]

    def pipeline_schedule(n_stages, n_microbatches, schedule="gpipe"):
        return moe.gpipe_schedule(n_stages, n_microbatches)

    for name, fn, called in [("top_k_gating", top_k_gating, "llmcourse.moe.router_gates"),
                             ("moe_forward", moe_forward, "llmcourse.moe.MoEFeedForward"),
                             ("load_balancing_loss", load_balancing_loss, "load_balancing_loss_func"),
                             ("load_balancing_loss", load_balancing_loss_by_the_layer, "llmcourse.moe.MoEFeedForward"),
                             ("moe_param_counts", moe_param_counts, "llmcourse.moe.feed_forward_params"),
                             ("pipeline_schedule", pipeline_schedule, "llmcourse.moe.gpipe_schedule")]:
        result = check(name, fn)
        assert list(result.mistakes) == [f"calls `{called}`, which this exercise asks you to build yourself"], \
            (name, result.feedback)


def test_pronoun_log_odds_refuses_the_lessons_helper():
    def pronoun_log_odds(model, tokenizer, prompts):
        from llmcourse.bias import last_token_logprobs

        he = tokenizer.encode(" he", add_special_tokens=False)[0]
        she = tokenizer.encode(" she", add_special_tokens=False)[0]
        logprobs = last_token_logprobs(model, tokenizer, prompts)  # (N, V)
        return (logprobs[:, he] - logprobs[:, she]).tolist()

    with not_enforced():  # the helper runs Hugging Face's generate, which the check's toy models do not have
        assert not any(case.passed for case in check("pronoun_log_odds", pronoun_log_odds).cases)
    result = check("pronoun_log_odds", pronoun_log_odds)  # the guard names it before that fails
    assert list(result.mistakes) == ["calls `llmcourse.bias.last_token_logprobs`, which this exercise asks you to "
                                     "build yourself"]


def test_weat_effect_size_refuses_the_lessons_helper():
    def weat_effect_size(X, Y, A, B):
        from llmcourse.bias import weat_test

        return weat_test(X, Y, A, B, n_permutations=100)["d"]

    with not_enforced():  # the helper answers every case but the zero spread (NaN): the guard stops it
        assert sum(case.passed for case in check("weat_effect_size", weat_effect_size).cases) >= 4
    result = check("weat_effect_size", weat_effect_size)
    assert list(result.mistakes) == ["calls `llmcourse.bias.weat_test`, which this exercise asks you to build yourself"]


def _gpt2_directly(config):
    from transformers import GPT2LMHeadModel

    return GPT2LMHeadModel(config)


def _gpt2_by_the_auto_class(config):  # GPT2LMHeadModel.__init__ is then called from transformers' own code
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_config(config)


@pytest.mark.parametrize("build", [_gpt2_directly, _gpt2_by_the_auto_class], ids=["directly", "from_config"])
def test_transformer_param_count_refuses_building_the_model_to_count_it(build):
    def transformer_param_count(n_layers, d_model, vocab_size, n_positions, d_ff=None):
        from transformers import GPT2Config

        config = GPT2Config(n_layer=n_layers, n_embd=d_model, n_head=1, vocab_size=vocab_size,
                            n_positions=n_positions, n_inner=d_ff)
        with torch.device("meta"):
            return sum(p.numel() for p in build(config).parameters())

    with not_enforced():  # the library's own count answers every case: only the guard stops it
        assert check("transformer_param_count", transformer_param_count).passed
    result = check("transformer_param_count", transformer_param_count)
    assert list(result.mistakes) == ["calls `GPT2LMHeadModel`, which this exercise asks you to build yourself"]


def test_attention_refuses_the_attention_functions_hugging_faces_models_call():
    def scaled_dot_product_attention(q, k, v, mask=None):
        from transformers.models.bert.modeling_bert import eager_attention_forward

        additive = None if mask is None else torch.zeros(mask.shape, dtype=q.dtype).masked_fill(~mask, float("-inf"))
        shape = q.shape[:-2]
        flat = [t.reshape(-1, 1, *t.shape[-2:]) for t in (q, k, v)]  # (batch, 1 head, L, d)
        if additive is not None:
            additive = additive.expand(*shape, q.shape[-2], k.shape[-2]).reshape(-1, 1, q.shape[-2], k.shape[-2])
        out, weights = eager_attention_forward(nn.Module().eval(), *flat, additive, scaling=q.shape[-1] ** -0.5)
        return out.transpose(1, 2).reshape(*shape, q.shape[-2], v.shape[-1]), weights.reshape(*shape, *weights.shape[-2:])

    with not_enforced():
        assert check("scaled_dot_product_attention", scaled_dot_product_attention).passed
    result = check("scaled_dot_product_attention", scaled_dot_product_attention)
    assert list(result.mistakes) == ["calls `F.scaled_dot_product_attention`, which this exercise asks you to build "
                                     "yourself"], result.feedback


def test_moe_param_counts_refuses_building_linear_layers_to_count_them():
    def moe_param_counts(d_model, d_ff, n_experts, k, n_layers, moe_every=2):
        with torch.device("meta"):  # the lesson's counter, pasted
            ffn = sum(p.numel() for p in nn.Sequential(nn.Linear(d_model, d_ff), nn.Linear(d_ff, d_model)).parameters())
        n_moe = n_layers // moe_every
        return (n_layers - n_moe) * ffn + n_moe * n_experts * ffn, (n_layers - n_moe) * ffn + n_moe * k * ffn

    with not_enforced():
        assert check("moe_param_counts", moe_param_counts).passed
    result = check("moe_param_counts", moe_param_counts)
    assert list(result.mistakes) == ["calls `nn.Linear`, which this exercise asks you to build yourself"], \
        result.feedback


def test_plan_training_refuses_the_lessons_cost_helpers():
    def plan_training(models, n_devices, peak_flops_per_device, utilization, days, tokens_per_param=20.0):
        from llmcourse.timeline import days_to_train, dense_training_flops

        if not 0 < utilization <= 1:
            raise ValueError("utilization is a fraction")
        plan = {}
        for name, n in sorted(models.items(), key=lambda item: item[1], reverse=True):
            # days for one token per parameter... then as many tokens as the days allow
            tokens = n * days / days_to_train(dense_training_flops(n, n), n_devices, peak_flops_per_device,
                                              utilization) if days else 0.0
            if days and tokens >= tokens_per_param * n:
                plan[name] = tokens
        return plan

    with not_enforced():  # the helpers answer every case: only the guard stops them
        assert check("plan_training", plan_training).passed
    result = check("plan_training", plan_training)
    assert list(result.mistakes) == ["calls `llmcourse.timeline.days_to_train`, which this exercise asks you to "
                                     "build yourself"]


def test_semantic_search_refuses_the_lessons_ranking():
    def semantic_search(query_embedding, document_embeddings, k):
        from llmcourse.search import ranking

        similarities = F.cosine_similarity(document_embeddings, query_embedding[None], dim=-1)
        return ranking(similarities)[:k]

    def semantic_search_by_dot_products(query_embedding, document_embeddings, k):
        from llmcourse.search import ranking

        unit = document_embeddings / document_embeddings.norm(dim=-1, keepdim=True)
        return ranking(unit @ (query_embedding / query_embedding.norm()))[:k]

    with not_enforced():  # the library's cosine and the helper's stable sort answer it: only the guards stop it
        assert sum(case.passed for case in check("semantic_search", semantic_search).cases) >= 2
    result = check("semantic_search", semantic_search)
    assert list(result.mistakes) == ["calls `F.cosine_similarity`, which this exercise asks you to build yourself"]
    result = check("semantic_search", semantic_search_by_dot_products)
    assert list(result.mistakes) == ["calls `llmcourse.search.ranking`, which this exercise asks you to "
                                     "build yourself"]


def test_mask_tokens_refuses_hugging_faces_collator():
    def mask_tokens(input_ids, special_tokens_mask, mask_token_id, vocab_size, mlm_probability=0.15, generator=None):
        from transformers import DataCollatorForLanguageModeling

        class Vocabulary:  # what the collator reads of a tokenizer
            mask_token, pad_token = "[MASK]", "[PAD]"

            def convert_tokens_to_ids(self, token):
                return mask_token_id

            def __len__(self):
                return vocab_size

        collator = DataCollatorForLanguageModeling(Vocabulary(), mlm_probability=mlm_probability)
        collator.generator = generator
        return collator.torch_mask_tokens(input_ids.clone(), special_tokens_mask)

    with not_enforced():
        assert sum(case.passed for case in check("mask_tokens", mask_tokens).cases) >= 2
    result = check("mask_tokens", mask_tokens)
    assert list(result.mistakes) == ["calls `DataCollatorForLanguageModeling`, which this exercise asks you to "
                                     "build yourself"]


def test_bert_layer_refuses_the_lessons_reference_layer():
    def bert_layer(hidden_states, attention_mask, params, n_heads, eps=1e-12):
        from types import SimpleNamespace

        from llmcourse.transformer import hf_layer_output

        layer = hugging_faces_bert_layer(hidden_states.shape[-1], params, n_heads, eps)
        model = SimpleNamespace(encoder=SimpleNamespace(layer=[layer]), device=hidden_states.device)
        return hf_layer_output(model, 0, hidden_states, attention_mask)

    with not_enforced():  # the helper runs Hugging Face's layer from a library frame: it would pass
        assert check("bert_layer", bert_layer).passed
    result = check("bert_layer", bert_layer)
    assert list(result.mistakes) == ["calls `llmcourse.transformer.hf_layer_output`, which this exercise asks you "
                                     "to build yourself"], result.feedback


def softmax_through_attention(x, dim=-1):
    """softmax(x) as the weights of one query of ones against keys x, read out with identity values."""
    x = x.movedim(dim, -1)
    q = torch.ones(*x.shape[:-1], 1, 1, dtype=x.dtype)
    out = F.scaled_dot_product_attention(q, x.unsqueeze(-1), torch.eye(x.shape[-1], dtype=x.dtype), scale=1.0)
    return out.squeeze(-2).movedim(-1, dim)


def causal_mask_through_attention(n):
    """The lesson's reading of PyTorch's causal weights: the keys that kept any weight."""
    return F.scaled_dot_product_attention(torch.zeros(n, 1), torch.zeros(n, 1), torch.eye(n), is_causal=True) > 0


@pytest.mark.parametrize("name, fn", [("softmax", softmax_through_attention),
                                      ("causal_mask", causal_mask_through_attention)])
def test_softmax_and_causal_mask_refuse_the_library_attention(name, fn):
    with not_enforced():  # PyTorch's attention answers both: the guard stops it
        assert check(name, fn).passed
    result = check(name, fn)
    assert list(result.mistakes) == ["calls `F.scaled_dot_product_attention`, which this exercise asks you to build "
                                     "yourself"], result.feedback


def _peft_add_lora(model, target_modules, r, alpha, generator):
    from peft import LoraConfig, get_peft_model

    get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, target_modules=list(target_modules)))
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _peft_layer_add_lora(model, target_modules, r, alpha, generator):
    from peft.tuners.lora import Linear as LoraLinear

    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)
             and any(n == t or n.endswith("." + t) for t in target_modules)]
    model.requires_grad_(False)
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, LoraLinear(getattr(parent, child), "default", r=r, lora_alpha=alpha))
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("fn, called", [(_peft_add_lora, "peft.get_peft_model"),
                                        (_peft_layer_add_lora, "peft.tuners.lora.Linear")],
                         ids=["get_peft_model", "lora-layer"])
def test_add_lora_refuses_peft(fn, called):
    """The course does not depend on peft (the check skips without it); where a learner has it, it is refused."""
    pytest.importorskip("peft")
    result = check("add_lora", fn)
    assert list(result.mistakes) == [f"calls `{called}`, which this exercise asks you to build yourself"], \
        result.feedback
