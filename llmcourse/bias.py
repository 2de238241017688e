"""Helpers for lesson 06 (bias and environmental cost): the next-token distribution after many prompts at once,
MiniLM sentence embeddings, the Word Embedding Association Test with its permutation test, a small sentiment
classifier on frozen MiniLM features, and a timed burst of MiniLM fine-tuning for the energy estimate.

``last_token_logprobs`` and ``weat_test`` do the work of exercises of chapter 06 (``pronoun_log_odds``,
``weat_effect_size``), which refuse them; they are written another way than the exercises ask for.
"""

import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from llmcourse.cache import cached_run

SENTIMENT_HEAD_STEPS = 300  # full-batch Adam steps of the linear head (a few hundred milliseconds)


@torch.no_grad()
def last_token_logprobs(model, tokenizer, prompts: list, batch_size: int = 32) -> torch.Tensor:
    """log P(next token | prompt) for every prompt, as a float32 tensor (N, V), for a Hugging Face causal LM.

    Built on the library's own generation: ``model.generate`` with one new token, greedy, keeping the raw scores
    it computed for that token (``output_logits``); the prompts go in left-padded batches, and ``generate`` gives
    each prompt its own positions from the attention mask, so every row equals the prompt run alone.
    """
    side = tokenizer.padding_side
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    tokenizer.padding_side = "left"  # generate continues every prompt from the same (last) column
    rows = []
    try:
        for start in range(0, len(prompts), batch_size):
            batch = tokenizer(list(prompts[start:start + batch_size]), return_tensors="pt",
                              padding=True).to(model.device)
            generated = model.generate(**batch, max_new_tokens=1, do_sample=False, output_logits=True,
                                       return_dict_in_generate=True, pad_token_id=pad_id)
            rows.append(F.log_softmax(generated.logits[0].float(), dim=-1).cpu())  # the first new token's (b, V)
    finally:
        tokenizer.padding_side = side
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


def weat_test(X, Y, A, B, n_permutations: int = 10_000, seed: int = 0) -> dict:
    """Caliskan et al.'s (2017) Word Embedding Association Test of targets X, Y against attributes A, B (one row
    per word, tensors or arrays of any length): the lesson's WEAT, done the way the course's exercise does not.

    A word's association s(w) is its mean cosine with A minus that with B. With the rows scaled to length 1, a
    mean of cosines is a dot product with a mean vector, so s is the projection of every target word on one
    direction, mean(A) - mean(B) of the unit vectors. The effect size d is the difference of the two groups'
    mean s in units of the sample standard deviation of s (NaN when every s is equal). The one-sided p-value is
    SciPy's ``permutation_test`` of the statistic sum_X s - sum_Y s over re-splits of the targets (exact,
    over every split, when there are at most ``n_permutations`` of them).

    Returns ``s`` (float64 array, X's words then Y's), ``d``, ``p``, ``statistic`` and ``permuted`` (the
    statistic over the re-splits: SciPy's null distribution).
    """
    from scipy import stats

    def units(words):
        return F.normalize(torch.as_tensor(np.asarray(words), dtype=torch.float64), dim=-1)

    direction = units(A).mean(dim=0) - units(B).mean(dim=0)  # (D,)
    s = torch.cat([units(X), units(Y)]).mv(direction).numpy()  # (n_X + n_Y,): s(w, A, B) of every target word
    s_x, s_y = np.split(s, [len(X)])
    spread = np.std(s, ddof=1)  # Caliskan et al.'s sample standard deviation
    test = stats.permutation_test((s_x, s_y), lambda a, b, axis: a.sum(axis) - b.sum(axis), vectorized=True,
                                  permutation_type="independent", alternative="greater",
                                  n_resamples=n_permutations, random_state=seed)
    return {"s": s, "d": float((np.mean(s_x) - np.mean(s_y)) / spread) if spread > 0 else math.nan,
            "p": float(test.pvalue), "statistic": float(test.statistic), "permuted": test.null_distribution}


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
        batch["labels"] = torch.tensor(list(rows["label"]))

        def forward_backward():  # the step's closure: the optimizer calls it for the loss and its gradients
            optimizer.zero_grad()
            step_loss = model(**batch).loss
            step_loss.backward()
            return step_loss

        start = time.perf_counter()
        loss = optimizer.step(forward_backward)
        if step > 0:  # the first step pays for one-off set-up (memory, kernels)
            seconds += time.perf_counter() - start
            losses.append(loss.item())
    return {"seconds_per_step": seconds / n_steps, "n_steps": n_steps, "batch_size": batch_size, "losses": losses,
            "n_parameters": sum(p.numel() for p in model.parameters())}
