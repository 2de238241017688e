import math

import numpy as np
import torch


def weat_effect_size(X, Y, A, B):
    """Caliskan et al.'s WEAT effect size of targets X, Y and attributes A, B (one row per word)."""
    def as64(M):
        if isinstance(M, torch.Tensor):
            return M.detach().cpu().to(torch.float64)
        return torch.as_tensor(np.asarray(M), dtype=torch.float64)

    def unit(M):
        return M / M.norm(dim=1, keepdim=True)

    X, Y, A, B = (unit(as64(M)) for M in (X, Y, A, B))

    def s(W):
        return (W @ A.T).mean(dim=1) - (W @ B.T).mean(dim=1)

    sx, sy = s(X), s(Y)
    allv = torch.cat([sx, sy])
    std = allv.std(unbiased=True)
    if not torch.isfinite(std) or float(std) == 0.0:
        raise ValueError("zero spread: WEAT effect size undefined")
    return float((sx.mean() - sy.mean()) / std)
