"""Tests for the chapter-11 checks (grader/checks/instruction_tuning.py): response_only_labels, add_lora,
reward_model_step, dpo_loss.

What is tested (COURSE.md, "One set of checks, three consumers"):
- every check passes the reference solution (from the solutions notebook) and other correct ways of writing
  the answer;
- every check fails a stub with "not implemented yet";
- every check fails common wrong answers, written here the way a learner would write them, and its feedback
  names the mistake;
- the figures the checks use agree with the real thing: the chats' token ids are what SmolLM2's tokenizer
  writes, its special ids are the check's, the DPO reference agrees with a formula written another way
  (cross-entropy with ignore_index), the large-margin cases really overflow log(sigmoid(...));
- the hidden checks pass the reference and other correct answers, and fail wrong ones naming the mistake.

The wrong answers are deliberately written out by hand, not taken from the grader's own list of mistakes, so
that a mistake the grader models differently from how learners write it shows up here.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from chapter_contract import A_MIXED_LIST, DEFAULT_GARBAGE, ChapterContract, assert_fails_naming, reference_fn
from torch import nn

import grader
import grader.hidden
from grader import check
from grader.checks import instruction_tuning as checks
from grader.forbidden import not_enforced

ASSIGNMENT = "11-instruction-tuning"

EXERCISES = ["response_only_labels", "add_lora", "reward_model_step", "dpo_loss"]


def test_points():
    assert [grader.get_exercise(n).points for n in EXERCISES] == [2, 3, 2, 4]


# =============================================================== the figures the checks use

@pytest.fixture(scope="module")
def smollm2_tokenizer():
    from transformers import AutoTokenizer

    from llmcourse.models import CAUSAL_LMS, DEFAULT_CAUSAL_LM, resolve

    return AutoTokenizer.from_pretrained(resolve(None, CAUSAL_LMS, DEFAULT_CAUSAL_LM))


def test_special_ids_are_smollm2s(smollm2_tokenizer):
    tok = smollm2_tokenizer
    assert tok.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>"]) == [
        checks.ENDOFTEXT, checks.IM_START, checks.IM_END]
    assert tok.pad_token_id == tok.eos_token_id == checks.IM_END  # the reason masking by id goes wrong


def test_the_chats_are_what_smollm2s_tokenizer_writes(smollm2_tokenizer):
    tok = smollm2_tokenizer
    for (user, answer), (prompt_ids, answer_ids) in zip(checks.CHAT_TEXTS, checks.chat_rows()):
        turn = [{"role": "user", "content": user}]
        prompt = tok.apply_chat_template(turn, tokenize=False, add_generation_prompt=True)
        chat = tok.apply_chat_template(turn + [{"role": "assistant", "content": answer}], tokenize=False)
        assert tok(prompt).input_ids == prompt_ids
        assert tok(chat).input_ids == prompt_ids + answer_ids
        assert answer_ids[-2:] == [checks.IM_END, 198]  # the answer ends with <|im_end|> and a newline


def test_label_cases_cover_each_rule():
    cases = checks.labels_cases()
    rows = [(ids, lengths, mask) for ids, lengths, mask in (c.args for c in cases)]
    assert any((lengths == 0).any() for _, lengths, _ in rows)  # an empty prompt
    assert any((lengths == mask.sum(1)).any() for _, lengths, mask in rows)  # no answer
    assert any((mask == 1).all(1).any() for _, _, mask in rows)  # a row without padding
    ends = [(ids[i, int(mask[i].sum()) - 1] == checks.IM_END) for ids, _, mask in rows for i in range(len(ids))
            if mask[i].sum()]
    assert sum(ends) >= 8  # answers closed by the pad token's id
    assert any(((ids == checks.ENDOFTEXT) & (mask == 1)).any() for ids, _, mask in rows)  # id 0 as a real token


def _cross_entropy_logps(logits, labels):
    """A sequence's log-probability written another way: minus the summed cross-entropy with ignore_index."""
    per_token = F.cross_entropy(logits[:, :-1].double().transpose(1, 2), labels[:, 1:], ignore_index=-100,
                                reduction="none")
    return -per_token.sum(-1)


def test_the_dpo_reference_is_the_definition_written_another_way(hidden_dir):
    for case in checks.dpo_cases() + grader.hidden.load_hidden_cases("dpo_loss", hidden_dir):
        pc, pr, rc, rr, cl, rl, beta = case.args
        chosen = _cross_entropy_logps(pc, cl) - _cross_entropy_logps(rc, cl)
        rejected = _cross_entropy_logps(pr, rl) - _cross_entropy_logps(rr, rl)
        loss, chosen_rewards, rejected_rewards = checks.dpo_variant(*case.args)
        torch.testing.assert_close(chosen_rewards, beta * chosen)
        torch.testing.assert_close(rejected_rewards, beta * rejected)
        torch.testing.assert_close(loss, F.softplus(-beta * (chosen - rejected)).mean())


def test_the_large_margin_cases_overflow_log_sigmoid():
    """beta x margin beyond -100 on one pair: log(sigmoid(.)) is -inf there in float32; and a pair the other way."""
    for args in (checks.large_margin_args(1143), checks.large_margin_args(2142)):
        pc, pr, rc, rr, cl, rl, beta = args
        margin = beta * ((_cross_entropy_logps(pc, cl) - _cross_entropy_logps(rc, cl))
                         - (_cross_entropy_logps(pr, rl) - _cross_entropy_logps(rr, rl)))
        assert margin.min() < -150 and margin.max() > 150, margin
        assert torch.isinf(torch.log(torch.sigmoid(margin.float()))).any()
    case = next(c for c in checks.reward_cases() if "150" in c.label)
    assert checks.reward_facts(case)["difference"].abs().max() >= 100


def test_the_equal_policy_case_has_rewards_zero_and_loss_log_2():
    case = next(c for c in checks.dpo_cases() if "equal to the reference" in c.label)
    loss, chosen, rejected = checks.dpo_variant(*case.args)
    assert math.isclose(float(loss), math.log(2), rel_tol=1e-12)
    assert not chosen.any() and not rejected.any()


