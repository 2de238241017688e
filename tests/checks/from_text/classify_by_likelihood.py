import torch


def _logits(out):
    """Accept a raw logits tensor or a Hugging Face output with `.logits`."""
    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "logits"):
        return out.logits
    if isinstance(out, (tuple, list)):
        return out[0]
    return out


def sequence_logprob(model, input_ids, prompt_length):
    """Total log-probability of the tokens of input_ids after the first prompt_length ones."""
    if input_ids.dim() == 1:
        input_ids = input_ids.unsqueeze(0)
    with torch.no_grad():
        logits = _logits(model(input_ids))
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    logp = torch.log_softmax(logits, dim=-1)  # (B, T, V)
    # the logits at position t predict the token at position t + 1
    targets = input_ids[:, 1:]
    token_logp = logp[:, :-1, :].gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (B, T - 1)
    start = max(int(prompt_length) - 1, 0)
    return token_logp[:, start:].sum(dim=-1).squeeze(0)


def _encode(tokenizer, text):
    ids = tokenizer(text, add_special_tokens=False).input_ids
    if isinstance(ids, torch.Tensor):
        ids = ids.reshape(-1).tolist()
    elif ids and isinstance(ids[0], (list, tuple)):
        ids = list(ids[0])
    return list(ids)


def _device(model):
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration, TypeError):
        return torch.device("cpu")


def classify_by_likelihood(model, tokenizer, prompt, labels):
    """The label whose tokens (after the prompt's) have the highest total log-probability; the first on a tie."""
    prompt_ids = _encode(tokenizer, prompt)
    device = _device(model)
    best_label, best_score = None, None
    for label in labels:
        label_ids = _encode(tokenizer, " " + label)
        ids = torch.tensor([prompt_ids + label_ids], dtype=torch.long, device=device)
        score = float(sequence_logprob(model, ids, len(prompt_ids)))
        if best_score is None or score > best_score:
            best_label, best_score = label, score
    return best_label
