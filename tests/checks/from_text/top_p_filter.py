import torch


def top_p_filter(logits, p):
    """Keep the smallest set of most probable tokens whose probability sums to at least p (ties kept); rest -inf."""
    if p >= 1:
        return logits.clone()
    probs = torch.softmax(logits.float(), dim=-1)
    sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
    # total probability of the tokens before each one in sorted order
    before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
    keep_sorted = before < p
    keep_sorted[..., 0] = True  # the most probable token always stays
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    # ties: keep every token as probable as the least probable kept one
    min_kept = torch.where(keep, probs, torch.full_like(probs, float("inf"))).amin(dim=-1, keepdim=True)
    keep = keep | (probs >= min_kept)
    # a logit already -inf stays -inf
    keep = keep & (logits != float("-inf"))
    return logits.masked_fill(~keep, float("-inf"))
