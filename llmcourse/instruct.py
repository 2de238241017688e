"""Lesson 11's helpers: the three steps of InstructGPT's recipe as the libraries run them, on the CPU.

- supervised fine-tuning (SFT) of SmolLM2 with LoRA: peft's ``LoraConfig`` and TRL's ``SFTTrainer``, which puts
  the loss on the completion tokens only (``completion_only_loss``), on chapter 05's zero-shot sentiment prompt;
- a reward model: MiniLM with a scalar head (``AutoModelForSequenceClassification``, ``num_labels=1``) trained
  by TRL's ``RewardTrainer`` (the Bradley-Terry loss) on BBQ preference pairs (``llmcourse.bbq``);
- direct preference optimisation: TRL's ``DPOTrainer`` with a peft LoRA adapter, the reference being the same
  model with its adapters disabled; and the mean per-token KL(policy || reference) over response tokens.

The trained adapters and the reward model's held-out rewards are cached with ``cached_run`` (the adapters as
tensors, put back into a fresh peft model), so a second run of the lesson does not retrain.

These helpers run the mechanisms of chapter 11's exercises (``response_only_labels``, ``add_lora``,
``reward_model_step``, ``dpo_loss``) through the libraries; each exercise forbids them (``grader/forbidden.py``).
"""

import itertools
import random
import re
import time

import numpy as np
import torch

from llmcourse import bbq
from llmcourse.cache import cached_run
from llmcourse.data import SEED
from llmcourse.evaluation import chat_prompt, read, read_continuations
from llmcourse.prompting import PromptFormat

ZERO_SHOT = PromptFormat("Review/Sentiment")  # chapter 05's zero-shot prompt: "Review: ...\nSentiment:"
LORA_TARGETS = ("q_proj", "v_proj")  # SFT: the attention's query and value projections
# DPO: every linear layer of the blocks (with the query and value projections alone, 24 steps moved the held-out
# stereotyped share by 2 points, an interval touching no change; with all of them by 5, its interval excluding it)
DPO_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# The lesson's DPO runs, by mode (pairs per step in batch_size; held-out items to measure; items for the KL).
# benchmarks/dpo_beta_sweep.py repeats the full run at several betas and the quick run at the lesson's beta, and
# tests/test_instruct.py checks the quick run against it. 128 disambiguated items, not 64: near 55 % accuracy one
# item is 1.6 points of the 5 that accuracy may lose.
LESSON_DPO = {"full": {"beta": 0.25, "steps": 24, "batch_size": 8, "lr": 5e-4, "n_ambiguous": 128,
                       "n_disambiguated": 128, "n_kl": 32},
              "quick": {"beta": 0.25, "steps": 3, "batch_size": 4, "lr": 2e-3, "n_ambiguous": 16,
                        "n_disambiguated": 16, "n_kl": 8}}
SWEEP_FILE = "dpo_beta_sweep.json"
# the reward model's held-out pairs (reward_test_pairs): both questions of n_contexts contexts, n_other pairs of
# each other kind
LESSON_REWARD_TEST = {"full": {"n_contexts": 208, "n_other": 104}, "quick": {"n_contexts": 24, "n_other": 48}}


def lora_config(r: int = 8, alpha: int = 16, targets=LORA_TARGETS):
    """peft's LoRA configuration for SmolLM2's attention projections (no dropout: the runs are short)."""
    from peft import LoraConfig

    return LoraConfig(r=r, lora_alpha=alpha, target_modules=list(targets), lora_dropout=0.0, task_type="CAUSAL_LM")


def parameter_counts(model) -> dict:
    """Trainable and total parameters of a (peft) model."""
    return {"trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "total": sum(p.numel() for p in model.parameters())}


def _quiet_trainer_logs():
    import warnings

    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\.")  # renamed arguments


def _adapter_state(model) -> dict:
    from peft import get_peft_model_state_dict
    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}


def with_adapter(base_model, state: dict, config):
    """``base_model`` wrapped by peft with a LoRA adapter holding the weights ``state`` (a cached run's)."""
    from peft import PeftModel, get_peft_model, set_peft_model_state_dict

    model = base_model if isinstance(base_model, PeftModel) else get_peft_model(base_model, config)
    set_peft_model_state_dict(model, state)
    return model.eval()


# ---------------------------------------------------------------- supervised fine-tuning

