import torch


def top_k_filter(logits, k):
    """Keep the logits at least as large as the k-th largest (last dimension); the rest become -inf."""
    V = logits.shape[-1]
    k = int(k)
    if k >= V:
        return logits.clone()
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    threshold = torch.topk(logits, k, dim=-1).values[..., -1:]  # (..., 1)
    return logits.masked_fill(logits < threshold, float("-inf"))