def test_lora_cases_tell_the_matching_rules_apart():
    """Over the visible cases, each wrong way of matching names selects other layers than the rule somewhere."""
    for rule in ("in", "endswith", "last"):
        assert any(checks.chosen_layers(list(c.linear_shapes()), c.targets, rule)
                   != checks.chosen_layers(list(c.linear_shapes()), c.targets) for c in checks.lora_cases()), rule
    assert any(checks.unmatched_targets(list(c.linear_shapes()), c.targets) for c in checks.lora_cases())


def test_case_models_and_batches_pickle():
    """Cases are built in the grading process and sent to a child process."""
    import pickle

    for case in checks.labels_cases() + checks.lora_cases() + checks.reward_cases() + checks.dpo_cases():
        pickle.loads(pickle.dumps(case))


# =============================================================== response_only_labels

# ---- correct

def labels_loop(input_ids, prompt_lengths, attention_mask):
    labels = input_ids.clone()
    for i in range(len(labels)):
        labels[i, :int(prompt_lengths[i])] = -100
    labels[attention_mask == 0] = -100
    return labels


def labels_where(input_ids, prompt_lengths, attention_mask):
    position = torch.arange(input_ids.shape[1]).expand_as(input_ids)
    keep = (position >= prompt_lengths.unsqueeze(1)) & attention_mask.bool()
    return torch.where(keep, input_ids, torch.tensor(-100))


def labels_from_lengths(input_ids, prompt_lengths, attention_mask):
    """Right padding: the real tokens are the first attention_mask.sum() of each row."""
    labels = torch.full_like(input_ids, -100)
    for i, (start, end) in enumerate(zip(prompt_lengths.tolist(), attention_mask.sum(1).tolist())):
        labels[i, start:end] = input_ids[i, start:end]
    return labels


# ---- wrong

def labels_by_pad_id(input_ids, prompt_lengths, attention_mask):
    labels = input_ids.clone()
    for i in range(len(labels)):
        labels[i, :prompt_lengths[i]] = -100
    labels[labels == 2] = -100  # tokenizer.pad_token_id
    return labels


def labels_shifted(input_ids, prompt_lengths, attention_mask):
    labels = labels_loop(input_ids, prompt_lengths, attention_mask)
    return torch.cat([labels[:, 1:], torch.full((len(labels), 1), -100)], dim=1)


def labels_shifted_short(input_ids, prompt_lengths, attention_mask):
    return labels_loop(input_ids, prompt_lengths, attention_mask)[:, 1:]


def labels_no_prompt_mask(input_ids, prompt_lengths, attention_mask):
    return input_ids.masked_fill(attention_mask == 0, -100)


def labels_no_padding_mask(input_ids, prompt_lengths, attention_mask):
    labels = input_ids.clone()
    for i in range(len(labels)):
        labels[i, :prompt_lengths[i]] = -100
    return labels


def labels_off_by_one(input_ids, prompt_lengths, attention_mask):
    labels = input_ids.clone()
    for i in range(len(labels)):
        labels[i, :prompt_lengths[i] + 1] = -100  # "the prompt ends with the assistant's newline, so skip it too"
    labels[attention_mask == 0] = -100
    return labels


def labels_in_place(input_ids, prompt_lengths, attention_mask):
    labels = input_ids
    for i in range(len(labels)):
        labels[i, :prompt_lengths[i]] = -100
    labels[attention_mask == 0] = -100
    return labels


def labels_first_length(input_ids, prompt_lengths, attention_mask):
    labels = input_ids.clone()
    labels[:, :prompt_lengths[0]] = -100
    labels[attention_mask == 0] = -100
    return labels


def labels_zero(input_ids, prompt_lengths, attention_mask):
    labels = input_ids.clone()
    for i in range(len(labels)):
        labels[i, :prompt_lengths[i]] = 0
    labels[attention_mask == 0] = 0
    return labels


def labels_float(input_ids, prompt_lengths, attention_mask):
    return labels_loop(input_ids, prompt_lengths, attention_mask).float()


def labels_inverted(input_ids, prompt_lengths, attention_mask):
    labels = torch.full_like(input_ids, -100)
    for i in range(len(labels)):
        labels[i, :prompt_lengths[i]] = input_ids[i, :prompt_lengths[i]]
    return labels


LABELS_CORRECT = [labels_loop, labels_where, labels_from_lengths]

LABELS_MISTAKES = [
    pytest.param(labels_by_pad_id, "masked the padding by its token id", id="pad-by-id"),
    pytest.param(labels_shifted, "shifted the labels by one position", id="shifted"),
    pytest.param(labels_shifted_short, "shifted the labels by one position", id="shifted-short"),
    pytest.param(labels_no_prompt_mask, "the prompt is not masked", id="no-prompt-mask"),
    pytest.param(labels_no_padding_mask, "the padding is not masked", id="no-padding-mask"),
    pytest.param(labels_off_by_one, "off by one at the prompt's end", id="off-by-one"),
    pytest.param(labels_in_place, "in place", id="in-place"),
    pytest.param(labels_first_length, "one prompt length for every row", id="first-length"),
    pytest.param(labels_zero, "filled the masked positions with 0", id="zero"),
    pytest.param(labels_float, "the labels are not torch.long", id="float"),
    pytest.param(labels_inverted, "inverted", id="inverted"),
]


@pytest.mark.parametrize("fn", LABELS_CORRECT, ids=lambda f: f.__name__)
def test_labels_accept_other_correct_answers(fn):
    result = check("response_only_labels", fn)
    assert result.passed, result.feedback


@pytest.mark.parametrize("fn, phrase", LABELS_MISTAKES)
def test_labels_name_the_mistake(fn, phrase):
    assert_fails_naming(check("response_only_labels", fn), phrase)


def test_labels_by_pad_id_fails_the_chats_and_says_where():
    result = check("response_only_labels", labels_by_pad_id)
    chats = next(c for c in result.cases if "SmolLM2's template" in c.label)
    assert not chats.passed and "<|im_end|>, in the answer" in chats.problem, chats.problem


# =============================================================== add_lora

