"""Fine-tuning helpers for lesson 04: batches padded per batch (or bucketed by length, or padded to a
fixed length), sentence features from a frozen encoder, a training loop with a fixed budget that
evaluates as it goes, and the lesson's three recipes as cached runs:

1. ``features``: frozen MiniLM sentence embeddings (mean-pooled) and a linear classifier;
2. ``finetune``: ``BertForSequenceClassification`` loaded from the shipped MiniLM, every weight trained;
3. ``scratch``: the same architecture from random weights, trained the same way.

The three runs of a comparison see the same sentences, in the same batches, for the same number of
steps. Each run is seeded, shows a tqdm bar, prints its wall time, and is cached with
``llmcourse.cache.cached_run`` (``retrain=True`` or ``LLMCOURSE_RETRAIN=1`` trains again).
"""

import math
import random
import time
from dataclasses import asdict, dataclass

import torch
from torch import nn

from llmcourse.cache import cached_run
from llmcourse.device import pick_device

SEED = 0
NUM_LABELS = 2
KINDS = ("features", "finetune", "scratch")
BATCHINGS = ("fixed", "dynamic", "bucket")


# ---------------------------------------------------------------- tokens and batches

def encode(tokenizer, texts, max_length: int) -> list[list[int]]:
    """Token ids of each text, ``[CLS] ... [SEP]``, truncated to ``max_length`` (no padding yet)."""
    return tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]


def collate(sequences: list[list[int]], labels, pad_id: int, pad_to: int | None = None) -> dict:
    """One batch: ``input_ids`` and ``attention_mask`` ``(B, T)`` padded on the right to the longest
    sequence (or to ``pad_to``), and ``labels`` ``(B,)`` (left out when ``labels`` is None)."""
    width = pad_to or max(len(s) for s in sequences)
    if any(len(s) > width for s in sequences):
        raise ValueError(f"a sequence is longer than pad_to={width}: truncate when encoding")
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)  # (B, T)
    attention_mask = torch.zeros(len(sequences), width, dtype=torch.long)  # (B, T), 1 = real token
    for row, seq in enumerate(sequences):
        input_ids[row, :len(seq)] = torch.tensor(seq, dtype=torch.long)
        attention_mask[row, :len(seq)] = 1
    batch = {"input_ids": input_ids, "attention_mask": attention_mask}
    if labels is not None:
        batch["labels"] = torch.as_tensor(list(labels), dtype=torch.long)  # (B,)
    return batch


def batch_order(lengths: list[int], batch_size: int, batching: str = "bucket", shuffle: bool = True,
                seed: int = SEED) -> list[list[int]]:
    """Which examples go in which batch.

    ``fixed`` and ``dynamic``: random batches (fixed pads them to the maximum length, dynamic to the
    longest in the batch). ``bucket``: sorted by length so each batch holds sentences of similar
    length, then the order of the batches is shuffled (no short-to-long curriculum).
    """
    if batching not in BATCHINGS:
        raise ValueError(f"batching must be one of {BATCHINGS}, not {batching!r}")
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    if shuffle:
        rng.shuffle(order)
    if batching == "bucket":
        order.sort(key=lambda i: lengths[i])  # stable: ties keep the shuffled order
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if batching == "bucket" and shuffle:
        rng.shuffle(batches)
    return batches


def make_batches(sequences: list[list[int]], labels, batch_size: int, pad_id: int, batching: str = "bucket",
                 max_length: int | None = None, shuffle: bool = True, seed: int = SEED) -> list[dict]:
    """Padded batches of ``(sequences, labels)`` in the order of ``batch_order``; ``fixed`` batching pads
    every batch to ``max_length``."""
    if batching == "fixed" and max_length is None:
        raise ValueError("fixed batching pads to max_length: give max_length")
    labels = list(labels)
    pad_to = max_length if batching == "fixed" else None
    return [collate([sequences[i] for i in idx], [labels[i] for i in idx], pad_id, pad_to)
            for idx in batch_order([len(s) for s in sequences], batch_size, batching, shuffle, seed)]


def padding_stats(batches: list[dict]) -> dict:
    """Real tokens, positions computed (real + padding) and the share of padding over ``batches``."""
    real = sum(int(b["attention_mask"].sum()) for b in batches)
    positions = sum(b["attention_mask"].numel() for b in batches)
    return {"real_tokens": real, "positions": positions, "padding_share": 1 - real / positions}


# ---------------------------------------------------------------- models

