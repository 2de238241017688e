import math

import numpy as np
import torch


def weat_effect_size(X, Y, A, B):
    """Caliskan et al.'s WEAT effect size of targets X, Y and attributes A, B (one row per word)."""

    def to_unit_rows(M):
        if isinstance(M, torch.Tensor):
            t = M.detach().to(device="cpu", dtype=torch.float64)
        else:
            t = torch.as_tensor(np.asarray(M, dtype=np.float64), dtype=torch.float64)
        if t.ndim != 2:
            raise ValueError("each word set must be 2-D, one row per word")
        norms = t.norm(dim=1, keepdim=True)
        if (norms == 0).any():
            raise ValueError("a zero vector has no direction: cosine undefined")
        return t / norms

    X, Y, A, B = (to_unit_rows(M) for M in (X, Y, A, B))

    def s(W):
        # mean cosine with A minus mean cosine with B, one value per word of W
        return (W @ A.T).mean(dim=1) - (W @ B.T).mean(dim=1)

    sX, sY = s(X), s(Y)
    s_all = torch.cat([sX, sY])
    std = s_all.std()  # sample standard deviation (divide by n - 1)
    # Zero spread: every s(w) equal. Allow for floating-point rounding (e.g. B a
    # permutation of A gives s(w) equal to 0 up to ~1e-16).
    if not torch.isfinite(std) or std.item() <= 1e-12:
        raise ValueError("zero spread of s(w) over X and Y: effect size undefined")
    d = (sX.mean() - sY.mean()) / std
    return float(d.item())
