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

import random
import time

import numpy as np
import torch

from llmcourse import bbq
from llmcourse.cache import cached_run
from llmcourse.data import SEED
from llmcourse.prompting import PromptFormat

ZERO_SHOT = PromptFormat("Review/Sentiment")  # chapter 05's zero-shot prompt: "Review: ...\nSentiment:"
LORA_TARGETS = ("q_proj", "v_proj")
# the lesson's full-mode DPO run; benchmarks/dpo_beta_sweep.py runs the same at several betas
LESSON_DPO = {"beta": 0.25, "steps": 24, "batch_size": 8, "lr": 5e-4, "n_eval": 64, "n_kl": 32}
SWEEP_FILE = "dpo_beta_sweep.json"


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
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    logs = [h for h in trainer.state.log_history if "loss" in h]
    return {"seconds": seconds, "seconds_per_step": seconds / max(trainer.state.global_step, 1),
            "steps": trainer.state.global_step, "log": logs}


def train_sft(model, tokenizer, steps: int, batch_size: int = 8, lr: float = 5e-4, r: int = 8, seed: int = SEED,
              retrain: bool | None = None):
    """SFT of ``model`` with a LoRA adapter (peft) through TRL's ``SFTTrainer``, the loss on the completion only.

    Returns (the peft model, in eval mode, a dict: ``seconds_per_step``, ``steps``, ``log`` (TRL's logged
    losses), ``example`` (one tokenized training row: ``input_ids`` and ``scored``, 1 where the loss is taken)). Cached: the adapter's weights.
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

def reward_rows(tokenizer, pairs: list) -> list[dict]:
    """Each (item, preferred, rejected) as MiniLM token ids: [CLS] context question [SEP] answer [SEP]."""
    return [{"chosen_ids": tokenizer(item.prompt(), item.answers[good], truncation=True, max_length=256)["input_ids"],
             "rejected_ids": tokenizer(item.prompt(), item.answers[bad], truncation=True, max_length=256)["input_ids"]}
            for item, good, bad in pairs]


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
        args = RewardConfig(output_dir=str(_scratch("reward")), learning_rate=lr, per_device_train_batch_size=batch_size,
                            max_steps=steps, logging_steps=max(1, steps // 8), report_to=[], save_strategy="no",
                            seed=seed, use_cpu=not torch.cuda.is_available(), disable_tqdm=False)
        trainer = RewardTrainer(model=model, args=args, processing_class=tokenizer,
                                train_dataset=Dataset.from_list(reward_rows(tokenizer, train_pairs[:steps * batch_size])))
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
    values, groups = np.asarray(values, dtype=float), np.asarray(groups)
    names = sorted(set(groups.tolist()))
    rows = {g: np.flatnonzero(groups == g) for g in names}
    rng = np.random.default_rng(seed)
    means = [values[np.concatenate([rows[g] for g in rng.choice(names, len(names))])].mean() for _ in range(samples)]
    tail = (1 - bbq.CONFIDENCE) / 2 * 100
    return {"share": float(values.mean()), "interval": tuple(float(x) for x in np.percentile(means, [tail, 100 - tail])),
            "n": len(values)}


# ---------------------------------------------------------------- direct preference optimisation

def dpo_pairs(items: list, n: int, seed: int = SEED) -> list:
    """``n`` preference pairs from ``items`` (training templates): half ambiguous ("unknown" over the stereotyped
    answer), a quarter disambiguated (the correct person over the other) and a quarter disambiguated with the
    correct person over "unknown" (so the model learns when "unknown" is not the answer), shuffled."""
    rng = random.Random(seed)
    ambiguous = [p for p in bbq.preference_pairs(items) if p[0].ambiguous]
    person = [p for p in bbq.preference_pairs(items) if not p[0].ambiguous]
    known = [(i, i.label, i.unknown) for i in items if not i.ambiguous]
    for group in (ambiguous, person, known):
        rng.shuffle(group)
    pairs = ambiguous[:n // 2] + person[:n // 4] + known[:n - n // 2 - n // 4]
    rng.shuffle(pairs)
    return pairs


def chat_prompt(tokenizer, item) -> str:
    """The item's question as the user's turn of SmolLM2's chat template, ready for the assistant's answer."""
    return tokenizer.apply_chat_template([{"role": "user", "content": item.prompt()}], tokenize=False,
                                         add_generation_prompt=True)


def dpo_dataset(tokenizer, pairs: list):
    """TRL's preference format: prompt (the chat prompt), chosen and rejected (answer strings)."""
    from datasets import Dataset

    return Dataset.from_list([{"prompt": chat_prompt(tokenizer, item), "chosen": item.answers[good],
                               "rejected": item.answers[bad]} for item, good, bad in pairs])