@dataclass
class ClassifierOutput:
    """What a classifier returns, like Hugging Face's: the mean cross-entropy (when labels are given)
    and the logits ``(B, num_labels)``."""

    loss: torch.Tensor | None
    logits: torch.Tensor


class LinearProbe(nn.Module):
    """A linear classifier on fixed features, called like a Hugging Face model: ``probe(features=...,
    labels=...)`` returns a ``ClassifierOutput``."""

    def __init__(self, n_features: int, num_labels: int = NUM_LABELS):
        super().__init__()
        self.linear = nn.Linear(n_features, num_labels)

    def forward(self, features, labels=None):
        logits = self.linear(features)  # (B, num_labels)
        loss = None if labels is None else nn.functional.cross_entropy(logits, labels)
        return ClassifierOutput(loss, logits)


def encoder_folder() -> str:
    """The local folder of the shipped MiniLM (fetched into the user cache on first use)."""
    from llmcourse.models import DEFAULT_ENCODER, ENCODERS, resolve

    return resolve(None, ENCODERS, DEFAULT_ENCODER)


def sequence_classifier(pretrained: bool, seed: int = SEED, num_labels: int = NUM_LABELS):
    """``BertForSequenceClassification`` with MiniLM's architecture: its pretrained weights (the
    classifier layer on top is new) or, with ``pretrained=False``, every weight random (seeded)."""
    from transformers import BertConfig, BertForSequenceClassification
    from transformers.utils import logging as hf_logging

    folder = encoder_folder()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if not pretrained:
            return BertForSequenceClassification(BertConfig.from_pretrained(folder, num_labels=num_labels))
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # the report that the classifier is new is expected here
        try:
            return BertForSequenceClassification.from_pretrained(folder, num_labels=num_labels)
        finally:
            hf_logging.set_verbosity(verbosity)


def freeze_below(model, train_layers: int):
    """Freeze the embeddings and every encoder layer but the top ``train_layers`` of a
    ``BertForSequenceClassification``; the backward pass then stops at the lowest trained layer."""
    layers = model.bert.encoder.layer
    if not 0 <= train_layers <= len(layers):
        raise ValueError(f"train_layers must be between 0 and {len(layers)}, not {train_layers}")
    frozen = [model.bert.embeddings, *layers[:len(layers) - train_layers]]
    for module in frozen:
        module.requires_grad_(False)
    return model


@torch.no_grad()
def sentence_features(encoder, sequences: list[list[int]], pad_id: int, batch_size: int = 64,
                      progress: bool = True) -> torch.Tensor:
    """``(N, D)`` sentence embeddings as sentence-transformers makes them for MiniLM: the mean of the
    last hidden states over the real tokens. Batches are bucketed by length (less padding); the rows
    come back in the order of ``sequences``."""
    from tqdm.auto import tqdm

    encoder.eval()
    device = next(encoder.parameters()).device
    features = torch.empty(len(sequences), encoder.config.hidden_size)
    groups = batch_order([len(s) for s in sequences], batch_size, "bucket", shuffle=False)
    for idx in tqdm(groups, desc="sentence features", disable=not progress, leave=False):
        batch = collate([sequences[i] for i in idx], None, pad_id)
        mask = batch["attention_mask"].to(device)
        hidden = encoder(input_ids=batch["input_ids"].to(device), attention_mask=mask).last_hidden_state  # (B, T, D)
        summed = (hidden * mask[..., None]).sum(1)  # (B, D): padding contributes nothing
        features[idx] = (summed / mask.sum(1, keepdim=True)).cpu()
    return features


def feature_batches(features: torch.Tensor, labels, groups: list[list[int]]) -> list[dict]:
    """Batches ``{"features", "labels"}`` for a ``LinearProbe``, grouped as ``groups`` (from ``batch_order``)."""
    labels = torch.as_tensor(list(labels), dtype=torch.long)
    return [{"features": features[idx], "labels": labels[idx]} for idx in groups]


# ---------------------------------------------------------------- training and evaluation

def _to(batch: dict, device) -> dict:
    return {k: v.to(device) for k, v in batch.items()}


