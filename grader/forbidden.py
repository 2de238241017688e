"""What an exercise forbids: the library function that it asks the learner to build.

While a check runs the learner's function (``enforced``), every alias of each forbidden function is
replaced by a guard. The guard looks at who called it, skipping the frames of torch and of the
standard library (so ``nn.LayerNorm(...)(x)`` counts as a call of ``F.layer_norm`` from the learner's
code). When that caller is the learner's code, the guard raises ``ForbiddenCall`` saying what to use
instead; when it is a library (a Hugging Face model, the grader, ``llmcourse``), it calls the
original, so models keep working inside a check. A forbidden call that the learner's code catches
and hides is still recorded, and fails the case.
"""

import importlib
import importlib.util
import os
import sys
import sysconfig
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Forbidden:
    """A library function an exercise rebuilds: its name in the exercise text, its aliases, the way instead."""

    name: str  # as the exercise's text names it: "torch.softmax"
    targets: tuple  # every alias as (module, attribute path): ("torch", "Tensor.softmax")
    instead: str  # what to use: "use `exp`, `max` and `sum`"

    def message(self, alias: str, via: str | None = None) -> str:
        called = f"`{via}` (it calls `{alias}`)" if via else f"`{alias}`"
        return f"{called} is what this exercise builds: {self.instead}"

    @property
    def mistake(self) -> str:
        return f"calls `{self.name}`, which this exercise asks you to build yourself"


class ForbiddenCall(RuntimeError):
    """The learner's code called a function that the exercise forbids."""

    def __init__(self, forbidden: Forbidden, message: str):
        super().__init__(message)
        self.forbidden = forbidden


def _alias(module: str, path: str) -> str:
    short = {"torch.nn.functional": "F", "torch.nn": "nn", "numpy": "np", "transformers.models.bert.modeling_bert": "",
             "transformers.generation.logits_process": ""}
    prefix = short.get(module, module)
    return f"{prefix}.{path}" if prefix else path


# ---------------------------------------------------------------- the course's forbidden functions

SOFTMAX = Forbidden(
    "torch.softmax",
    (("torch", "softmax"), ("torch", "Tensor.softmax"), ("torch.nn.functional", "softmax"),
     ("torch.special", "softmax"), ("torch", "log_softmax"), ("torch", "Tensor.log_softmax"),
     ("torch.nn.functional", "log_softmax"), ("torch.special", "log_softmax")),
    "use `exp`, `max` and `sum`, since making softmax stable for scores as large as 1e4 is the exercise")
SDPA = Forbidden(
    "F.scaled_dot_product_attention",
    (("torch.nn.functional", "scaled_dot_product_attention"),
     *((f"transformers.models.{family}.modeling_{family}", "eager_attention_forward") for family in ("bert", "llama")),
     ("transformers.integrations.sdpa_attention", "sdpa_attention_forward")),
    "the lesson computes attention's weights and applies its causal mask with it; build this exercise from tensor "
    "operations yourself (in attention: matrix products and your own `softmax` from exercise 1), since the "
    "normalising, the scaling and the masking, in your own code, are what this chapter builds")
MULTIHEAD = Forbidden(
    "nn.MultiheadAttention",
    (("torch.nn.functional", "multi_head_attention_forward"), ("torch", "_native_multi_head_attention")),
    "build multi-head attention from your own `split_heads` and `merge_heads`, matrix products and a softmax "
    "(`F.scaled_dot_product_attention` is allowed), since running the heads side by side is the exercise; "
    "in `bert_layer`, call your `multi_head_attention`")
LAYER_NORM = Forbidden(
    "F.layer_norm",
    (("torch.nn.functional", "layer_norm"), ("torch", "layer_norm"), ("torch", "native_layer_norm")),
    "use `mean`, `var` and `sqrt`, since which variance LayerNorm takes and where its eps goes are the exercise; "
    "in `bert_layer`, call your `layer_norm`")