def sft_dataset(n: int, seed: int = SEED, fmt: PromptFormat = ZERO_SHOT):
    """``n`` training sentences of the course's sentiment data as prompt/completion pairs: the prompt chapter 05's
    zero-shot prompt, the completion one label word (" positive" or " negative")."""
    from datasets import Dataset

    from llmcourse.data import sentiment

    train = sentiment()["train"].shuffle(seed=seed).select(range(n))
    return Dataset.from_list([{"prompt": fmt.query(text), "completion": " " + fmt.labels[label]}
                              for text, label in zip(train["text"], train["label"])])


def sentiment_test(n: int, seed: int = SEED) -> tuple[list, list]:
    """(texts, labels) of chapter 05's held-out sentences: the test split shuffled with ``seed``, the first n."""
    from llmcourse.data import sentiment

    test = sentiment()["test"].shuffle(seed=seed).select(range(n))
    return list(test["text"]), list(test["label"])


def _train(trainer) -> dict:
    """Train; then give the model back its own float32 forward. TRL trains in bf16 (its default, about 1.6 times
    faster here) and accelerate leaves the trained model's forward in bf16 autocast: its rewards came out rounded to
    1/64 (a third of the reward model's pairs of two people tied) and a freshly trained model measured otherwise
    than its cached adapter."""
    from accelerate.utils import extract_model_from_parallel

    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    extract_model_from_parallel(trainer.model, keep_fp32_wrapper=False)  # in place: the forward's autocast is gone
    logs = [h for h in trainer.state.log_history if "loss" in h]
    return {"seconds": seconds, "seconds_per_step": seconds / max(trainer.state.global_step, 1),
            "steps": trainer.state.global_step, "log": logs}


def train_sft(model, tokenizer, steps: int, batch_size: int = 8, lr: float = 5e-4, r: int = 8, seed: int = SEED,
              retrain: bool | None = None):
    """SFT of ``model`` with a LoRA adapter (peft) through TRL's ``SFTTrainer``, the loss on the completion only.

    Returns (the peft model, in eval mode, a dict: ``seconds_per_step``, ``steps``, ``log`` (TRL's logged
    losses), ``example`` (one tokenized training row: ``input_ids`` and ``scored``, 1 where the loss is taken)).
    Cached: the adapter's weights.
    """
    from trl import SFTConfig, SFTTrainer

    config = lora_config(r, 2 * r)
    data = sft_dataset(steps * batch_size, seed)
    key = {"model": model.config.name_or_path, "steps": steps, "batch_size": batch_size, "lr": lr, "r": r, "seed": seed}
    holder = {}

    def compute() -> dict:
        _quiet_trainer_logs()
        torch.manual_seed(seed)
        args = SFTConfig(output_dir=str(_scratch("sft")), learning_rate=lr, per_device_train_batch_size=batch_size,
                         max_steps=steps, logging_steps=max(1, steps // 8), report_to=[], save_strategy="no",
                         seed=seed, use_cpu=not torch.cuda.is_available(), completion_only_loss=True,
                         disable_tqdm=False, max_length=256)
        model.train()
        trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer, peft_config=config)
        result = _train(trainer)
        holder["model"] = trainer.model
        row = trainer.train_dataset[0]
        mask = row.get("completion_mask") or [int(label != -100) for label in row.get("labels", [])]
        return {**result, "adapter": _adapter_state(trainer.model),
                "example": {"input_ids": list(row["input_ids"]), "scored": list(mask)}}

    run = cached_run("sft-lora", key, compute, retrain=retrain)
    tuned = holder.get("model") or with_adapter(model, run["adapter"], config)
    return tuned.eval(), run


def _scratch(name: str):
    from llmcourse.cache import cache_dir
    return cache_dir("scratch", name)


# ---------------------------------------------------------------- the reward model

def marked_context(item, answer: int) -> str:
    """The item's context with every mention of the answer's person between ``**`` marks ("entity markers"), so
    the encoder can compare what the context says about that person with the question. "Cannot be determined"
    marks nothing."""
    core = re.sub(r"^(the|a|an) ", "", item.answers[answer], flags=re.IGNORECASE)
    mention = re.compile(r"\b((?:the|a|an) )?" + re.escape(core) + r"\b", flags=re.IGNORECASE)
    return mention.sub(lambda m: f"** {m.group(0)} **", item.context)