@torch.no_grad()
def predict(model, batches: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits (N, C), labels (N,))`` of ``model`` in eval mode over ``batches`` (labels not passed in)."""
    model.eval()
    device = next(model.parameters()).device
    logits, labels = [], []
    for batch in batches:
        inputs = {k: v.to(device) for k, v in batch.items() if k != "labels"}
        logits.append(model(**inputs).logits.float().cpu())
        labels.append(batch["labels"])
    return torch.cat(logits), torch.cat(labels)


def heldout_accuracy(model, batches: list[dict]) -> float:
    """Share of ``batches``' examples whose argmax prediction is their label."""
    logits, labels = predict(model, batches)
    return (logits.argmax(-1) == labels).float().mean().item()


def eval_points(n_steps: int, n_evals: int) -> list[int]:
    """The steps (1-based) after which a run evaluates: ``n_evals`` evenly spaced, the last one last."""
    n = min(n_evals, n_steps)
    return sorted({max(1, round(n_steps * (i + 1) / n)) for i in range(n)})


def linear_warmup_decay(step: int, warmup_steps: int, n_steps: int) -> float:
    """The learning rate of step ``step`` (0-based) as a share of the peak: up in a straight line from 0
    over the first ``warmup_steps`` steps, then down in a straight line to 0 at step ``n_steps`` (the
    schedule of Hugging Face's ``get_linear_schedule_with_warmup``)."""
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    return max(0.0, (n_steps - step) / max(1, n_steps - warmup_steps))


def fit(model, batches: list[dict], lr: float, eval_batches: list[dict], n_evals: int = 4, warmup: float = 0.1,
        weight_decay: float = 0.01, desc: str = "training") -> dict:
    """Train ``model`` for one pass over ``batches`` with AdamW and a linear warm-up then decay of the
    learning rate (``linear_warmup_decay``); evaluate on ``eval_batches`` ``n_evals`` times along the way.

    Returns the history: the loss of every step, and the examples seen and test accuracy at each
    evaluation; ``train_seconds`` counts the training steps only, ``eval_seconds`` the evaluations.
    """
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    n_steps = len(batches)
    warmup_steps = math.ceil(warmup * n_steps)
    checkpoints = set(eval_points(n_steps, n_evals))
    history = {"step_examples": [], "loss": [], "eval_examples": [], "eval_accuracy": [],
               "train_seconds": 0.0, "eval_seconds": 0.0}
    seen = 0
    bar = tqdm(batches, desc=desc, unit="step")
    for step, batch in enumerate(bar):
        start = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = lr * linear_warmup_decay(step, warmup_steps, n_steps)
        model.train()  # dropout on: the evaluations switch it off

        def closure():  # torch.optim's form of a step: the closure computes the loss and its gradients
            optimizer.zero_grad(set_to_none=True)
            batch_loss = model(**_to(batch, device)).loss
            batch_loss.backward()
            return batch_loss

        loss = optimizer.step(closure)  # runs the closure, then updates the weights; returns the closure's loss
        history["train_seconds"] += time.perf_counter() - start
        seen += len(batch["labels"])
        history["step_examples"].append(seen)
        history["loss"].append(loss.item())
        if step + 1 in checkpoints:  # eval_points counts the steps from 1
            start = time.perf_counter()
            history["eval_examples"].append(seen)
            history["eval_accuracy"].append(heldout_accuracy(model, eval_batches))
            history["eval_seconds"] += time.perf_counter() - start
            bar.set_postfix(loss=f"{loss.item():.3f}", test_acc=f"{history['eval_accuracy'][-1]:.3f}")
    bar.close()
    model.train()
    return history


def training_pass_seconds(model, batches: list[dict], desc: str = "forward + backward") -> float:
    """Wall time of one forward and backward pass per batch (no optimizer step, so ``model`` is unchanged);
    what the padding of the batches costs a training step."""
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    model.train()
    start = time.perf_counter()
    for batch in tqdm(batches, desc=desc, unit="batch", leave=False):
        model(**_to(batch, device)).loss.backward()
    seconds = time.perf_counter() - start
    model.zero_grad(set_to_none=True)
    return seconds


# ---------------------------------------------------------------- the lesson's recipes

@dataclass(frozen=True)
class Recipe:
    """One run. The runs of a comparison differ only in ``kind`` (and the learning rate the kind needs):
    the same sentences, batches and number of steps."""

    kind: str  # "features", "finetune" or "scratch"
    n_train: int = 3200  # the first n_train sentences of the training split
    n_test: int = 800  # the first n_test sentences of the test split
    batch_size: int = 32
    max_length: int = 64
    lr: float = 1e-4
    batching: str = "bucket"
    n_evals: int = 4
    train_layers: int | None = None  # None: every weight trains; k: only the top k encoder layers and the head
    seed: int = SEED

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {self.kind!r}")
        if self.batching not in BATCHINGS:
            raise ValueError(f"batching must be one of {BATCHINGS}, not {self.batching!r}")

    @property
    def steps(self) -> int:
        return math.ceil(self.n_train / self.batch_size)