class LoRAByLinears(nn.Module):
    """A and B as bias-free nn.Linear layers (their weights are (r, d_in) and (d_out, r))."""

    def __init__(self, base, r, alpha, generator):
        super().__init__()
        self.base = base
        self.down = nn.Linear(base.in_features, r, bias=False, dtype=base.weight.dtype, device=base.weight.device)
        self.up = nn.Linear(r, base.out_features, bias=False, dtype=base.weight.dtype, device=base.weight.device)
        with torch.no_grad():
            nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5), generator=generator)
            self.up.weight.zero_()
        self.scaling = alpha / r

    def forward(self, x):
        return self.base(x) + self.up(self.down(x)) * self.scaling


def _matching(name, targets):
    return any(name == t or name.endswith("." + t) for t in targets)


def _replace(model, names, make):
    for name in names:
        *path, child = name.split(".")
        parent = model
        for part in path:
            parent = getattr(parent, part)
        setattr(parent, child, make(getattr(parent, child)))


def lora_by_linears(model, target_modules, r, alpha, generator):
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and _matching(n, target_modules)]
    missing = [t for t in target_modules if not any(_matching(n, [t]) for n in names)]
    if missing:
        raise ValueError(f"no Linear layer matches {missing}")
    for p in model.parameters():
        p.requires_grad = False
    _replace(model, names, lambda base: LoRAByLinears(base, r, alpha, generator))
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


class MergedLoRA(nn.Module):
    """Computes x (W + s B A)^T + b: the same function, merged before the product (float rounding differs)."""

    def __init__(self, base, r, alpha, generator):
        super().__init__()
        self.weight, self.bias = base.weight, base.bias
        self.A = nn.Parameter((torch.rand(r, base.in_features, generator=generator) - 0.5).to(base.weight))
        self.B = nn.Parameter(base.weight.new_zeros(base.out_features, r))
        self.s = alpha / r

    def forward(self, x):
        return F.linear(x, self.weight + self.s * self.B @ self.A, self.bias)


def lora_merged(model, target_modules, r, alpha, generator):
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and _matching(n, target_modules)]
    for t in target_modules:
        if not any(_matching(n, [t]) for n in names):
            raise ValueError(t)
    model.requires_grad_(False)
    _replace(model, names, lambda base: MergedLoRA(base, r, alpha, generator))
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _lora_with(make_layer=None, matching=lambda name, target: _matching(name, [target]), freeze=True,
               check_targets=True, count=None, freeze_after=False):
    """A learner's add_lora with one part done differently (``make_layer(base, r, alpha, generator)``)."""
    make_layer = make_layer or (lambda base, r, alpha, generator: LoRAByLinears(base, r, alpha, generator))

    def add_lora(model, target_modules, r, alpha, generator):
        names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)
                 and any(matching(n, t) for t in target_modules)]
        if check_targets:
            for t in target_modules:
                if not any(matching(n, t) for n in names):
                    raise ValueError(t)
        if freeze:
            model.requires_grad_(False)
        _replace(model, names, lambda base: make_layer(base, r, alpha, generator))
        if freeze_after:
            model.requires_grad_(False)
        trainable = [p for p in model.parameters() if p.requires_grad]
        return count(model, trainable, names) if count else sum(p.numel() for p in trainable)

    return add_lora


class PlainLoRA(nn.Module):
    """A LoRA layer with switches: ``b`` "zeros" or "random", ``a`` "random" or "zeros" or "global", scale."""

    def __init__(self, base, r, alpha, generator, b="zeros", a="random", scale=None, keep_bias=True, fresh=False):
        super().__init__()
        self.base = nn.Linear(base.in_features, base.out_features, dtype=base.weight.dtype) if fresh else base
        if fresh:
            self.base.requires_grad_(False)
        shape = (r, base.in_features)
        own = torch.Generator().manual_seed(0)
        self.A = nn.Parameter({"random": lambda: torch.randn(*shape, generator=generator) * 0.1,
                               "zeros": lambda: torch.zeros(shape),
                               "global": lambda: torch.randn(shape) * 0.1,
                               "own": lambda: torch.randn(*shape, generator=own) * 0.1}[a]())
        self.B = nn.Parameter(torch.zeros(base.out_features, r) if b == "zeros"
                              else torch.randn(base.out_features, r, generator=generator) * 0.1)
        self.A.data, self.B.data = self.A.data.to(base.weight.dtype), self.B.data.to(base.weight.dtype)
        self.scale = alpha / r if scale is None else scale(r, alpha)
        self.keep_bias = keep_bias

    def forward(self, x):
        out = self.base(x) if self.keep_bias else F.linear(x, self.base.weight)
        return out + self.scale * (x @ self.A.T @ self.B.T)


def _plain(**switches):
    return _lora_with(lambda base, r, alpha, generator: PlainLoRA(base, r, alpha, generator, **switches))


lora_b_random = _plain(b="random")
lora_a_zero = _plain(a="zeros")
lora_a_global = _plain(a="global")
lora_a_own_generator = _plain(a="own")
lora_scale_alpha = _plain(scale=lambda r, alpha: alpha)
lora_no_scale = _plain(scale=lambda r, alpha: 1.0)
lora_drops_bias = _plain(keep_bias=False)
lora_new_linear = _plain(fresh=True)
lora_by_in = _lora_with(matching=lambda name, target: target in name)
lora_bare_endswith = _lora_with(matching=lambda name, target: name.endswith(target))
lora_last_part = _lora_with(matching=lambda name, target: name.split(".")[-1] == target)
lora_every_linear = _lora_with(matching=lambda name, target: True, check_targets=False)
lora_not_frozen = _lora_with(freeze=False)
lora_frozen_after = _lora_with(freeze_after=True)
lora_no_value_error = _lora_with(check_targets=False)
lora_counts_all = _lora_with(count=lambda model, trainable, names: sum(p.numel() for p in model.parameters()))
lora_counts_layers = _lora_with(count=lambda model, trainable, names: len(names))
lora_counts_tensors = _lora_with(count=lambda model, trainable, names: len(trainable))
lora_count_tensor = _lora_with(count=lambda model, trainable, names: torch.tensor(sum(p.numel() for p in trainable)))


class Float32LoRA(PlainLoRA):
    def __init__(self, base, r, alpha, generator):
        super().__init__(base, r, alpha, generator)
        self.A = nn.Parameter(torch.randn(r, base.in_features, generator=generator, dtype=torch.float32))
        self.B = nn.Parameter(torch.zeros(base.out_features, r, dtype=torch.float32))