def train_dpo(model, tokenizer, pairs: list, beta: float, steps: int, batch_size: int = 8, lr: float = 5e-4,
              r: int = 8, seed: int = SEED, retrain: bool | None = None):
    """DPO of ``model`` with a LoRA adapter through TRL's ``DPOTrainer`` (no ``ref_model``: the reference is the
    model with its adapter disabled). Returns (the peft model in eval mode, a dict: ``seconds_per_step``,
    ``steps``, ``log`` (TRL's logged loss, rewards/chosen, rewards/rejected, rewards/margins, ...)). Cached."""
    from trl import DPOConfig, DPOTrainer

    config = lora_config(r, 2 * r)
    pairs = pairs[:steps * batch_size]
    key = {"model": model.config.name_or_path, "pairs": [(i.example_id, g, b) for i, g, b in pairs], "beta": beta,
           "steps": steps, "batch_size": batch_size, "lr": lr, "r": r, "seed": seed}
    holder = {}

    def compute() -> dict:
        _quiet_trainer_logs()
        torch.manual_seed(seed)
        args = DPOConfig(output_dir=str(_scratch("dpo")), beta=beta, learning_rate=lr,
                         per_device_train_batch_size=batch_size, max_steps=steps, logging_steps=max(1, steps // 8),
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


@torch.no_grad()
def response_kl(model, tokenizer, prompts: list, responses: list) -> float:
    """Mean per-token KL(policy || reference) in nats over the response tokens: at every position that predicts a
    response token, the KL between the two next-token distributions over the whole vocabulary. ``model`` is a
    peft model; the reference is the same model with its adapter disabled."""
    total, count = 0.0, 0
    for prompt, response in zip(prompts, responses):
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([prompt_ids + response_ids], device=model.device)  # (1, T)
        scored = slice(len(prompt_ids) - 1, ids.shape[1] - 1)  # the positions that predict the response's tokens
        policy = torch.log_softmax(model(ids).logits[0, scored].float(), -1)  # (n, V)
        with model.disable_adapter():
            reference = torch.log_softmax(model(ids).logits[0, scored].float(), -1)
        total += (policy.exp() * (policy - reference)).sum().item()
        count += len(response_ids)
    return total / max(count, 1)


def measure(model, tokenizer, items: list, progress: bool = True) -> dict:
    """``llmcourse.bbq``'s answers (mean per-token log-likelihood of each answer string) of ``items``."""
    return bbq.per_item(items, bbq.answer_scores(model, tokenizer, items, progress=progress))


def evaluation_items(held_out: list, n_each: int, seed: int = SEED) -> list:
    """``n_each`` held-out ambiguous and ``n_each`` held-out disambiguated items, drawn with ``seed``."""
    rng = random.Random(seed)
    ambiguous = [i for i in held_out if i.ambiguous]
    disambiguated = [i for i in held_out if not i.ambiguous]
    return rng.sample(ambiguous, min(n_each, len(ambiguous))) + rng.sample(disambiguated, min(n_each, len(disambiguated)))


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
