"""BERT's two pretraining objectives for lesson 04: a masked-language-model head for MiniLM, which
ships without one, and next-sentence-prediction pairs.

BERT predicts a masked token with a small head on top of the encoder: a *transform* (dense layer,
GELU, LayerNorm) and a *decoder* whose weights are the word embeddings themselves (tied), plus one
bias per vocabulary entry. ``masked_lm()`` builds Hugging Face's ``BertForMaskedLM`` from the shipped
MiniLM: the encoder's pretrained weights, a new head, the encoder frozen. Because the encoder does not
change, its hidden states at the masked positions are computed once (``masked_states``) and the head
is trained on them (``train_head``), which is exactly what training the head on the frozen encoder
would compute, at a fraction of the cost. ``cached_head`` caches the trained head in the user cache.
Masking uses Hugging Face's ``DataCollatorForLanguageModeling`` (BERT's 15 % and 80/10/10 rule).

Next-sentence prediction pairs a sentence with the one that follows it or with a random one
(``nsp_pairs``); ``dialogue_sentences`` cuts Shakespeare's plays into consecutive sentences of speech.
"""

import random
import re
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from llmcourse.cache import cached_run
from llmcourse.finetune import SEED, encoder_folder

IGNORE = -100
HEAD_PREFIX = "cls.predictions."


def masked_lm(seed: int = SEED):
    """``(tokenizer, BertForMaskedLM)``: MiniLM's pretrained encoder (frozen) under a new, seeded masked-LM
    head whose decoder is tied to the word embeddings; in eval mode. Only the transform and the decoder
    bias train."""
    from transformers import AutoTokenizer, BertForMaskedLM
    from transformers.utils import logging as hf_logging

    folder = encoder_folder()
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the report that the head is new (and the pooler unused) is expected
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = BertForMaskedLM.from_pretrained(folder)
    finally:
        hf_logging.set_verbosity(verbosity)
    for name, p in model.named_parameters():
        p.requires_grad = name.startswith(HEAD_PREFIX) and "decoder" not in name
    return AutoTokenizer.from_pretrained(folder), model.eval()


def head_state(model) -> dict:
    """The trainable head's weights (transform and decoder bias), as detached copies."""
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def load_head(model, state: dict):
    """Put a trained head (from ``head_state`` or ``cached_head``) into ``model``; returns ``model``."""
    own = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state.items():
            own[name].copy_(value)
    return model


def mask_collator(tokenizer, seed: int, mlm_probability: float = 0.15):
    """Hugging Face's ``DataCollatorForLanguageModeling``: BERT's masking rule, seeded."""
    from transformers import DataCollatorForLanguageModeling

    return DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=mlm_probability, seed=seed,
                                           return_tensors="pt")