lora_float32 = _lora_with(lambda base, r, alpha, generator: Float32LoRA(base, r, alpha, generator))


class BaseLeftTrainable(LoRAByLinears):
    def __init__(self, base, r, alpha, generator):
        super().__init__(base, r, alpha, generator)
        base.requires_grad_(True)


lora_base_trainable = _lora_with(lambda base, r, alpha, generator: BaseLeftTrainable(base, r, alpha, generator))


class TransposedLoRA(PlainLoRA):
    def __init__(self, base, r, alpha, generator):
        super().__init__(base, r, alpha, generator)
        self.A = nn.Parameter((torch.randn(base.in_features, r, generator=generator) * 0.1).to(base.weight))
        self.B = nn.Parameter(base.weight.new_zeros(r, base.out_features))  # x @ A @ B: A (d_in, r), B (r, d_out)

    def forward(self, x):
        return self.base(x) + self.scale * (x @ self.A @ self.B)


lora_transposed = _lora_with(lambda base, r, alpha, generator: TransposedLoRA(base, r, alpha, generator))


LORA_CORRECT = [lora_by_linears, lora_merged]

LORA_MISTAKES = [
    pytest.param(lora_b_random, "B is not zeros", id="B-random"),
    pytest.param(lora_a_zero, "A is zeros too", id="A-zero"),
    pytest.param(lora_a_global, "A is not drawn from `generator`", id="A-global"),
    pytest.param(lora_a_own_generator, "A is the same whatever generator is passed in", id="A-own-generator"),
    pytest.param(lora_scale_alpha, "scaled by alpha instead of alpha / r", id="scale-alpha"),
    pytest.param(lora_no_scale, "is not scaled", id="no-scale"),
    pytest.param(lora_drops_bias, "the frozen layer's bias was dropped", id="bias"),
    pytest.param(lora_new_linear, "the frozen layer's weights changed", id="new-linear"),
    pytest.param(lora_by_in, "matched by `in`", id="by-in"),
    pytest.param(lora_bare_endswith, "matched the end of the name without the dot", id="bare-endswith"),
    pytest.param(lora_last_part, "compared only the last part of the name", id="last-part"),
    pytest.param(lora_every_linear, "LoRA on every nn.Linear", id="every-linear"),
    pytest.param(lora_not_frozen, "parameters outside the LoRA layers are still trainable", id="not-frozen"),
    pytest.param(lora_frozen_after, "A and B are not trainable", id="frozen-after"),
    pytest.param(lora_no_value_error, "no ValueError for a target that matches no nn.Linear", id="no-value-error"),
    pytest.param(lora_counts_all, "returned every parameter of the model", id="counts-all"),
    pytest.param(lora_counts_layers, "returned the number of layers replaced", id="counts-layers"),
    pytest.param(lora_counts_tensors, "returned the number of trainable tensors", id="counts-tensors"),
    pytest.param(lora_count_tensor, "return the count as a Python int", id="count-tensor"),
    pytest.param(lora_base_trainable, "the replaced layer's own weight is still trainable", id="base-trainable"),
    pytest.param(lora_transposed, "A and B have each other's layout", id="transposed"),
    pytest.param(lora_float32, "in another dtype than the layer's weight", id="float32"),
]


@pytest.mark.parametrize("fn", LORA_CORRECT, ids=lambda f: f.__name__)
def test_lora_accepts_other_correct_answers(fn):
    result = check("add_lora", fn)
    assert result.passed, result.feedback


@pytest.mark.parametrize("fn, phrase", LORA_MISTAKES)
def test_lora_names_the_mistake(fn, phrase):
    assert_fails_naming(check("add_lora", fn), phrase)


def test_lora_case_reports_the_fitted_scale():
    """The scale the probe fits is alpha / r for the reference and alpha for the mistake (plain values)."""
    case = checks.lora_cases()[0]
    _, right = case.run(lora_by_linears)
    _, wrong = case.run(lora_scale_alpha)
    layer = next(iter(right["layers"]))
    assert math.isclose(right["layers"][layer]["scale"], case.alpha / case.r, rel_tol=1e-6)
    assert math.isclose(wrong["layers"][layer]["scale"], case.alpha, rel_tol=1e-6)
    assert right["change_at_once"] == 0.0 and right["step_change"] > 0


# =============================================================== reward_model_step

# ---- correct

def reward_softplus(reward_fn, optimizer, chosen, rejected):
    optimizer.zero_grad(set_to_none=False)
    margin = reward_fn(chosen) - reward_fn(rejected)
    loss = F.softplus(-margin).mean()
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        accuracy = (margin > 0).sum().item() / len(margin)
    return {"loss": float(loss.detach()), "accuracy": accuracy}


def reward_bce(reward_fn, optimizer, chosen, rejected):
    r_chosen, r_rejected = reward_fn(chosen), reward_fn(rejected)
    difference = r_chosen - r_rejected
    loss = F.binary_cross_entropy_with_logits(difference, torch.ones_like(difference))
    for group in optimizer.param_groups:
        for p in group["params"]:
            p.grad = None
    loss.backward()
    optimizer.step()
    return {"loss": loss.item(), "accuracy": (r_chosen > r_rejected).double().mean().item(), "margin": 0.0}


# ---- wrong

def _reward_with(loss_of=lambda d: -F.logsigmoid(d).mean(), accuracy_of=lambda d: (d > 0).float().mean().item(),
                 zero_grad="first", step=True, item=True):
    def reward_model_step(reward_fn, optimizer, chosen, rejected):
        if zero_grad == "first":
            optimizer.zero_grad()
        difference = reward_fn(chosen) - reward_fn(rejected)
        loss = loss_of(difference)
        if zero_grad == "step-first":
            optimizer.step()
            optimizer.zero_grad()
        loss.backward()
        if zero_grad == "between":
            optimizer.zero_grad()
        if step and zero_grad != "step-first":
            optimizer.step()
        return {"loss": loss.item() if item else loss.detach(), "accuracy": accuracy_of(difference)}

    return reward_model_step


