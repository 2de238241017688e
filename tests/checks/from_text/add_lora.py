import math

import torch
from torch import nn
import torch.nn.functional as F


class LoRALinear(nn.Module):
    """A frozen nn.Linear plus a trainable low-rank update (alpha / r) B A."""

    def __init__(self, base, r, alpha, generator):
        super().__init__()
        self.base = base
        self.r = r
        self.scale = alpha / r
        d_out, d_in = base.weight.shape
        weight = base.weight
        A = torch.randn(r, d_in, generator=generator) / math.sqrt(d_in)
        self.A = nn.Parameter(A.to(device=weight.device, dtype=weight.dtype))
        self.B = nn.Parameter(torch.zeros(d_out, r, device=weight.device, dtype=weight.dtype))

    def forward(self, x):
        return self.base(x) + self.scale * F.linear(F.linear(x, self.A), self.B)


def _matches(name, target):
    return name == target or name.endswith("." + target)


def add_lora(model, target_modules, r, alpha, generator):
    """Replace the targeted nn.Linear layers by frozen layer + (alpha / r) B A; freeze the rest; trainable count."""
    targets = list(target_modules)
    names = []
    matched = set()
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        hits = [t for t in targets if _matches(name, t)]
        if hits:
            names.append(name)
            matched.update(hits)
    missing = [t for t in targets if t not in matched]
    if missing:
        raise ValueError(f"add_lora: target(s) {missing!r} match no nn.Linear of the model")

    model.requires_grad_(False)

    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        base = getattr(parent, child)
        setattr(parent, child, LoRALinear(base, r, alpha, generator))

    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))