@torch.no_grad()
def masked_states(model, tokenizer, texts, rounds: int = 1, seed: int = SEED, max_length: int = 64,
                  batch_size: int = 64, progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """``(states (N, D), targets (N,))``: the frozen encoder's last hidden state at every chosen position
    and the original token there, over ``rounds`` independent maskings of ``texts``."""
    from tqdm.auto import tqdm

    encoded = tokenizer(list(texts), truncation=True, max_length=max_length, return_special_tokens_mask=True)
    rows = [{k: encoded[k][i] for k in encoded} for i in range(len(texts))]
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"]))  # batches of similar length
    groups = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    model.eval()
    device = next(model.parameters()).device
    states, targets = [], []
    for r in range(rounds):
        collator = mask_collator(tokenizer, seed + r)
        for idx in tqdm(groups, desc=f"encoder states, masking {r + 1}/{rounds}", disable=not progress, leave=False):
            batch = collator([rows[i] for i in idx])
            hidden = model.bert(input_ids=batch["input_ids"].to(device),
                                attention_mask=batch["attention_mask"].to(device)).last_hidden_state  # (B, T, D)
            chosen = batch["labels"] != IGNORE  # (B, T)
            states.append(hidden[chosen.to(device)].cpu())
            targets.append(batch["labels"][chosen])
    return torch.cat(states), torch.cat(targets)


def head_logits(model, states: torch.Tensor) -> torch.Tensor:
    """``(N, V)`` vocabulary logits of the head on encoder states ``(N, D)``."""
    return model.cls(states)


@torch.no_grad()
def head_accuracy(model, states: torch.Tensor, targets: torch.Tensor, k: int = 5,
                  batch_size: int = 1024) -> dict:
    """Top-1 and top-k accuracy and mean cross-entropy of the head at masked positions."""
    device = next(model.parameters()).device
    ranks, losses = [], []  # per position: where the target ranks among the k best (k when outside), its loss
    for chunk, y in zip(states.split(batch_size), targets.split(batch_size)):
        logits = head_logits(model, chunk.to(device)).cpu()  # (n, V)
        hits = logits.topk(k, dim=-1).indices == y[:, None]  # (n, k): True where the target sits
        ranks.append(torch.where(hits.any(-1), hits.int().argmax(-1), k))
        losses.append(F.cross_entropy(logits, y, reduction="none"))
    ranks, losses = torch.cat(ranks), torch.cat(losses)
    return {"top1": (ranks == 0).double().mean().item(), f"top{k}": (ranks < k).double().mean().item(),
            "loss": losses.double().mean().item()}


def train_head(model, states: torch.Tensor, targets: torch.Tensor, steps: int, batch_size: int = 256,
               lr: float = 2e-3, seed: int = SEED, progress: bool = True) -> list[float]:
    """Train the head (AdamW, linear decay) on random mini-batches of ``(states, targets)``; the loss of each step."""
    from tqdm.auto import tqdm

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / steps)
    g = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    model.cls.train()
    losses = []
    bar = tqdm(range(steps), desc="masked-LM head", unit="step", disable=not progress)
    for _ in bar:
        idx = torch.randint(len(states), (batch_size,), generator=g)

        def closure():  # torch.optim's form of a step: clear the gradients, compute the loss and its gradients
            optimizer.zero_grad(set_to_none=True)
            step_loss = F.cross_entropy(head_logits(model, states[idx].to(device)), targets[idx].to(device))
            step_loss.backward()
            return step_loss

        losses.append(optimizer.step(closure).item())  # the closure runs first, then the update
        scheduler.step()
        bar.set_postfix(loss=f"{losses[-1]:.2f}")
    model.eval()
    return losses


@dataclass(frozen=True)
class HeadConfig:
    """How the head is trained: on ``n_train`` training sentences of the sentiment corpus, masked
    ``rounds`` times, for ``steps`` steps; held-out accuracy on ``n_heldout`` test sentences."""

    n_train: int = 3200
    n_heldout: int = 400
    rounds: int = 1
    steps: int = 250
    batch_size: int = 256
    lr: float = 2e-3
    max_length: int = 64
    seed: int = SEED


def _train_cached(config: HeadConfig) -> dict:
    from llmcourse.data import sentiment

    data = sentiment()
    tokenizer, model = masked_lm(config.seed)
    start = time.perf_counter()
    train_x, train_y = masked_states(model, tokenizer, list(data["train"]["text"])[:config.n_train], config.rounds,
                                     config.seed, config.max_length)
    test_x, test_y = masked_states(model, tokenizer, list(data["test"]["text"])[:config.n_heldout], 1,
                                   config.seed + 1000, config.max_length)
    encode_seconds = time.perf_counter() - start
    before = head_accuracy(model, test_x, test_y)
    start = time.perf_counter()
    losses = train_head(model, train_x, train_y, config.steps, config.batch_size, config.lr, config.seed)
    return {"head": head_state(model), "losses": losses, "before": before,
            "after": head_accuracy(model, test_x, test_y), "n_train_positions": len(train_y),
            "n_heldout_positions": len(test_y), "encode_seconds": encode_seconds,
            "train_seconds": time.perf_counter() - start}