reward_log_sigmoid = _reward_with(loss_of=lambda d: -torch.log(torch.sigmoid(d)).mean())
reward_swapped = _reward_with(loss_of=lambda d: -F.logsigmoid(-d).mean())
reward_summed = _reward_with(loss_of=lambda d: -F.logsigmoid(d).sum())
reward_ties = _reward_with(accuracy_of=lambda d: (d >= 0).float().mean().item())
reward_count = _reward_with(accuracy_of=lambda d: (d > 0).sum().item())
reward_no_zero_grad = _reward_with(zero_grad="never")
reward_zero_between = _reward_with(zero_grad="between")
reward_step_first = _reward_with(zero_grad="step-first")
reward_no_step = _reward_with(step=False)
reward_loss_tensor = _reward_with(item=False)
reward_mean_first = _reward_with(loss_of=lambda d: -F.logsigmoid(d.mean()))


def reward_zero_grad_at_the_end(reward_fn, optimizer, chosen, rejected):
    difference = reward_fn(chosen) - reward_fn(rejected)
    loss = -F.logsigmoid(difference).mean()
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()  # "clean up after myself": the gradient left before the call still reached the step
    return {"loss": loss.item(), "accuracy": (difference > 0).float().mean().item()}


def reward_accuracy_after_the_step(reward_fn, optimizer, chosen, rejected):
    optimizer.zero_grad()
    loss = -F.logsigmoid(reward_fn(chosen) - reward_fn(rejected)).mean()
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        accuracy = (reward_fn(chosen) > reward_fn(rejected)).float().mean().item()
    return {"loss": loss.item(), "accuracy": accuracy}


def reward_detached(reward_fn, optimizer, chosen, rejected):
    optimizer.zero_grad()
    with torch.no_grad():
        difference = reward_fn(chosen) - reward_fn(rejected)
    loss = -F.logsigmoid(difference).mean()
    loss.backward()
    optimizer.step()
    return {"loss": loss.item(), "accuracy": (difference > 0).float().mean().item()}


def reward_unpacks_the_batch(reward_fn, optimizer, chosen, rejected):
    optimizer.zero_grad()
    difference = reward_fn(**chosen) - reward_fn(**rejected)
    loss = -F.logsigmoid(difference).mean()
    loss.backward()
    optimizer.step()
    return {"loss": loss.item(), "accuracy": (difference > 0).float().mean().item()}


REWARD_CORRECT = [reward_softplus, reward_bce]

REWARD_MISTAKES = [
    pytest.param(reward_log_sigmoid, "log(sigmoid(...))", id="log-sigmoid"),
    pytest.param(reward_swapped, "swapped", id="swapped"),
    pytest.param(reward_summed, "summed the pairs' losses", id="summed"),
    pytest.param(reward_ties, "ties counted as right", id="ties"),
    pytest.param(reward_count, "the number of right pairs, not their fraction", id="count"),
    pytest.param(reward_no_zero_grad, "optimizer.zero_grad forgotten", id="no-zero-grad"),
    pytest.param(reward_zero_grad_at_the_end, "optimizer.zero_grad forgotten", id="zero-grad-at-the-end"),
    pytest.param(reward_zero_between, "between loss.backward and optimizer.step", id="zero-between"),
    pytest.param(reward_step_first, "optimizer.step before loss.backward", id="step-first"),
    pytest.param(reward_no_step, "optimizer.step never called", id="no-step"),
    pytest.param(reward_loss_tensor, "returned the loss as a tensor", id="loss-tensor"),
    pytest.param(reward_mean_first, "averaged the rewards before the loss", id="mean-first"),
    pytest.param(reward_accuracy_after_the_step, "computed again after the step", id="accuracy-after"),
    pytest.param(reward_detached, "the loss has no graph to backpropagate through", id="detached"),
    pytest.param(reward_unpacks_the_batch, "pass each batch to reward_fn as it is", id="unpacks"),
]


@pytest.mark.parametrize("fn", REWARD_CORRECT, ids=lambda f: f.__name__)
def test_reward_step_accepts_other_correct_answers(fn):
    result = check("reward_model_step", fn)
    assert result.passed, result.feedback


@pytest.mark.parametrize("fn, phrase", REWARD_MISTAKES)
def test_reward_step_names_the_mistake(fn, phrase):
    assert_fails_naming(check("reward_model_step", fn), phrase)


# =============================================================== dpo_loss

# ---- correct

def dpo_cross_entropy(policy_chosen_logits, policy_rejected_logits, ref_chosen_logits, ref_rejected_logits,
                      chosen_labels, rejected_labels, beta):
    def logp(logits, labels):
        return -F.cross_entropy(logits[:, :-1].transpose(1, 2), labels[:, 1:], ignore_index=-100,
                                reduction="none").sum(-1)

    chosen = logp(policy_chosen_logits, chosen_labels) - logp(ref_chosen_logits, chosen_labels)
    rejected = logp(policy_rejected_logits, rejected_labels) - logp(ref_rejected_logits, rejected_labels)
    loss = F.softplus(-beta * (chosen - rejected)).mean()
    return loss, beta * chosen.detach(), beta * rejected.detach()


def dpo_row_by_row(policy_chosen_logits, policy_rejected_logits, ref_chosen_logits, ref_rejected_logits,
                   chosen_labels, rejected_labels, beta):
    def logp(logits, labels):
        out = []
        for row_logits, row_labels in zip(logits, labels):
            total = row_logits.new_zeros(())
            logprobs = row_logits.log_softmax(-1)
            for t in range(1, len(row_labels)):
                if row_labels[t] != -100:
                    total = total + logprobs[t - 1, row_labels[t]]
            out.append(total)
        return torch.stack(out)

    with torch.no_grad():
        ref_c, ref_r = logp(ref_chosen_logits, chosen_labels), logp(ref_rejected_logits, rejected_labels)
    pol_c, pol_r = logp(policy_chosen_logits, chosen_labels), logp(policy_rejected_logits, rejected_labels)
    losses = -F.logsigmoid(beta * (pol_c - ref_c) - beta * (pol_r - ref_r))
    return losses.mean(), (beta * (pol_c - ref_c)).detach(), (beta * (pol_r - ref_r)).detach()


# ---- wrong

