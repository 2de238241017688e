"""A small GPT for CPU experiments (lessons 07 and 08): model, character tokenizer, training loop, evaluation.

nanoGPT-style and pre-LN: token + position embeddings, ``n_layer`` blocks of causal self-attention
(``F.scaled_dot_product_attention(is_causal=True)``) and a feed-forward module, a final LayerNorm and
an output layer tied to the token embedding. The feed-forward module of each block comes from
``ffn_factory(config)`` (default: the 4x GELU MLP), so lesson 07 can plug in a mixture of experts.

A module may set a tensor attribute ``aux_loss`` during its forward pass (a load-balancing loss, for
example): ``train`` adds ``aux_weight`` times their sum to the language-modelling loss.
"""

import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

# training defaults: small models on a CPU like a large learning rate and a short warm-up
LEARNING_RATE = 3e-3
WARMUP_FRACTION = 0.05
MIN_LR_FRACTION = 0.1  # cosine decay ends at this fraction of the peak learning rate
WEIGHT_DECAY = 0.01
GRAD_CLIP = 1.0


@dataclass
class GPTConfig:
    vocab_size: int = 96
    block_size: int = 64  # context length T
    n_layer: int = 2
    n_head: int = 2
    n_embd: int = 32  # d_model

    def as_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------- the model

class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention: one Linear for q, k, v, PyTorch's fused attention, an output Linear."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        if config.n_embd % config.n_head:
            raise ValueError(f"n_embd {config.n_embd} is not divisible by n_head {config.n_head}")
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)

    def forward(self, x):
        # c_attn's 3C outputs are q, k and v one after the other, each head's hs features in a row:
        # (B, T, 3C) -> (B, T, 3, nh, hs) -> (3, B, nh, T, hs), the layout scaled_dot_product_attention takes
        q, k, v = self.c_attn(x).unflatten(-1, (3, self.n_head, -1)).permute(2, 0, 3, 1, 4).unbind(0)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, nh, T, hs)
        # the output projection reads every head's hs features: its weight seen as (C, nh, hs) sums over both
        w_o = self.c_proj.weight.unflatten(1, (self.n_head, -1))  # (C, nh, hs)
        return torch.einsum("bhtd,chd->btc", y, w_o) + self.c_proj.bias  # (B, T, C)


class MLP(nn.Module):
    """The dense feed-forward network: d_model -> 4 d_model -> d_model with GELU."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x)))


class Block(nn.Module):
    """Pre-LN block: x + attn(ln(x)), then x + ffn(ln(x))."""

    def __init__(self, config: GPTConfig, ffn_factory=None):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd)
        self.ffn = (ffn_factory or MLP)(config)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.ffn(self.ln_2(x))


class TinyGPT(nn.Module):
    """A GPT-2-shaped decoder; ``forward(idx, targets=None) -> (logits, loss)``."""

    def __init__(self, config: GPTConfig, ffn_factory=None):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.blocks = nn.ModuleList(Block(config, ffn_factory) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # tied, as in GPT-2
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: scale the residual projections by 1/sqrt(2 n_layer)
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx, targets=None):
        B, T = idx.shape
        if T > self.config.block_size:
            raise ValueError(f"sequence of {T} tokens is longer than block_size {self.config.block_size}")
        pos = torch.arange(T, device=idx.device)
        x = self.wte(idx) + self.wpe(pos)  # (B, T, C)
        for block in self.blocks:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))
        return logits, loss

    def n_params(self, non_embedding: bool = True) -> int:
        """Parameters counted once (the tied output layer is the token embedding); ``non_embedding``
        leaves out the token and position embeddings, as Kaplan et al. count N."""
        total = sum(p.numel() for p in self.parameters())
        if non_embedding:
            total -= self.wte.weight.numel() + self.wpe.weight.numel()
        return total

    @torch.no_grad()
    def generate(self, idx, max_new_tokens: int, temperature: float = 1.0, generator=None):
        """Sample ``max_new_tokens`` tokens after ``idx`` (B, T), cropping the context to block_size."""
        for _ in range(max_new_tokens):
            logits, _ = self(idx[:, -self.config.block_size:])
            probs = torch.softmax(logits[:, -1, :] / temperature, dim=-1)  # (B, V)
            idx = torch.cat([idx, torch.multinomial(probs, 1, generator=generator)], dim=1)
        return idx


def flops_per_token(config: GPTConfig, n_params: int, with_attention: bool = True) -> float:
    """Training FLOPs per token: 6 N, plus PaLM's attention term 12 n_layer d_model T (forward and backward)."""
    attention = 12 * config.n_layer * config.n_embd * config.block_size if with_attention else 0
    return 6 * n_params + attention


# ---------------------------------------------------------------- characters as tokens