def reward_text(tokenizer, item, answer: int) -> list[int]:
    """One answer as MiniLM token ids: [CLS] marked context [SEP] question answer [SEP]."""
    return tokenizer(marked_context(item, answer), f"{item.question} {item.answers[answer]}", truncation=True,
                     max_length=256)["input_ids"]


def reward_rows(tokenizer, pairs: list) -> list[dict]:
    """Each (item, preferred, rejected) as the two token-id lists TRL's ``RewardTrainer`` reads."""
    return [{"chosen_ids": reward_text(tokenizer, item, good), "rejected_ids": reward_text(tokenizer, item, bad)}
            for item, good, bad in pairs]


def all_pairs(items: list) -> list:
    """Every preference pair of ``items``: BBQ's (``bbq.preference_pairs``) and, in a disambiguated context, the
    correct person over "unknown" (the context settles the question, so "unknown" is wrong there)."""
    return bbq.preference_pairs(items) + [(i, i.label, i.unknown) for i in items if not i.ambiguous]


PAIR_KINDS = ("ambiguous", "over unknown", "two people")


def pair_kind(pair) -> str:
    """"ambiguous" ("unknown" over the stereotyped person), "two people" (the correct person over the other) or
    "over unknown" (the correct person over "unknown")."""
    item, _, rejected = pair
    return "ambiguous" if item.ambiguous else "over unknown" if rejected == item.unknown else "two people"


def pairs_by_kind(items: list) -> dict:
    """``all_pairs(items)`` grouped by ``pair_kind``, in the order of ``PAIR_KINDS``."""
    kinds = {kind: [] for kind in PAIR_KINDS}
    for pair in all_pairs(items):
        kinds[pair_kind(pair)].append(pair)
    return kinds


def reward_pairs(items: list, seed: int = SEED) -> list:
    """The reward model's training pairs: every pair of ``all_pairs(items)`` (the three kinds about equally
    often), shuffled with ``seed``."""
    pairs = all_pairs(items)
    random.Random(seed).shuffle(pairs)
    return pairs


def reward_test_pairs(held_out: list, n_contexts: int, n_other: int, seed: int = SEED) -> list:
    """The reward model's held-out pairs: both pairs of two people (one per question) of ``n_contexts``
    disambiguated contexts, and ``n_other`` pairs of each other kind, drawn with ``seed``."""
    rng = random.Random(seed)
    kinds = pairs_by_kind(held_out)
    contexts = sorted({item.context for item, _, _ in kinds["two people"]})
    chosen = set(rng.sample(contexts, min(n_contexts, len(contexts))))
    pairs = [pair for pair in kinds["two people"] if pair[0].context in chosen]
    for kind in ("ambiguous", "over unknown"):
        pairs += rng.sample(kinds[kind], min(n_other, len(kinds[kind])))
    return pairs