def _dpo_with(shift=1, reduce="sum", ignore="mask", normalise=True, reward_beta=True, swap_models=False,
              swap_pairs=False, loss_of=lambda z: -F.logsigmoid(z).mean(), detach=True, loss_beta=1.0, item=False):
    def dpo_loss(policy_chosen_logits, policy_rejected_logits, ref_chosen_logits, ref_rejected_logits,
                 chosen_labels, rejected_labels, beta):
        def logp(logits, labels):
            if shift == 1:
                logits, labels = logits[:, :-1], labels[:, 1:]
            elif shift == -1:
                logits, labels = logits[:, 1:], labels[:, :-1]
            scores = logits.log_softmax(-1) if normalise is True else logits.log_softmax(1) if normalise == "time" \
                else logits
            mask = labels != -100
            picked = scores.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
            if ignore == "mask":
                picked = picked * mask
            return picked.sum(-1) / mask.sum(-1) if reduce == "mean" else picked.sum(-1)

        pc, pr = logp(policy_chosen_logits, chosen_labels), logp(policy_rejected_logits, rejected_labels)
        rc, rr = logp(ref_chosen_logits, chosen_labels), logp(ref_rejected_logits, rejected_labels)
        if swap_models:
            pc, rc, pr, rr = rc, pc, rr, pr
        if swap_pairs:
            pc, pr, rc, rr = pr, pc, rr, rc
        chosen_rewards = (beta if reward_beta else 1) * (pc - rc)
        rejected_rewards = (beta if reward_beta else 1) * (pr - rr)
        loss = loss_of(beta ** loss_beta * ((pc - rc) - (pr - rr)))
        if detach:
            chosen_rewards, rejected_rewards = chosen_rewards.detach(), rejected_rewards.detach()
        return (loss.item() if item else loss), chosen_rewards, rejected_rewards

    return dpo_loss


dpo_no_shift = _dpo_with(shift=0)
dpo_shift_left = _dpo_with(shift=-1)
dpo_mean_tokens = _dpo_with(reduce="mean")
dpo_ignored_counted = _dpo_with(ignore="count")
dpo_raw_logits = _dpo_with(normalise=False)
dpo_time_dim = _dpo_with(normalise="time")
dpo_reward_no_beta = _dpo_with(reward_beta=False)
dpo_models_swapped = _dpo_with(swap_models=True)
dpo_pairs_swapped = _dpo_with(swap_pairs=True)
dpo_flipped = _dpo_with(loss_of=lambda z: -F.logsigmoid(-z).mean())
dpo_no_minus = _dpo_with(loss_of=lambda z: F.logsigmoid(z).mean())
dpo_log_sigmoid = _dpo_with(loss_of=lambda z: -torch.log(torch.sigmoid(z)).mean())
dpo_summed = _dpo_with(loss_of=lambda z: -F.logsigmoid(z).sum())
dpo_per_pair = _dpo_with(loss_of=lambda z: -F.logsigmoid(z))
dpo_loss_no_beta = _dpo_with(loss_beta=0)
dpo_beta_twice = _dpo_with(loss_beta=2)
dpo_not_detached = _dpo_with(detach=False)
dpo_loss_item = _dpo_with(item=True)


def dpo_gathers_minus_100(policy_chosen_logits, policy_rejected_logits, ref_chosen_logits, ref_rejected_logits,
                          chosen_labels, rejected_labels, beta):
    def logp(logits, labels):
        logprobs = logits[:, :-1].log_softmax(-1).gather(-1, labels[:, 1:, None])[..., 0]
        return (logprobs * (labels[:, 1:] != -100)).sum(-1)

    chosen = logp(policy_chosen_logits, chosen_labels) - logp(ref_chosen_logits, chosen_labels)
    rejected = logp(policy_rejected_logits, rejected_labels) - logp(ref_rejected_logits, rejected_labels)
    return -F.logsigmoid(beta * (chosen - rejected)).mean(), beta * chosen.detach(), beta * rejected.detach()


def dpo_detached_policy(policy_chosen_logits, policy_rejected_logits, ref_chosen_logits, ref_rejected_logits,
                        chosen_labels, rejected_labels, beta):
    loss, chosen, rejected = dpo_cross_entropy(policy_chosen_logits.detach(), policy_rejected_logits.detach(),
                                               ref_chosen_logits, ref_rejected_logits, chosen_labels,
                                               rejected_labels, beta)
    return loss, chosen, rejected


def dpo_labels_in_place(policy_chosen_logits, policy_rejected_logits, ref_chosen_logits, ref_rejected_logits,
                        chosen_labels, rejected_labels, beta):
    masks = chosen_labels != -100, rejected_labels != -100
    chosen_labels[~masks[0]] = 0  # "gather cannot take -100"
    rejected_labels[~masks[1]] = 0

    def logp(logits, labels, mask):
        logprobs = logits[:, :-1].log_softmax(-1).gather(-1, labels[:, 1:, None])[..., 0]
        return (logprobs * mask[:, 1:]).sum(-1)

    chosen = logp(policy_chosen_logits, chosen_labels, masks[0]) - logp(ref_chosen_logits, chosen_labels, masks[0])
    rejected = (logp(policy_rejected_logits, rejected_labels, masks[1])
                - logp(ref_rejected_logits, rejected_labels, masks[1]))
    return -F.logsigmoid(beta * (chosen - rejected)).mean(), beta * chosen.detach(), beta * rejected.detach()


DPO_CORRECT = [dpo_cross_entropy, dpo_row_by_row]

