"""Helpers for lesson 06 (bias and environmental cost): the next-token distribution after many prompts at once,
MiniLM sentence embeddings, a small sentiment classifier on frozen MiniLM features, and a timed burst of
MiniLM fine-tuning for the energy estimate.
"""

import time

import torch
import torch.nn.functional as F

from llmcourse.cache import cached_run

SENTIMENT_HEAD_STEPS = 300  # full-batch Adam steps of the linear head (a few hundred milliseconds)


@torch.no_grad()
def last_token_logprobs(model, tokenizer, prompts: list, batch_size: int = 32) -> torch.Tensor:
    """log P(next token | prompt) for every prompt, as a float32 tensor (N, V), for a Hugging Face causal LM.

    The prompts run in left-padded batches with the attention mask and position ids of each prompt on its own,
    so every row equals running that prompt alone; only the last position's logits are computed.
    """
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    rows = []
    for start in range(0, len(prompts), batch_size):
        encoded = [tokenizer(p)["input_ids"] for p in prompts[start:start + batch_size]]
        width = max(len(ids) for ids in encoded)
        input_ids = torch.tensor([[pad_id] * (width - len(ids)) + ids for ids in encoded])  # (b, T)
        attention_mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in encoded])  # (b, T)
        position_ids = (attention_mask.cumsum(1) - 1).clamp_min(0)  # (b, T): 0, 1, ... from each first real token
        logits = model(input_ids=input_ids.to(model.device), attention_mask=attention_mask.to(model.device),
                       position_ids=position_ids.to(model.device), logits_to_keep=1).logits  # (b, 1, V)
        rows.append(torch.log_softmax(logits[:, -1].float(), dim=-1).cpu())
    return torch.cat(rows)  # (N, V)


@torch.no_grad()
def sentence_embeddings(tokenizer, encoder, sentences: list, batch_size: int = 64,
                        max_length: int = 128) -> torch.Tensor:
    """MiniLM's sentence vectors: the mean of the last layer over the real tokens, normalised to length 1: (N, D).

    Sentences run in batches of similar length (less padding); the rows come back in the order given.
    """
    sentences = list(sentences)
    order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
    vectors = torch.empty(len(sentences), encoder.config.hidden_size)
    for start in range(0, len(order), batch_size):
        chosen = order[start:start + batch_size]
        batch = tokenizer([sentences[i] for i in chosen], padding=True, truncation=True, max_length=max_length,
                          return_tensors="pt").to(encoder.device)
        hidden = encoder(**batch).last_hidden_state  # (b, T, D)
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (b, T, 1)
        vectors[chosen] = F.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).float().cpu()
    return vectors  # (N, D)


def _fit_linear_head(features, labels, steps: int, lr: float, weight_decay: float, seed: int):
    """Logistic regression on fixed features by full-batch Adam: (weight (D,), bias ())."""
    torch.manual_seed(seed)
    weight = torch.zeros(features.shape[1], requires_grad=True)
    bias = torch.zeros((), requires_grad=True)
    optimizer = torch.optim.Adam([weight, bias], lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        loss = F.binary_cross_entropy_with_logits(features @ weight + bias, labels.float())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return weight.detach(), bias.detach()


def _accuracy(weight, bias, features, labels) -> float:
    return ((features @ weight + bias > 0).long() == labels).float().mean().item()


def train_sentiment_head(tokenizer, encoder, n_train: int | None = None, n_test: int | None = None,
                         steps: int = SENTIMENT_HEAD_STEPS, lr: float = 0.1, weight_decay: float = 1e-4,
                         seed: int = 0, retrain: bool | None = None) -> dict:
    """A sentiment classifier: a linear head (logistic regression) on frozen MiniLM sentence vectors, trained on
    the course's Pang & Lee sentences (``llmcourse.data.sentiment()``), cached with ``cached_run``.

    Returns ``weight`` (D,), ``bias``, ``train_accuracy``, ``test_accuracy``, ``n_train``, ``n_test`` and
    ``seconds`` (embedding and training); P(positive | sentence) = sigmoid(vector @ weight + bias).
    ``n_train`` / ``n_test`` take the first sentences of each split (None: all 3,200 / 800).
    """
    from llmcourse.data import sentiment

    config = {"encoder": encoder.config.name_or_path, "n_train": n_train,
              "n_test": n_test, "steps": steps, "lr": lr, "weight_decay": weight_decay, "seed": seed}

    def compute() -> dict:
        start = time.perf_counter()
        data = sentiment()
        train, test = data["train"], data["test"]
        train = train.select(range(min(n_train or len(train), len(train))))
        test = test.select(range(min(n_test or len(test), len(test))))
        x_train = sentence_embeddings(tokenizer, encoder, list(train["text"]))  # (N, D)
        x_test = sentence_embeddings(tokenizer, encoder, list(test["text"]))
        y_train, y_test = torch.tensor(list(train["label"])), torch.tensor(list(test["label"]))
        weight, bias = _fit_linear_head(x_train, y_train, steps, lr, weight_decay, seed)
        return {"weight": weight, "bias": bias, "train_accuracy": _accuracy(weight, bias, x_train, y_train),
                "test_accuracy": _accuracy(weight, bias, x_test, y_test), "n_train": len(train),
                "n_test": len(test), "seconds": time.perf_counter() - start}

    return cached_run("sentiment-head", config, compute, retrain=retrain)


def time_finetuning_steps(n_steps: int, batch_size: int = 16, max_length: int = 64, lr: float = 5e-5,
                          seed: int = 0, tokenizer=None) -> dict:
    """Time ``n_steps`` steps of fine-tuning MiniLM as a ``BertForSequenceClassification`` (2 labels) on real
    sentences of the course's sentiment data, after one untimed warm-up step.

    Returns ``seconds_per_step``, ``n_steps``, ``batch_size``, ``losses`` (one per timed step) and
    ``n_parameters``. The model is built here and thrown away: this measures time, not accuracy.
    ``tokenizer`` is MiniLM's (loaded when None).
    """
    from transformers import BertForSequenceClassification
    from transformers.utils import logging as hf_logging

    from llmcourse.data import sentiment
    from llmcourse.models import DEFAULT_ENCODER, ENCODERS, load_encoder, resolve

    torch.manual_seed(seed)
    if tokenizer is None:
        tokenizer, _ = load_encoder()
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "some weights are newly initialized": the classifier head, as expected
    try:
        model = BertForSequenceClassification.from_pretrained(resolve(None, ENCODERS, DEFAULT_ENCODER), num_labels=2)
    finally:
        hf_logging.set_verbosity(verbosity)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    train = sentiment()["train"].select(range(batch_size * (n_steps + 1)))
    losses, seconds = [], 0.0
    for step in range(n_steps + 1):
        rows = train.select(range(step * batch_size, (step + 1) * batch_size))
        batch = tokenizer(list(rows["text"]), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        start = time.perf_counter()
        loss = model(**batch, labels=torch.tensor(list(rows["label"]))).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step > 0:  # the first step pays for one-off set-up (memory, kernels)
            seconds += time.perf_counter() - start
            losses.append(loss.item())
    return {"seconds_per_step": seconds / n_steps, "n_steps": n_steps, "batch_size": batch_size, "losses": losses,
            "n_parameters": sum(p.numel() for p in model.parameters())}