QUANTIZE = Forbidden(
    "torch.quantize_per_tensor",
    (("torch", "quantize_per_tensor"), ("torch", "quantize_per_tensor_dynamic"), ("torch", "quantize_per_channel"),
     ("torch", "fake_quantize_per_tensor_affine"), ("torch", "fake_quantize_per_channel_affine"),
     ("torch.ao.quantization.observer", "MinMaxObserver.calculate_qparams"),
     ("torch.ao.quantization.observer", "PerChannelMinMaxObserver.calculate_qparams")),
    "torch's quantizers and observers add a zero point and their own rounding and range; find the scale and the "
    "levels yourself with plain tensor operations, from the exercise's definition of absmax")
GGUF_QUANTIZE = Forbidden(
    "gguf.quants.quantize",
    (("gguf.quants", "quantize"), ("gguf", "quantize"), ("gguf.quants", "Q8_0.quantize"),
     ("gguf.quants", "Q4_0.quantize")),
    "GGUF's quantizers pack bytes with fp16 scales and round halves away from zero; find the per-block scales "
    "and the levels yourself with plain tensor operations")
ABSMAX_HELPERS = Forbidden(
    "llmcourse.open_models.absmax_round_trip",
    (("llmcourse.open_models", "absmax_round_trip"), ("llmcourse.open_models", "absmax_scale")),
    "the lesson's helpers run PyTorch's observers and fake quantizers, the absmax this exercise asks you to "
    "write: find the scales and the levels yourself with plain tensor operations")
TORCH_DEQUANTIZE = Forbidden(
    "torch.dequantize",
    (("torch", "dequantize"), ("torch", "Tensor.dequantize"), ("torch", "_make_per_tensor_quantized_tensor"),
     ("torch", "_make_per_channel_quantized_tensor")),
    "a quantized tensor of PyTorch reads itself back, which is what this exercise asks you to write: give each "
    "level the scale of its tensor or its block yourself, with plain tensor operations")
GGUF_DEQUANTIZE = Forbidden(
    "gguf.quants.dequantize",
    (("gguf.quants", "dequantize"), ("gguf", "dequantize"), ("gguf.quants", "Q8_0.dequantize"),
     ("gguf.quants", "Q4_0.dequantize"), ("gguf.quants", "Q4_1.dequantize"),
     ("llmcourse.open_models", "gguf_dequantized")),
    "GGUF's reader (and the lesson's `gguf_dequantized`, which calls it) unpacks bytes with fp16 scales; give "
    "each level the scale of its tensor or its block yourself, with plain tensor operations")
KV_CACHE_READ = Forbidden(
    "llmcourse.open_models.kv_cache",
    (("llmcourse.open_models", "kv_cache"), ("llmcourse.open_models", "cache_nbytes")),
    "the lesson reads the cache that a forward pass leaves; this exercise asks you to count its bytes from "
    "the shapes you are given")
TOP_K_WARPER = Forbidden(
    "TopKLogitsWarper",
    (("transformers.generation.logits_process", "TopKLogitsWarper.__call__"),),
    "it is the filter this exercise builds: find each row's k-th largest logit yourself (`torch.topk` is allowed) "
    "and write `-inf` over the logits below it")
TOP_P_WARPER = Forbidden(
    "TopPLogitsWarper",
    (("transformers.generation.logits_process", "TopPLogitsWarper.__call__"),),
    "it is the filter this exercise builds (and it splits ties differently): rank the tokens by probability "
    "yourself (`sort` and `cumsum` are allowed) and write `-inf` over the tokens outside the nucleus")
HARNESS_SCORING = Forbidden(
    "llmcourse.evaluation.choice_logprobs",
    tuple(("llmcourse.evaluation", name) for name in ("choice_logprobs", "continuation_logprobs", "read",
                                                      "read_continuations", "mean_token_logprob",
                                                      "evaluate_multiple_choice")),
    "the lesson's harness is what this exercise builds: call the model itself, so that you decide what it "
    "is run on (the prompt once, its KV cache reused for every choice)")
MULTIPLE_CHOICE_HARNESS = Forbidden(
    "llmcourse.evaluation.pick_choices",
    tuple(("llmcourse.evaluation", name) for name in ("pick_choices", "evaluate_multiple_choice",
                                                      "cached_multiple_choice")),
    "the lesson's harness picks every item's answer and the target score it earns, which is what this exercise "
    "builds: find each example's highest-scoring choice and its target score yourself, from the lists you are "
    "given")