def sentiment_tokens(recipe: Recipe, tokenizer=None):
    """``(tokenizer, train, test)`` for a recipe: each split as ``(token id lists, labels)``."""
    from transformers import AutoTokenizer

    from llmcourse.data import sentiment

    tokenizer = tokenizer or AutoTokenizer.from_pretrained(encoder_folder())
    data = sentiment()
    splits = []
    for name, n in (("train", recipe.n_train), ("test", recipe.n_test)):
        part = data[name].select(range(min(n, len(data[name]))))
        splits.append((encode(tokenizer, part["text"], recipe.max_length), list(part["label"])))
    return tokenizer, *splits


def _train_recipe(recipe: Recipe, keep_weights: bool) -> dict:
    """Train one recipe from scratch (no cache); the result dict that ``run_recipe`` caches."""
    from transformers import AutoModel

    tokenizer, (train_ids, train_labels), (test_ids, test_labels) = sentiment_tokens(recipe)
    pad = tokenizer.pad_token_id
    groups = batch_order([len(s) for s in train_ids], recipe.batch_size, recipe.batching, seed=recipe.seed)
    device = pick_device()
    result = {"recipe": asdict(recipe), "steps": len(groups)}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)  # dropout and the new weights
        if recipe.kind == "features":
            start = time.perf_counter()
            encoder = AutoModel.from_pretrained(encoder_folder()).to(device)
            train_x = sentence_features(encoder, train_ids, pad)
            test_x = sentence_features(encoder, test_ids, pad)
            result["feature_seconds"] = time.perf_counter() - start
            model = LinearProbe(train_x.shape[1]).to(device)
            train_batches = feature_batches(train_x, train_labels, groups)
            test_batches = feature_batches(test_x, test_labels, batch_order([0] * len(test_ids), 256, "dynamic",
                                                                            shuffle=False))
            result["real_tokens"] = sum(len(s) for s in train_ids)
        else:
            model = sequence_classifier(pretrained=recipe.kind == "finetune", seed=recipe.seed).to(device)
            if recipe.train_layers is not None:
                freeze_below(model, recipe.train_layers)
            train_batches = [collate([train_ids[i] for i in idx], [train_labels[i] for i in idx], pad,
                                     recipe.max_length if recipe.batching == "fixed" else None) for idx in groups]
            test_batches = make_batches(test_ids, test_labels, 64, pad, "bucket", shuffle=False)
            result.update(padding_stats(train_batches))
        result["trained_parameters"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
        history = fit(model, train_batches, recipe.lr, test_batches, recipe.n_evals, desc=recipe.kind)
    result.update(history)
    result["test_accuracy"] = history["eval_accuracy"][-1]
    if keep_weights:
        result["state_dict"] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return result


def run_recipe(recipe: Recipe, keep_weights: bool = False, retrain: bool | None = None) -> dict:
    """The result of training ``recipe`` (cached in the user cache): the history of ``fit``, the final
    ``test_accuracy``, the token counts and, with ``keep_weights``, the trained ``state_dict``.
    Prints the wall time of the training (or that the run came from the cache)."""
    config = {**asdict(recipe), "keep_weights": keep_weights, "version": 1}

    def compute():
        start = time.perf_counter()
        result = _train_recipe(recipe, keep_weights)
        result["wall_seconds"] = time.perf_counter() - start
        return result

    result = cached_run(f"finetune-{recipe.kind}", config, compute, retrain=retrain)
    print(f"{recipe.kind}: {result['steps']} steps of {recipe.batch_size}, test accuracy "
          f"{result['test_accuracy']:.1%}, training {result['train_seconds']:.1f} s "
          f"(+ {result['eval_seconds']:.1f} s of evaluation; wall {result['wall_seconds']:.1f} s when trained)")
    return result


def load_classifier(result: dict):
    """The fine-tuned ``BertForSequenceClassification`` of a ``run_recipe(..., keep_weights=True)`` result,
    in eval mode."""
    if "state_dict" not in result:
        raise ValueError("this run kept no weights: run it with keep_weights=True")
    model = sequence_classifier(pretrained=False)
    model.load_state_dict(result["state_dict"])
    return model.to(pick_device()).eval()
