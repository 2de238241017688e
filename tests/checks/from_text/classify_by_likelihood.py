import torch


def _ids(tokenizer, text):
    return list(tokenizer(text, add_special_tokens=False).input_ids)


def sequence_logprob(model, input_ids, prompt_length):
    """Total log-probability of input_ids[0, prompt_length:] given what precedes each token."""
    with torch.no_grad():
        out = model(input_ids)
    logits = out.logits if hasattr(out, "logits") else out
    logp = torch.log_softmax(logits[0].float(), dim=-1)  # (T, V)
    targets = input_ids[0, prompt_length:]
    preds = logp[prompt_length - 1:-1]
    return float(preds.gather(1, targets.unsqueeze(1)).sum())


def classify_by_likelihood(model, tokenizer, prompt, labels):
    """The label whose tokens (after the prompt's) have the highest total log-probability; the first on a tie."""
    prompt_ids = _ids(tokenizer, prompt)
    best_label, best_score = None, None
    for label in labels:
        label_ids = _ids(tokenizer, " " + label)
        ids = torch.tensor([prompt_ids + label_ids], dtype=torch.long, device=model.device)
        score = sequence_logprob(model, ids, len(prompt_ids))
        if best_score is None or score > best_score:
            best_label, best_score = label, score
    return best_label