ANSWER_READER = Forbidden(
    "llmcourse.evaluation.final_integers",
    (("llmcourse.evaluation", "final_integers"),),
    "the lesson's reader keeps only an integer after the answer phrase, and reading the final answer back is "
    "what this exercise builds: find the phrase's last occurrence and cut the answer out of the text yourself, "
    "as the exercise's steps say")
LAST_TOKEN_LOGPROBS = Forbidden(
    "llmcourse.bias.last_token_logprobs",
    (("llmcourse.bias", "last_token_logprobs"),),
    "the lesson's helper reads the next-token distribution after each prompt, which is what this exercise "
    "builds: call the model yourself")
WEAT_TEST = Forbidden(
    "llmcourse.bias.weat_test",
    (("llmcourse.bias", "weat_test"),),
    "the lesson's WEAT returns the effect size this exercise builds: compute each target word's association and "
    "the standardised difference yourself, from the embeddings you are given")
GPT2_MODEL = Forbidden(
    "GPT2LMHeadModel",
    tuple(("transformers.models.gpt2.modeling_gpt2", f"{cls}.{way}") for cls in ("GPT2LMHeadModel", "GPT2Model")
          for way in ("__init__", "_from_config"))
    + tuple(("transformers", f"{auto}.from_config") for auto in ("AutoModel", "AutoModelForCausalLM")),
    "building the model and counting its tensors is how the lesson checks the count; this exercise asks you to "
    "count the parts from the shapes yourself")
TRAINING_COST = Forbidden(
    "llmcourse.timeline.days_to_train",
    tuple(("llmcourse.timeline", name) for name in ("days_to_train", "implied_utilisation", "dense_training_flops",
                                                    "pretraining_costs")),
    "the lesson's cost helpers turn parameters, tokens and a cluster into FLOPs, days and utilisation, which is "
    "this exercise's arithmetic: work out what the cluster delivers and what each model's tokens cost yourself")
SEARCH_SCORES = Forbidden(
    "llmcourse.search.semantic_scores",
    (("llmcourse.search", "semantic_scores"),),
    "the lesson's helper scores documents by cosine similarity, which is part of what this exercise builds: "
    "compute the similarities from the embeddings you are given yourself")
SEARCH_RANKING = Forbidden(
    "llmcourse.search.ranking",
    (("llmcourse.search", "ranking"),),
    "the lesson's helper orders documents best first, which is part of what this exercise builds: order the "
    "indices by similarity yourself (ties: lower index first)")
COSINE = Forbidden(
    "F.cosine_similarity",
    (("torch.nn.functional", "cosine_similarity"), ("torch", "cosine_similarity")),
    "the lesson compares vectors with it; compute the cosines from dot products and lengths yourself")
HF_BERT_LAYER = Forbidden(
    "BertLayer",
    tuple(("transformers.models.bert.modeling_bert", f"{cls}.forward")
          for cls in ("BertLayer", "BertAttention", "BertSelfAttention", "BertSelfOutput", "BertIntermediate",
                      "BertOutput", "BertEncoder")),
    "use your own `multi_head_attention`, `layer_norm` and `feed_forward`, since how BERT wires them together "
    "(residuals, LayerNorms, the padding mask) is the exercise")
HF_LAYER_OUTPUT = Forbidden(
    "llmcourse.transformer.hf_layer_output",
    (("llmcourse.transformer", "hf_layer_output"),),
    "it runs Hugging Face's own layer, the lesson's reference for a layer you write: wire your "
    "`multi_head_attention`, `layer_norm` and `feed_forward` together yourself")

PREDICT = Forbidden(
    "llmcourse.finetune.predict",
    (("llmcourse.finetune", "predict"),),
    "run the model over the batches yourself, in eval mode and without gradients, and keep count of the loss "
    "and the right predictions batch by batch")
HELDOUT_ACCURACY = Forbidden(
    "llmcourse.finetune.heldout_accuracy",
    (("llmcourse.finetune", "heldout_accuracy"),),
    "count the right predictions (the argmax over the classes equal to the label) yourself, batch by batch")
FIT = Forbidden(
    "llmcourse.finetune.fit",
    (("llmcourse.finetune", "fit"),),
    "write the loop over the batches yourself, with the optimizer and scheduler you are given (`fit` builds "
    "its own)")
