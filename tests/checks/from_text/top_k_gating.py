import math

import torch


def top_k_gating(router_logits, k):
    """(gates, indices), each (tokens, k): every token's k most probable experts, gates summing to 1."""
    num_experts = router_logits.shape[-1]
    if isinstance(k, bool) or not isinstance(k, int):
        try:
            k_int = int(k)
        except (TypeError, ValueError):
            raise ValueError(f"k must be an integer, got {k!r}")
        if k_int != k:
            raise ValueError(f"k must be an integer, got {k!r}")
        k = k_int
    if k < 1 or k > num_experts:
        raise ValueError(f"k must be between 1 and the number of experts ({num_experts}), got {k}")

    out_dtype = router_logits.dtype
    # compute in at least float32 for half / bfloat16 inputs; softmax is max-shifted, so large logits stay finite
    compute_dtype = torch.promote_types(out_dtype, torch.float32)
    probs = torch.softmax(router_logits.to(compute_dtype), dim=-1)   # (T, E), new tensor: input untouched
    top_vals, indices = torch.topk(probs, k, dim=-1, largest=True, sorted=True)  # (T, k), largest first
    gates = top_vals / top_vals.sum(dim=-1, keepdim=True)
    return gates.to(out_dtype), indices.to(torch.long)