def train_reward_model(train_pairs: list, test_pairs: list, steps: int, batch_size: int = 16, lr: float = 5e-5,
                       seed: int = SEED, retrain: bool | None = None) -> dict:
    """MiniLM with a scalar head trained by TRL's ``RewardTrainer`` (Bradley-Terry: mean of -log sigma(r_chosen -
    r_rejected)) on ``train_pairs``; returns the rewards of ``test_pairs`` (``chosen``, ``rejected``, arrays), the
    training log and the time per step. Cached."""
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    from llmcourse.models import DEFAULT_ENCODER, ENCODERS, resolve

    source = resolve(None, ENCODERS, DEFAULT_ENCODER)
    key = {"encoder": DEFAULT_ENCODER, "train": [(i.example_id, g, b) for i, g, b in train_pairs][:steps * batch_size],
           "test": [(i.example_id, g, b) for i, g, b in test_pairs], "steps": steps, "batch_size": batch_size,
           "lr": lr, "seed": seed}

    def compute() -> dict:
        _quiet_trainer_logs()
        torch.manual_seed(seed)
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=1)
        args = RewardConfig(output_dir=str(_scratch("reward")), learning_rate=lr,
                            per_device_train_batch_size=batch_size, max_steps=steps,
                            logging_steps=max(1, steps // 8), report_to=[], save_strategy="no",
                            seed=seed, use_cpu=not torch.cuda.is_available(), disable_tqdm=False)
        train = Dataset.from_list(reward_rows(tokenizer, train_pairs[:steps * batch_size]))
        trainer = RewardTrainer(model=model, args=args, processing_class=tokenizer, train_dataset=train)
        result = _train(trainer)
        model.eval()
        rewards = {"chosen": [], "rejected": []}
        rows = reward_rows(tokenizer, test_pairs)
        with torch.no_grad():
            for side in rewards:
                for start in range(0, len(rows), 64):
                    batch = tokenizer.pad({"input_ids": [r[f"{side}_ids"] for r in rows[start:start + 64]]},
                                          return_tensors="pt").to(model.device)
                    rewards[side].append(model(**batch).logits[:, 0].cpu())  # (b,) one scalar per text
        return {**result, "chosen": torch.cat(rewards["chosen"]),  # tensors: cached_run stores them (not numpy)
                "rejected": torch.cat(rewards["rejected"]),
                "parameters": sum(p.numel() for p in model.parameters())}

    run = cached_run("reward-model", key, compute, retrain=retrain)
    return {**run, "chosen": np.asarray(run["chosen"]), "rejected": np.asarray(run["rejected"])}


def share_with_interval(values, groups, samples: int = bbq.BOOTSTRAP_SAMPLES, seed: int = SEED) -> dict:
    """The mean of 0/1 ``values`` and its 95 % interval from a bootstrap over ``groups`` (BBQ's templates)."""
    values = np.asarray(values, dtype=float)
    means = [values[rows].mean() for rows in bbq.template_resamples(groups, samples, seed)]
    return {"share": float(values.mean()), "interval": bbq.interval(means), "n": len(values)}


def accuracy_by_kind(pairs: list, right) -> dict:
    """Per kind of pair (``PAIR_KINDS``): the share of ``pairs`` whose preferred answer got the higher reward
    (``right``, one bool per pair), with its 95 % interval from a bootstrap over templates."""
    right = np.asarray(right)
    kinds = np.array([pair_kind(pair) for pair in pairs])
    templates = np.array([item.template for item, _, _ in pairs])
    return {kind: share_with_interval(right[kinds == kind], templates[kinds == kind]) for kind in PAIR_KINDS}


DISAMBIGUATED_KINDS = ("over unknown", "two people")
ALWAYS_UNKNOWN = {"ambiguous": 1.0, "over unknown": 0.0, "two people": 0.5}  # its share right; a coin between people


def disambiguated_accuracy(pairs: list, right, samples: int = bbq.BOOTSTRAP_SAMPLES, seed: int = SEED) -> dict:
    """On the pairs from disambiguated contexts, their two kinds weighted equally: the share whose preferred answer
    got the higher reward (``right``), its 95 % interval from a bootstrap over templates, and what a model that
    always prefers "unknown" scores on the same pairs (``baseline``)."""
    right = np.asarray(right, dtype=float)
    kinds = np.array([pair_kind(pair) for pair in pairs])
    templates = np.array([item.template for item, _, _ in pairs])

    def balanced(rows) -> float:
        return float(np.mean([right[rows][kinds[rows] == kind].mean() for kind in DISAMBIGUATED_KINDS]))

    shares = [balanced(rows) for rows in bbq.template_resamples(templates, samples, seed)]
    return {"share": balanced(np.arange(len(right))), "interval": bbq.interval(shares),
            "baseline": float(np.mean([ALWAYS_UNKNOWN[kind] for kind in DISAMBIGUATED_KINDS])),
            "n": int(np.isin(kinds, DISAMBIGUATED_KINDS).sum())}


def same_person_share(pairs: list, right) -> dict:
    """Over the contexts whose two questions (BBQ asks a negative and a non-negative one of each context, with
    opposite answers) both have a pair of two people in ``pairs``: how many times the reward model preferred the
    same person for both (``right``: whether each pair's preferred answer got the higher reward). A model that
    ignores the question always does, and is then right on exactly one of the two."""
    preferred = {}
    for (item, good, bad), ok in zip(pairs, right):
        if pair_kind((item, good, bad)) == "two people":
            preferred.setdefault(item.context, []).append(item.answers[good if ok else bad])
    both = [people for people in preferred.values() if len(people) == 2]
    return {"same": sum(len(set(people)) == 1 for people in both), "contexts": len(both)}


# ---------------------------------------------------------------- direct preference optimisation

def dpo_pairs(items: list, n: int, seed: int = SEED) -> list:
    """``n`` preference pairs from ``items`` (training templates), shuffled: half ambiguous ("unknown" over the
    stereotyped answer), a quarter of two people (the correct person over the other) and a quarter of the correct
    person over "unknown" (so the model learns when "unknown" is not the answer)."""
    rng = random.Random(seed)
    kinds = pairs_by_kind(items)
    for kind in ("ambiguous", "two people", "over unknown"):  # this order: the seed's draws stay those of the sweep
        rng.shuffle(kinds[kind])
    pairs = kinds["ambiguous"][:n // 2] + kinds["two people"][:n // 4] + kinds["over unknown"][:n - n // 2 - n // 4]
    rng.shuffle(pairs)
    return pairs


def dpo_dataset(tokenizer, pairs: list):
    """TRL's preference format: prompt (the chat prompt), chosen and rejected (answer strings)."""
    from datasets import Dataset

    return Dataset.from_list([{"prompt": chat_prompt(tokenizer, item.prompt()), "chosen": item.answers[good],
                               "rejected": item.answers[bad]} for item, good, bad in pairs])


def train_dpo(model, tokenizer, pairs: list, beta: float, steps: int, batch_size: int = 8, lr: float = 5e-4,
              r: int = 8, seed: int = SEED, retrain: bool | None = None, micro_batch: int = 4,
              targets=DPO_TARGETS):
    """DPO of ``model`` with a LoRA adapter through TRL's ``DPOTrainer`` (no ``ref_model``: the reference is the
    model with its adapter disabled). Each step's ``batch_size`` pairs go through in micro-batches of
    ``micro_batch`` (gradient accumulation: the same step, half the activations' memory). Returns (the peft model
    in eval mode, a dict: ``seconds_per_step``, ``steps``, ``log`` (TRL's logged loss, rewards/chosen,
    rewards/rejected, rewards/margins, ...)). Cached."""
    from trl import DPOConfig, DPOTrainer

    config = lora_config(r, 2 * r, targets)
    pairs = pairs[:steps * batch_size]
    key = {"model": model.config.name_or_path, "pairs": [(i.example_id, g, b) for i, g, b in pairs], "beta": beta,
           "steps": steps, "batch_size": batch_size, "micro_batch": micro_batch, "lr": lr, "r": r, "seed": seed,
           "targets": list(targets)}
    holder = {}

    def compute() -> dict:
        _quiet_trainer_logs()
        torch.manual_seed(seed)
        args = DPOConfig(output_dir=str(_scratch("dpo")), beta=beta, learning_rate=lr,
                         per_device_train_batch_size=min(micro_batch, batch_size),
                         gradient_accumulation_steps=max(1, batch_size // micro_batch), max_steps=steps,
                         logging_steps=max(1, steps // 8),
                         report_to=[], save_strategy="no", seed=seed, use_cpu=not torch.cuda.is_available(),
                         max_length=256, disable_tqdm=False)
        model.train()
        trainer = DPOTrainer(model=model, args=args, train_dataset=dpo_dataset(tokenizer, pairs),
                             processing_class=tokenizer, peft_config=config)
        result = _train(trainer)
        holder["model"] = trainer.model
        return {**result, "adapter": _adapter_state(trainer.model)}

    run = cached_run("dpo-lora", key, compute, retrain=retrain)
    tuned = holder.get("model") or with_adapter(model, run["adapter"], config)
    return tuned.eval(), run


def _response_logprobs(model, prompt_ids: list, ids: torch.Tensor) -> torch.Tensor:
    """(n, w, V) next-token log-distributions at the positions that predict each row of ``ids`` (n, w) after
    ``prompt_ids``: the prompt is read once and its KV cache shared by the rows."""
    context = read(model, prompt_ids)
    first = context.next_logprobs.expand(len(ids), 1, -1)  # (n, 1, V): predicts each row's first token
    if ids.shape[1] == 1:
        return first
    rest = read_continuations(model, context, ids[:, :-1])  # (n, w - 1, V)
    return torch.cat([first, rest], 1)


@torch.no_grad()
def response_kl(model, tokenizer, prompts: list, responses: list) -> float:
    """Mean per-token KL(policy || reference) in nats over the response tokens: at every position that predicts a
    response token, the KL between the two next-token distributions over the whole vocabulary. ``model`` is a
    peft model; the reference is the same model with its adapter disabled. Consecutive responses to one prompt go
    through in one batch, after the prompt read once."""
    total, count = 0.0, 0
    for prompt, group in itertools.groupby(zip(prompts, responses), key=lambda pair: pair[0]):
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        response_ids = [tokenizer(response, add_special_tokens=False)["input_ids"] for _, response in group]
        width = max(map(len, response_ids))
        # right padding: no real token attends to it
        ids = torch.tensor([r + [0] * (width - len(r)) for r in response_ids], device=model.device)  # (n, w)
        policy = _response_logprobs(model, prompt_ids, ids)  # (n, w, V)
        with model.disable_adapter():
            reference = _response_logprobs(model, prompt_ids, ids)
        kl = (policy.exp() * (policy - reference)).sum(-1)  # (n, w)
        real = torch.tensor([[True] * len(r) + [False] * (width - len(r)) for r in response_ids], device=kl.device)
        total += kl[real].sum().item()
        count += int(real.sum())
    return total / max(count, 1)


def measure(model, tokenizer, items: list, progress: bool = True) -> dict:
    """``llmcourse.bbq``'s answers (mean per-token log-likelihood of each answer string) of ``items``."""
    return bbq.per_item(items, bbq.answer_scores(model, tokenizer, items, progress=progress))


def evaluation_items(held_out: list, n_ambiguous: int, n_disambiguated: int, seed: int = SEED) -> list:
    """``n_ambiguous`` held-out ambiguous items, then ``n_disambiguated`` disambiguated ones, drawn with ``seed``."""
    rng = random.Random(seed)
    ambiguous = [i for i in held_out if i.ambiguous]
    disambiguated = [i for i in held_out if not i.ambiguous]
    return rng.sample(ambiguous, n_ambiguous) + rng.sample(disambiguated, n_disambiguated)


def kl_items(eval_items: list, n_kl: int) -> list:
    """The items whose answers the KL is measured on: the first ``n_kl // 2`` ambiguous and disambiguated ones."""
    ambiguous = [i for i in eval_items if i.ambiguous]
    return ambiguous[:n_kl // 2] + [i for i in eval_items if not i.ambiguous][:n_kl - n_kl // 2]


def kl_on_answers(model, tokenizer, items: list) -> float:
    """``response_kl`` over the three answers of each item, after its chat prompt."""
    prompts = [chat_prompt(tokenizer, i.prompt()) for i in items for _ in i.answers]
    return response_kl(model, tokenizer, prompts, [a for i in items for a in i.answers])


def dpo_point(model, tokenizer, train_items: list, held_out: list, config: dict, before: dict | None = None,
              retrain: bool | None = None) -> dict:
    """One DPO run of the lesson's measurement: train on ``config``'s pairs from ``train_items``, then the held-out
    metrics' changes with their intervals (``bbq.paired_bootstrap``), the KL and the last logged reward margin.
    ``before``: the untuned model's answers on the same items, when already measured. The model comes back
    without its adapter."""
    items = evaluation_items(held_out, config["n_ambiguous"], config["n_disambiguated"])
    before = measure(model, tokenizer, items) if before is None else before
    pairs = dpo_pairs(train_items, config["steps"] * config["batch_size"])
    tuned, run = train_dpo(model, tokenizer, pairs, beta=config["beta"], steps=config["steps"],
                           batch_size=config["batch_size"], lr=config["lr"], retrain=retrain)
    change = bbq.paired_bootstrap(items, before, measure(tuned, tokenizer, items))
    kl = kl_on_answers(tuned, tokenizer, kl_items(items, config["n_kl"]))
    tuned.unload()
    return {"beta": config["beta"], "kl": kl, "margin": float(run["log"][-1]["rewards/margins"]),
            "seconds_per_step": run["seconds_per_step"],
            **{name: float(c["after"]) for name, c in change.items()},
            "before": {name: float(c["before"]) for name, c in change.items()},
            "changes": {name: {"change": float(c["change"]), "interval": [float(x) for x in c["interval"]]}
                        for name, c in change.items()}}


def load_beta_sweep() -> dict | None:
    """The committed result of ``benchmarks/dpo_beta_sweep.py`` (``llmcourse/course_data/dpo_beta_sweep.json``),
    or None when it is not there."""
    import json

    from llmcourse.data import course_file

    path = course_file(SWEEP_FILE)
    return None if path is None else json.loads(path.read_text(encoding="utf-8"))


def sweep_point(sweep: dict, beta: float) -> dict | None:
    """The sweep's run at ``beta``, or None."""
    return next((run for run in sweep["runs"] if abs(run["beta"] - beta) < 1e-12), None)