MLM_COLLATOR = Forbidden(
    "DataCollatorForLanguageModeling",
    tuple(("transformers.data.data_collator", f"DataCollatorForLanguageModeling.{method}")
          for method in ("__call__", "torch_call", "numpy_call", "torch_mask_tokens", "numpy_mask_tokens")),
    "Hugging Face's collator applies this very rule (the lesson masks with it): make the choices and the "
    "replacements yourself with the generator you are given")
LM_PERPLEXITY = Forbidden(
    "llmcourse.open_models.causal_lm_perplexity",
    (("llmcourse.open_models", "causal_lm_perplexity"),),
    "it adds up the same log-probabilities (a perplexity is the exponential of minus their mean, over a text "
    "read from its first token): run the model on `input_ids` yourself and sum the log-probabilities of the "
    "tokens after the prompt")
CONTINUATION_SCORING = Forbidden(
    "llmcourse.evaluation.continuation_logprobs",
    tuple(("llmcourse.evaluation", name) for name in ("continuation_logprobs", "read", "read_continuations",
                                                      "choice_logprobs", "mean_token_logprob")),
    "lesson 09's harness scores a continuation after a prompt just so: run the model on `input_ids` yourself "
    "and sum the log-probabilities of the tokens after the prompt")
GENERATION_SPEED = Forbidden(
    "llmcourse.open_models.generation_speed",
    (("llmcourse.open_models", "generation_speed"),),
    "lesson 10's timer decodes greedily with the model's cache, which is what this exercise builds: call the "
    "model yourself, one step at a time")
LABEL_SCORING = Forbidden(
    "llmcourse.evaluation.choice_logprobs",
    tuple(("llmcourse.evaluation", name) for name in ("choice_logprobs", "continuation_logprobs", "read",
                                                      "read_continuations", "mean_token_logprob",
                                                      "evaluate_multiple_choice")),
    "lesson 09's harness scores each choice after a prompt, which is what this exercise builds: tokenize the "
    "prompt and each label yourself and score the label with your own `sequence_logprob`")

MOE_ROUTER = Forbidden(
    "llmcourse.moe.router_gates",
    (("llmcourse.moe", "router_gates"),),
    "the lesson's router is what this exercise builds: take the softmax and the k largest yourself "
    "(`torch.softmax` and `torch.topk` are allowed)")
MOE_LAYER = Forbidden(
    "llmcourse.moe.MoEFeedForward",
    (("llmcourse.moe", "MoEFeedForward.forward"),),
    "the lesson's MoE layer routes, mixes and scores the balance itself, which is what this exercise builds: "
    "work on the tensors you are given")
SWITCH_BALANCING_LOSS = Forbidden(
    "load_balancing_loss_func",
    (("transformers.models.switch_transformers.modeling_switch_transformers", "load_balancing_loss_func"),
     ("transformers.models.mixtral.modeling_mixtral", "load_balancing_loss_func")),
    "Hugging Face's Switch Transformers (and Mixtral's, with top_k=1) compute this very loss: count the first "
    "choices and average the probabilities yourself")
FFN_PARAMS = Forbidden(
    "llmcourse.moe.feed_forward_params",
    (("llmcourse.moe", "feed_forward_params"),),
    "the lesson's counter builds the layers and counts them, which is what this exercise asks: count the weights "
    "and biases of one FFN and the layers of each kind yourself")
LINEAR_LAYERS = Forbidden(
    "nn.Linear",
    (("torch.nn", "Linear.__init__"),),
    "building the layers and counting their tensors is how the lesson's counter works; count each FFN's weights "
    "and biases from d_model and d_ff yourself")
GPIPE_TABLE = Forbidden(
    "llmcourse.moe.gpipe_schedule",
    (("llmcourse.moe", "gpipe_schedule"),),
    "the lesson's GPipe table is what this exercise builds: simulate the stages step by step yourself")

POLYFIT = Forbidden(
    "np.polyfit",
    (("numpy", "polyfit"), ("numpy.polynomial.polynomial", "polyfit"), ("numpy.polynomial", "Polynomial.fit"),
     ("numpy.polynomial.polynomial", "Polynomial.fit")),
    "lesson 08 fits its lines with it; here the least-squares line is yours: its slope and intercept from their "
    "formulas (means and sums of the logs), or `np.linalg.lstsq` on a design matrix, or `scipy.stats.linregress`")