class CharTokenizer:
    """One token per character: ``encode(str) -> list[int]``, ``decode(ids) -> str``."""

    def __init__(self, chars):
        self.chars = sorted(set(chars))
        self.codes = np.array([ord(c) for c in self.chars], dtype=np.uint32)
        self.vocab_size = len(self.chars)

    def encode(self, text: str) -> list[int]:
        return self.encode_array(text).tolist()

    def encode_array(self, text: str) -> np.ndarray:
        """The ids of ``text`` as an int64 array (fast on megabytes); unknown characters raise ValueError."""
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        ids = np.searchsorted(self.codes, codes).clip(max=self.vocab_size - 1)
        unknown = self.codes[ids] != codes
        if unknown.any():
            raise ValueError(f"characters not in the vocabulary: {sorted({chr(c) for c in codes[unknown]})[:10]}")
        return ids.astype(np.int64)

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)


def char_dataset(text: str, val_fraction: float = 0.1):
    """``(tokenizer, train_ids, val_ids)``: the text as character ids (1-D LongTensors), the last
    ``val_fraction`` held out for evaluation."""
    tokenizer = CharTokenizer(text)
    ids = torch.from_numpy(tokenizer.encode_array(text))
    split = int(len(ids) * (1 - val_fraction))
    return tokenizer, ids[:split], ids[split:]


# ---------------------------------------------------------------- training and evaluation

def get_batch(data: torch.Tensor, block_size: int, batch_size: int, generator: torch.Generator):
    """Random windows of ``data``: inputs ``x`` and next-token targets ``y``, both (B, T)."""
    starts = torch.randint(len(data) - block_size - 1, (batch_size,), generator=generator)
    offsets = torch.arange(block_size)
    x = data[starts[:, None] + offsets]  # (B, T)
    y = data[starts[:, None] + offsets + 1]  # (B, T)
    return x, y


def learning_rate(step: int, steps: int, peak: float, warmup_fraction: float = WARMUP_FRACTION,
                  min_fraction: float = MIN_LR_FRACTION) -> float:
    """Linear warm-up, then cosine decay to ``min_fraction * peak`` at the last step."""
    warmup = max(1, int(warmup_fraction * steps))
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - 1 - warmup)
    return peak * (min_fraction + (1 - min_fraction) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def clear_aux_losses(model: nn.Module) -> None:
    """Forget the ``aux_loss`` of every module (before a forward pass sets new ones)."""
    for module in model.modules():
        if hasattr(module, "aux_loss"):
            module.aux_loss = None


def collect_aux_losses(model: nn.Module):
    """The sum of the ``aux_loss`` tensors that modules set during the last forward pass (0.0 if none)."""
    losses = [m.aux_loss for m in model.modules() if isinstance(getattr(m, "aux_loss", None), torch.Tensor)]
    return torch.stack(losses).sum() if losses else torch.tensor(0.0)


def train(model: nn.Module, data: torch.Tensor, *, steps: int, batch_size: int, lr: float = LEARNING_RATE,
          seed: int = 0, aux_weight: float = 0.0, on_step=None, weight_decay: float = WEIGHT_DECAY,
          desc: str = "training", progress: bool = True) -> dict:
    """Train ``model`` in place with AdamW on random windows of ``data`` (a fixed ``seed`` fixes the batches).

    The loss is the language-modelling loss plus ``aux_weight`` times the sum of the modules' ``aux_loss``.
    ``on_step(step, model)`` runs after every optimizer step. Returns ``loss`` and ``aux_loss`` per step
    (floats), ``tokens`` seen and wall-clock ``seconds``.
    """
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    block_size = model.config.block_size
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=weight_decay)
    losses, aux_losses = [], []
    model.train()
    start = time.perf_counter()
    bar = tqdm(range(steps), desc=desc, disable=not progress, mininterval=1.0, leave=False)
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, steps, lr)
        x, y = get_batch(data, block_size, batch_size, generator)

        def closure():  # torch.optim's form of a step: the closure computes the losses and the (clipped) gradients
            optimizer.zero_grad(set_to_none=True)
            clear_aux_losses(model)
            _, lm_loss = model(x, y)
            aux_loss = collect_aux_losses(model)
            total = lm_loss + aux_weight * aux_loss if aux_weight else lm_loss
            total.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
            return lm_loss, aux_loss

        loss, aux = optimizer.step(closure)  # runs the closure, updates the weights, returns what the closure did
        losses.append(loss.item())
        aux_losses.append(aux.detach().item())
        if on_step is not None:
            on_step(step, model)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    bar.close()
    return {"loss": losses, "aux_loss": aux_losses, "tokens": steps * batch_size * block_size,
            "seconds": time.perf_counter() - start}


@torch.no_grad()
def validation_loss(model: nn.Module, data: torch.Tensor, batch_size: int = 32, n_batches: int = 20,
             seed: int = 1234) -> float:
    """Mean next-token loss (nats per token) of ``model`` on ``n_batches`` fixed random windows of ``data``."""
    generator = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    total = 0.0
    for _ in range(n_batches):
        x, y = get_batch(data, model.config.block_size, batch_size, generator)
        total += model(x, y)[1].item()
    model.train(was_training)
    return total / n_batches
