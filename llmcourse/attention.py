"""Read attention out of a Hugging Face encoder, for the lessons' plots and comparisons."""

from contextlib import contextmanager

import torch


def minilm_attentions(tokenizer, model, sentence: str):
    """``(tokens, attentions)`` for one sentence run through a BERT-family encoder.

    ``tokens`` is the list of WordPiece tokens, with ``[CLS]`` and ``[SEP]``; ``attentions`` is a
    tensor ``(layers, heads, T, T)`` on the CPU whose row ``[l, h, i]`` holds what token ``i`` attends
    to in head ``h`` of layer ``l`` (each row sums to 1). The model needs eager attention
    (``load_encoder`` sets it) so that ``output_attentions=True`` returns the weights.
    """
    encoded = tokenizer(sentence, return_tensors="pt").to(model.device)
    with torch.no_grad():
        outputs = model(**encoded, output_attentions=True)
    if not outputs.attentions or outputs.attentions[0] is None:
        raise RuntimeError("the model returned no attention weights; load it with "
                           "attn_implementation='eager'")
    tokens = tokenizer.convert_ids_to_tokens(encoded["input_ids"][0].tolist())
    return tokens, torch.stack(outputs.attentions)[:, 0].cpu()  # (layers, 1, heads, T, T) -> drop batch


@contextmanager
def _recording(model, calls: list):
    """While active, every call of the eager attention function of ``model``'s family is recorded in ``calls``."""
    import importlib

    family = importlib.import_module(type(model).__module__)
    original = getattr(family, "eager_attention_forward", None)
    if original is None or getattr(model.config, "_attn_implementation", "eager") != "eager":
        raise RuntimeError(f"{type(model).__name__} does not route its attention through an eager attention "
                           "function: load it with attn_implementation='eager' (load_encoder does)")

    def record(module, query, key, value, attention_mask, *args, **kwargs):
        calls.append((query.detach(), key.detach(), value.detach()))
        return original(module, query, key, value, attention_mask, *args, **kwargs)

    family.eager_attention_forward = record
    try:
        yield calls
    finally:
        family.eager_attention_forward = original


def per_head_qkv(model, inputs) -> list:
    """What each layer's attention receives: run ``model`` (a BERT-family encoder with eager attention) on
    ``inputs`` (a tokenizer's output) and return one ``(q, k, v)`` per layer, each ``(B, heads, T, head size)``,
    the queries, keys and values as the model itself projected and split them into heads (on the model's
    device, detached)."""
    calls = []
    with torch.no_grad(), _recording(model, calls):
        model(**inputs.to(model.device))
    if len(calls) != model.config.num_hidden_layers:
        raise RuntimeError(f"recorded {len(calls)} attention calls for {model.config.num_hidden_layers} layers")
    return calls
