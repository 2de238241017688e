"""Read attention weights out of a Hugging Face encoder, for the lessons' plots."""

import torch


def minilm_attentions(tokenizer, model, sentence: str):
    """``(tokens, attentions)`` for one sentence run through a BERT-family encoder.

    ``tokens`` is the list of WordPiece tokens, with ``[CLS]`` and ``[SEP]``; ``attentions`` is a
    tensor ``(layers, heads, T, T)`` whose row ``[l, h, i]`` holds what token ``i`` attends to in
    head ``h`` of layer ``l`` (each row sums to 1). The model needs eager attention
    (``load_encoder`` sets it) so that ``output_attentions=True`` returns the weights.
    """
    encoded = tokenizer(sentence, return_tensors="pt")
    with torch.no_grad():
        outputs = model(**encoded, output_attentions=True)
    if not outputs.attentions or outputs.attentions[0] is None:
        raise RuntimeError("the model returned no attention weights; load it with "
                           "attn_implementation='eager'")
    tokens = tokenizer.convert_ids_to_tokens(encoded["input_ids"][0])
    return tokens, torch.stack(outputs.attentions)[:, 0]  # (layers, 1, heads, T, T) -> drop batch