OPTIMAL_SPLIT = Forbidden(
    "llmcourse.scaling.optimal_split",
    (("llmcourse.scaling", "optimal_split"), ("scipy.optimize", "minimize_scalar")),
    "the lesson's helper (SciPy's `minimize_scalar` sliding along the budget line) answers this exercise; derive "
    "the minimum on paper and write its closed form (a minimisation of your own with `scipy.optimize.minimize`, "
    "converged as tightly, passes too)")
LAW_REFIT = Forbidden(
    "llmcourse.scaling.refit_law",
    (("llmcourse.scaling", "refit_law"), ("scipy.optimize", "least_squares")),
    "the lesson's helper refits the law with SciPy's `least_squares` and its Huber loss, which is this exercise; "
    "write the objective (and its gradient) yourself and minimise it with `scipy.optimize.minimize`")

PEFT_MODEL = Forbidden(
    "peft.get_peft_model",
    (("peft", "get_peft_model"), ("peft.mapping_func", "get_peft_model"), ("peft", "inject_adapter_in_model"),
     ("peft.mapping", "inject_adapter_in_model"), ("peft.tuners.lora.model", "LoraModel.__init__")),
    "peft wraps the model and puts its LoRA layers in for you, which is this exercise: find the layers by their "
    "names, and build and set the new layer yourself with nn.Parameter and tensor operations")
PEFT_LORA_LAYER = Forbidden(
    "peft.tuners.lora.Linear",
    tuple(("peft.tuners.lora.layer", f"{cls}.__init__") for cls in ("Linear", "LoraLayer"))
    + (("peft.tuners.lora.layer", "LoraLayer.update_layer"),),
    "peft's LoRA layer is the layer this exercise builds: hold the frozen nn.Linear and the two new parameters "
    "A and B in a module of your own")

TRL_COMPLETION_MASK = Forbidden(
    "trl.trainer.sft_trainer.DataCollatorForLanguageModeling",
    (("trl.trainer.sft_trainer", "DataCollatorForLanguageModeling.__call__"),
     ("trl.trainer.sft_trainer", "DataCollatorForLanguageModeling.torch_call"), ("llmcourse.instruct", "train_sft")),
    "lesson 11 trains on the answers only through TRL (`llmcourse.instruct.train_sft`: TRL sets the prompt's "
    "labels to -100 and its collator pads the labels with -100), which is this exercise: build the labels from "
    "the ids, the prompt lengths and the attention mask yourself, with tensor operations")
LESSON_LORA = Forbidden(
    "llmcourse.instruct.with_adapter",
    (("llmcourse.instruct", "with_adapter"), ("llmcourse.instruct", "train_sft"), ("llmcourse.instruct", "train_dpo")),
    "the lesson's helpers put peft's LoRA layers into the model, which is this exercise: find the layers by their "
    "names, and build and set the new layer yourself with nn.Parameter and tensor operations")
TRL_REWARD = Forbidden(
    "trl.RewardTrainer",
    (("trl.trainer.reward_trainer", "RewardTrainer.compute_loss"), ("llmcourse.instruct", "train_reward_model")),
    "TRL's RewardTrainer computes the Bradley-Terry loss (lesson 11 trains its reward model with it, in "
    "`llmcourse.instruct.train_reward_model`), which is this exercise: call `reward_fn` on each batch and write "
    "the loss, the accuracy and the optimizer's step yourself")
TRL_DPO = Forbidden(
    "trl.DPOTrainer",
    (("trl.trainer.dpo_trainer", "DPOTrainer.compute_loss"), ("trl.trainer.dpo_trainer", "DPOTrainer._compute_loss"),
     ("trl.trainer.dpo_trainer", "DPOTrainer.compute_ref_log_probs"), ("llmcourse.instruct", "train_dpo")),
    "TRL's DPOTrainer computes the sequences' log-probabilities and the DPO loss (lesson 11 trains with it, in "
    "`llmcourse.instruct.train_dpo`), which is this exercise: gather the labels' log-probabilities from the "
    "logits and write the loss yourself")

# ---------------------------------------------------------------- who called

def _package_dir(module: str) -> str:
    return str(Path(importlib.util.find_spec(module).origin).resolve().parent) + os.sep