DPO_MISTAKES = [
    pytest.param(dpo_no_shift, "no shift", id="no-shift"),
    pytest.param(dpo_shift_left, "shifted the wrong way", id="shift-left"),
    pytest.param(dpo_mean_tokens, "averaged the log-probabilities over each answer's tokens", id="mean-tokens"),
    pytest.param(dpo_ignored_counted, "positions labelled -100 were counted", id="ignored-counted"),
    pytest.param(dpo_raw_logits, "gathered the raw logits", id="raw-logits"),
    pytest.param(dpo_time_dim, "log_softmax over the positions", id="time-dim"),
    pytest.param(dpo_reward_no_beta, "beta missing from the rewards", id="reward-no-beta"),
    pytest.param(dpo_models_swapped, "policy and reference swapped", id="models-swapped"),
    pytest.param(dpo_pairs_swapped, "chosen and rejected swapped", id="pairs-swapped"),
    pytest.param(dpo_flipped, "the margin's sign is flipped", id="flipped"),
    pytest.param(dpo_no_minus, "without the minus", id="no-minus"),
    pytest.param(dpo_log_sigmoid, "log(sigmoid(...))", id="log-sigmoid"),
    pytest.param(dpo_summed, "summed the pairs' losses", id="summed"),
    pytest.param(dpo_per_pair, "returned one loss per pair", id="per-pair"),
    pytest.param(dpo_loss_no_beta, "beta missing from the loss", id="loss-no-beta"),
    pytest.param(dpo_beta_twice, "beta applied twice", id="beta-twice"),
    pytest.param(dpo_not_detached, "the rewards still carry the policy's graph", id="not-detached"),
    pytest.param(dpo_loss_item, "returned the loss as a Python number", id="loss-item"),
    pytest.param(dpo_gathers_minus_100, "-100 is no index into the vocabulary", id="gathers-minus-100"),
    pytest.param(dpo_detached_policy, "the loss has no gradient", id="detached-policy"),
    pytest.param(dpo_labels_in_place, "in place", id="labels-in-place"),
]


@pytest.mark.parametrize("fn", DPO_CORRECT, ids=lambda f: f.__name__)
def test_dpo_accepts_other_correct_answers(fn):
    result = check("dpo_loss", fn)
    assert result.passed, result.feedback


@pytest.mark.parametrize("fn, phrase", DPO_MISTAKES)
def test_dpo_names_the_mistake(fn, phrase):
    assert_fails_naming(check("dpo_loss", fn), phrase)


def test_dpo_log_sigmoid_fails_only_at_large_margins():
    result = check("dpo_loss", dpo_log_sigmoid)
    failed = [c.label for c in result.cases if not c.passed]
    assert failed == [c.label for c in checks.dpo_cases() if "large margins" in c.label], result.feedback


# =============================================================== what each exercise forbids (lesson 11 computes it)

def labels_by_trls_collator(input_ids, prompt_lengths, attention_mask):
    """The prompt's labels set to -100 by hand, the padding left to TRL's SFT collator."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    rows = []
    for ids, start, mask in zip(input_ids.tolist(), prompt_lengths.tolist(), attention_mask.tolist()):
        n = sum(mask)
        rows.append({"input_ids": ids[:n], "labels": [-100] * start + ids[start:n]})
    collator = DataCollatorForLanguageModeling(pad_token_id=2, pad_to_multiple_of=input_ids.shape[1])
    return collator(rows)["labels"]


def labels_by_the_lessons_sft(input_ids, prompt_lengths, attention_mask):
    """Reads the mask of the lesson's SFT run: refused at the call, before anything runs."""
    from llmcourse.instruct import train_sft

    _, run = train_sft(None, None, steps=1)
    return torch.tensor(run["example"]["scored"])


def lora_by_the_lessons_adapter(model, target_modules, r, alpha, generator):
    from llmcourse.instruct import lora_config, with_adapter

    with_adapter(model, {}, lora_config(r, alpha, targets=list(target_modules)))
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def lora_by_the_lessons_sft(model, target_modules, r, alpha, generator):
    from llmcourse import instruct

    tuned, _ = instruct.train_sft(model, None, steps=0, r=r)
    return sum(p.numel() for p in tuned.parameters() if p.requires_grad)


def lora_by_the_lessons_dpo(model, target_modules, r, alpha, generator):
    from llmcourse import instruct

    tuned, _ = instruct.train_dpo(model, None, [], beta=0.1, steps=0, r=r)
    return sum(p.numel() for p in tuned.parameters() if p.requires_grad)


def reward_by_trls_trainer(reward_fn, optimizer, chosen, rejected):
    """TRL's loss on the batch, reward_fn standing in for its model."""
    from trl import RewardTrainer

    trainer = RewardTrainer.__new__(RewardTrainer)  # no datasets nor arguments: only its loss is wanted
    loss = trainer.compute_loss(reward_fn, {"chosen": chosen, "rejected": rejected})
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return {"loss": loss.item(), "accuracy": 0.0}


def reward_by_the_lessons_helper(reward_fn, optimizer, chosen, rejected):
    from llmcourse.instruct import train_reward_model

    run = train_reward_model(list(zip(chosen, rejected)), [], steps=1)
    return {"loss": run["log"][-1]["loss"], "accuracy": 0.0}


def dpo_by_trls_trainer(policy_chosen_logits, policy_rejected_logits, ref_chosen_logits, ref_rejected_logits,
                        chosen_labels, rejected_labels, beta):
    from trl import DPOTrainer

    trainer = DPOTrainer.__new__(DPOTrainer)  # no model nor datasets: only its loss is wanted
    loss = trainer.compute_loss(None, {"chosen_logits": policy_chosen_logits, "chosen_labels": chosen_labels,
                                       "rejected_logits": policy_rejected_logits, "rejected_labels": rejected_labels})
    return loss, torch.zeros(len(chosen_labels)), torch.zeros(len(rejected_labels))


def dpo_by_the_lessons_helper(policy_chosen_logits, policy_rejected_logits, ref_chosen_logits, ref_rejected_logits,
                              chosen_labels, rejected_labels, beta):
    from llmcourse.instruct import train_dpo

    _, run = train_dpo(None, None, [], beta=beta, steps=1)
    return run["log"][-1]["loss"], torch.zeros(len(chosen_labels)), torch.zeros(len(rejected_labels))


