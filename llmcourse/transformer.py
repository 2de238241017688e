"""Pull a BERT-family encoder apart for lesson 03: one layer's weights, a batch's embeddings, and
the Hugging Face layer's own output to compare a hand-written layer against.

Everything runs without gradients and returns detached tensors, so a lesson can change them freely.
"""

import torch


def minilm_layer_params(model, i: int) -> dict[str, torch.Tensor]:
    """The weights of encoder layer ``i`` keyed as a Hugging Face ``BertLayer`` state dict
    (``attention.self.query.weight``, ..., ``output.LayerNorm.bias``), as detached copies."""
    n_layers = len(model.encoder.layer)
    if not -n_layers <= i < n_layers:
        raise IndexError(f"layer {i} is out of range for a model with {n_layers} layers")
    return {name: t.detach().clone() for name, t in model.encoder.layer[i].state_dict().items()}


def embed_batch(tokenizer, model, sentences: list[str]):
    """``(batch, hidden_states)``: the padded tokenizer output (``input_ids``, ``token_type_ids``,
    ``attention_mask``, 1 = real token) and the embedding layer's output ``(B, T, D)``, the input of
    layer 0 (word + position + segment embeddings, then LayerNorm), both on the model's device."""
    batch = tokenizer(list(sentences), padding=True, return_tensors="pt").to(model.device)
    with torch.no_grad():
        hidden_states = model.embeddings(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"])
    return batch, hidden_states


def additive_padding_mask(attention_mask: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """``(B, T)`` 1/0 mask -> ``(B, 1, 1, T)`` mask added to the scores: 0 for real keys and the
    dtype's most negative number for padding, as Hugging Face's BERT does (no ``-inf``, so no ``nan``)."""
    keep = attention_mask[:, None, None, :].to(dtype)  # (B, 1, 1, T): broadcast over heads and queries
    return (1.0 - keep) * torch.finfo(dtype).min


def hf_layer_output(model, i: int, hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Output ``(B, T, D)`` of the model's own encoder layer ``i`` on ``hidden_states`` ``(B, T, D)``,
    with ``attention_mask`` ``(B, T)`` (1 = real token): the reference for a hand-written layer."""
    layer = model.encoder.layer[i]
    with torch.no_grad():
        additive = additive_padding_mask(attention_mask.to(model.device), hidden_states.dtype)
        out = layer(hidden_states.to(model.device), attention_mask=additive)
    return out[0] if isinstance(out, tuple) else out  # transformers 4.x returns a tuple, 5.x a tensor