_TORCH = _package_dir("torch")
_STDLIB = str(Path(sysconfig.get_paths()["stdlib"]).resolve()) + os.sep
_OURS = (_package_dir("grader"), _package_dir("llmcourse"))
_SELF = os.path.realpath(__file__)
_kind_of_file: dict[str, str] = {}


def _kind(filename: str) -> str:
    """"transparent" (torch, the standard library, this module), "library" (other packages, the grader,
    llmcourse) or "learner" (a notebook cell, a learner's file, a test file)."""
    kind = _kind_of_file.get(filename)
    if kind is None:
        path = filename if filename.startswith("<") else os.path.realpath(filename)
        if path.startswith(_TORCH) or path == _SELF or filename.startswith("<frozen"):
            kind = "transparent"
        elif f"{os.sep}site-packages{os.sep}" in path or f"{os.sep}dist-packages{os.sep}" in path:
            kind = "library"
        elif path.startswith(_STDLIB):
            kind = "transparent"
        elif path.startswith(_OURS):
            kind = "library"
        else:
            kind = "learner"
        _kind_of_file[filename] = kind
    return kind


def _learner_entry(frame):
    """(called by the learner's code?, the torch module the learner called, if the call went through one)."""
    module = None
    while frame is not None and _kind(frame.f_code.co_filename) == "transparent":
        owner = frame.f_locals.get("self")
        if owner is not None and type(owner).__module__.startswith("torch.nn"):
            module = f"nn.{type(owner).__name__}"  # the outermost module, e.g. nn.LayerNorm
        frame = frame.f_back
    return frame is not None and _kind(frame.f_code.co_filename) == "learner", module


# ---------------------------------------------------------------- enforcement

_enabled = True


@contextmanager
def not_enforced():
    """Run checks without enforcing what exercises forbid (the give-away test of the lessons uses it)."""
    global _enabled
    previous, _enabled = _enabled, False
    try:
        yield
    finally:
        _enabled = previous


def _resolve(module: str, path: str):
    """(owner, attribute name, original) for an alias such as ("torch", "Tensor.softmax")."""
    owner = importlib.import_module(module)
    *parents, attribute = path.split(".")
    for part in parents:
        owner = getattr(owner, part)
    return owner, attribute, getattr(owner, attribute)


def _guard(original, forbidden: Forbidden, alias: str, hits: list):
    def guard(*args, **kwargs):
        by_learner, module = _learner_entry(sys._getframe(1))
        if by_learner:
            message = forbidden.message(alias, module)
            hits.append((forbidden, message))
            raise ForbiddenCall(forbidden, message)
        return original(*args, **kwargs)

    guard.__wrapped__ = original
    guard.__name__ = getattr(original, "__name__", alias)
    guard.__doc__ = getattr(original, "__doc__", None)
    return guard


@contextmanager
def enforced(forbidden: tuple, fn=None):
    """Guard every alias of ``forbidden`` while the block runs; yields the list of (Forbidden, message)
    hits. ``fn``'s module namespace is guarded too, for names bound before the guards went up
    (``from torch.nn.functional import softmax``)."""
    hits: list = []
    if not forbidden or not _enabled:
        yield hits
        return
    patched, guards = [], {}
    try:
        for item in forbidden:
            for module, path in item.targets:
                try:
                    owner, attribute, original = _resolve(module, path)
                except (ImportError, AttributeError):  # an alias this version of the library does not have
                    continue
                guard = _guard(original, item, _alias(module, path), hits)
                patched.append((owner, attribute, original, attribute in vars(owner)))
                setattr(owner, attribute, guard)
                guards[id(original)] = (original, guard)
        namespace = getattr(fn, "__globals__", None)
        rebound = []
        if isinstance(namespace, dict):
            for key, value in list(namespace.items()):
                if id(value) in guards and guards[id(value)][0] is value:
                    rebound.append((key, value))
                    namespace[key] = guards[id(value)][1]
        try:
            yield hits
        finally:
            for key, value in rebound:
                namespace[key] = value
    finally:
        for owner, attribute, original, own in reversed(patched):
            if own:
                setattr(owner, attribute, original)
            else:
                delattr(owner, attribute)  # it was inherited (Tensor methods live on TensorBase)