@pytest.mark.parametrize("name, fn, shown, called", [
    ("response_only_labels", labels_by_trls_collator, "trl.trainer.sft_trainer.DataCollatorForLanguageModeling",
     "trl.trainer.sft_trainer.DataCollatorForLanguageModeling.__call__"),
    ("response_only_labels", labels_by_the_lessons_sft, "trl.trainer.sft_trainer.DataCollatorForLanguageModeling",
     "llmcourse.instruct.train_sft"),
    ("add_lora", lora_by_the_lessons_adapter, "llmcourse.instruct.with_adapter", "llmcourse.instruct.with_adapter"),
    ("add_lora", lora_by_the_lessons_sft, "llmcourse.instruct.with_adapter", "llmcourse.instruct.train_sft"),
    ("add_lora", lora_by_the_lessons_dpo, "llmcourse.instruct.with_adapter", "llmcourse.instruct.train_dpo"),
    ("reward_model_step", reward_by_trls_trainer, "trl.RewardTrainer",
     "trl.trainer.reward_trainer.RewardTrainer.compute_loss"),
    ("reward_model_step", reward_by_the_lessons_helper, "trl.RewardTrainer", "llmcourse.instruct.train_reward_model"),
    ("dpo_loss", dpo_by_trls_trainer, "trl.DPOTrainer", "trl.trainer.dpo_trainer.DPOTrainer.compute_loss"),
    ("dpo_loss", dpo_by_the_lessons_helper, "trl.DPOTrainer", "llmcourse.instruct.train_dpo"),
], ids=["trl-collator", "train_sft", "with_adapter", "lora-train_sft", "lora-train_dpo", "RewardTrainer",
        "train_reward_model", "DPOTrainer", "train_dpo"])
def test_each_exercise_refuses_what_the_lesson_computes_it_with(name, fn, shown, called):
    """Refused at the call, whatever the arguments (the lesson's helpers would train for minutes): the mistake names
    what the exercise forbids, the message the function the code called."""
    if called.startswith("trl."):
        pytest.importorskip("trl")
    result = check(name, fn)
    assert not result.passed
    assert list(result.mistakes) == [f"calls `{shown}`, which this exercise asks you to build yourself"], \
        result.feedback
    assert f"`{called}` is what this exercise builds" in result.feedback, result.feedback


def test_trls_collator_pads_the_labels_this_exercise_asks_for():
    """Why it is forbidden: with the prompt's labels set by hand, TRL's collator writes the rest of the answer."""
    pytest.importorskip("trl")
    with not_enforced():
        assert check("response_only_labels", labels_by_trls_collator).passed


# =============================================================== the API around a check

def test_checks_are_fast(reference):
    import time

    check("add_lora", reference_fn(reference, "add_lora"))  # imports transformers' Llama once
    start = time.perf_counter()
    for name in EXERCISES:
        check(name, reference_fn(reference, name))
    assert time.perf_counter() - start < 10  # generous: the machine may be shared


# =============================================================== hidden checks

@pytest.mark.parametrize("name, right", [("response_only_labels", labels_where), ("add_lora", lora_merged),
                                         ("reward_model_step", reward_softplus), ("dpo_loss", dpo_row_by_row)])
def test_hidden_checks_pass_other_correct_answers(hidden_dir, name, right, capsys):
    grader.hidden.run_hidden(name, right)
    assert "hidden tests passed" in capsys.readouterr().out


@pytest.mark.parametrize("name, wrong, phrase", [
    ("response_only_labels", labels_by_pad_id, "masked the padding by its token id"),
    ("add_lora", lora_by_in, "matched by `in`"),
    ("add_lora", lora_scale_alpha, "scaled by alpha instead of alpha / r"),
    ("reward_model_step", reward_no_zero_grad, "optimizer.zero_grad forgotten"),
    ("dpo_loss", dpo_log_sigmoid, "log(sigmoid(...))"),
    ("dpo_loss", dpo_mean_tokens, "averaged the log-probabilities over each answer's tokens"),
])
def test_hidden_checks_name_the_mistake(hidden_dir, name, wrong, phrase):
    with pytest.raises(AssertionError) as info:
        grader.hidden.run_hidden(name, wrong)
    assert phrase in str(info.value)


# =============================================================== the chapter contract (tests/chapter_contract.py)

class TestChapterContract(ChapterContract):
    ASSIGNMENT = ASSIGNMENT
    EXERCISES = EXERCISES

    NAMED_MISTAKES = [  # less obvious mistakes: every failing case still names one
        pytest.param("response_only_labels", labels_by_pad_id, id="labels-pad-by-id"),
        pytest.param("response_only_labels", labels_shifted, id="labels-shifted"),
        pytest.param("response_only_labels", labels_off_by_one, id="labels-off-by-one"),
        pytest.param("response_only_labels", labels_first_length, id="labels-first-length"),
        pytest.param("add_lora", lora_b_random, id="lora-B-random"),
        pytest.param("add_lora", lora_scale_alpha, id="lora-scale-alpha"),
        pytest.param("add_lora", lora_by_in, id="lora-by-in"),
        pytest.param("add_lora", lora_last_part, id="lora-last-part"),
        pytest.param("add_lora", lora_not_frozen, id="lora-not-frozen"),
        pytest.param("add_lora", lora_a_global, id="lora-A-global"),
        pytest.param("reward_model_step", reward_log_sigmoid, id="reward-log-sigmoid"),
        pytest.param("reward_model_step", reward_swapped, id="reward-swapped"),
        pytest.param("reward_model_step", reward_ties, id="reward-ties"),
        pytest.param("reward_model_step", reward_no_zero_grad, id="reward-no-zero-grad"),
        pytest.param("dpo_loss", dpo_no_shift, id="dpo-no-shift"),
        pytest.param("dpo_loss", dpo_mean_tokens, id="dpo-mean-tokens"),
        pytest.param("dpo_loss", dpo_ignored_counted, id="dpo-ignored-counted"),
        pytest.param("dpo_loss", dpo_reward_no_beta, id="dpo-reward-no-beta"),
        pytest.param("dpo_loss", dpo_models_swapped, id="dpo-models-swapped"),
        pytest.param("dpo_loss", dpo_flipped, id="dpo-flipped"),
        pytest.param("dpo_loss", dpo_log_sigmoid, id="dpo-log-sigmoid"),
        pytest.param("dpo_loss", dpo_not_detached, id="dpo-not-detached"),
    ]
    ALL_OR_NOTHING = [
        ("response_only_labels", labels_loop, labels_by_pad_id),
        ("add_lora", lora_by_linears, lora_scale_alpha),
        ("reward_model_step", reward_softplus, reward_ties),
        ("dpo_loss", dpo_cross_entropy, dpo_no_shift),
    ]
    GARBAGE = DEFAULT_GARBAGE + [A_MIXED_LIST]

    def hidden_wrong(self, exercise, reference):
        return {"response_only_labels": labels_shifted, "add_lora": lora_no_scale,
                "reward_model_step": reward_summed, "dpo_loss": dpo_pairs_swapped}[exercise]
