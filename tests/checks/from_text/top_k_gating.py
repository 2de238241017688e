import math
import operator

import torch


def top_k_gating(router_logits, k):
    """(gates, indices), each (tokens, k): every token's k most probable experts, gates summing to 1."""
    k = operator.index(k)  # accepts int-like values, rejects floats
    num_experts = router_logits.shape[-1]
    if k < 1 or k > num_experts:
        raise ValueError(
            f"k must be between 1 and the number of experts ({num_experts}), got {k}"
        )
    out_dtype = router_logits.dtype
    # Compute in at least float32 so half/bfloat16 inputs stay accurate; softmax subtracts the
    # row max internally, so large logits (~100) stay finite. No in-place ops on the input.
    compute_dtype = torch.promote_types(out_dtype, torch.float32)
    probs = torch.softmax(router_logits.to(compute_dtype), dim=-1)
    top_vals, indices = torch.topk(probs, k, dim=-1, largest=True, sorted=True)
    gates = top_vals / top_vals.sum(dim=-1, keepdim=True)
    return gates.to(out_dtype), indices.to(torch.long)