def cached_head(config: HeadConfig = HeadConfig(), retrain: bool | None = None) -> dict:
    """The trained head and its record (losses, held-out accuracy before and after, times), cached.
    Prints the training time (or that it came from the cache)."""
    result = cached_run("mlm-head", {**asdict(config), "version": 1}, lambda: _train_cached(config), retrain=retrain)
    print(f"masked-LM head: {result['n_train_positions']:,} masked positions, {config.steps} steps; encoder states "
          f"{result['encode_seconds']:.1f} s, head training {result['train_seconds']:.1f} s (when trained); "
          f"held-out top-1 {result['before']['top1']:.1%} -> {result['after']['top1']:.1%}")
    return result


@torch.no_grad()
def fill_mask(model, tokenizer, text: str, k: int = 5) -> list[list[tuple[str, float]]]:
    """For each ``[MASK]`` in ``text``, the ``k`` most probable tokens and their probabilities."""
    batch = tokenizer(text, return_tensors="pt").to(next(model.parameters()).device)
    model.eval()
    logits = model(**batch).logits[0]  # (T, V)
    where = (batch["input_ids"][0] == tokenizer.mask_token_id).nonzero().flatten()
    if len(where) == 0:
        raise ValueError(f"no {tokenizer.mask_token} in {text!r}")
    probs = logits[where].softmax(-1)  # (n_masks, V)
    top = probs.topk(k, dim=-1)
    return [[(tokenizer.convert_ids_to_tokens(int(i)), float(p)) for p, i in zip(ps, ids)]
            for ps, ids in zip(top.values, top.indices)]


# ---------------------------------------------------------------- next-sentence prediction

SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
CAST_HEADING = re.compile(r"(PERSONS REPRESENTED|DRAMATIS PERSONAE)", re.IGNORECASE)


def _is_speaker(line: str) -> bool:
    """A play's speaker line: a few words ending in a full stop ("Ham.", "First Lord.", "COUNTESS.")."""
    return line.endswith(".") and len(line.split()) <= 3 and not line.startswith("[")


def dialogue_sentences(text: str) -> list[str]:
    """The spoken sentences of plays in order: speeches only (a block that opens with a speaker line, not
    the list of characters after its heading), stage directions in brackets and dashes removed, verse
    lines joined, split after . ! or ?"""
    sentences, after_cast_heading = [], False
    for block in re.split(r"\n\s*\n", text):
        lines = [line.strip() for line in block.strip().splitlines()]
        cast_list, after_cast_heading = after_cast_heading, bool(CAST_HEADING.match(block.strip()))
        if len(lines) < 2 or not _is_speaker(lines[0]) or cast_list:
            continue  # headings, the list of characters, stage directions
        speech = re.sub(r"\[[^\]]*\]", " ", " ".join(lines[1:]))
        speech = re.sub(r"\s+", " ", re.sub(r"-{2,}", " ", speech)).strip()
        sentences += [s for s in SENTENCE_END.split(speech) if s]
    return sentences


def nsp_pairs(sentences: list[str], n_pairs: int, seed: int = SEED, min_words: int = 4,
              max_words: int = 40) -> list[dict]:
    """BERT's next-sentence data: ``n_pairs`` of ``{"a", "b", "is_next"}``; ``b`` follows ``a`` in the
    text for half of them (``is_next`` True; BERT tossed a coin per pair, counted here so that a small
    sample is balanced too) and is a random sentence otherwise, in shuffled order. Both sentences have
    ``min_words`` to ``max_words`` words."""
    def fits(s):
        return min_words <= len(s.split()) <= max_words

    rng = random.Random(seed)
    starts = [i for i in range(len(sentences) - 1) if fits(sentences[i]) and fits(sentences[i + 1])]
    others = [i for i, s in enumerate(sentences) if fits(s)]
    if not starts:
        raise ValueError(f"no two consecutive sentences of {min_words} to {max_words} words")
    labels = [True] * (n_pairs // 2) + [False] * (n_pairs - n_pairs // 2)
    rng.shuffle(labels)
    pairs = []
    for is_next in labels:
        i = rng.choice(starts)
        j = i + 1
        while not is_next and j in (i, i + 1):
            j = rng.choice(others)
        pairs.append({"a": sentences[i], "b": sentences[j], "is_next": is_next})
    return pairs
