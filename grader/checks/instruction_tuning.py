"""Chapter 11, instruction tuning: response_only_labels, add_lora, reward_model_step, dpo_loss.

``response_only_labels`` runs on token ids laid out as SmolLM2's chat template lays them out (a system and a
user turn, then the answer, each turn closed by ``<|im_end|>``, id 2, which is also SmolLM2's end-of-sequence
and padding token), among them three chats tokenized by the shipped tokenizer (a test compares them with it).
The reference writes the rule out: the ids, -100 before each row's prompt length and where the attention mask
is 0.

``add_lora`` runs on tiny models built inside the case from a seed: a 2-layer ``LlamaForCausalLM`` (hidden 32,
grouped key/value heads, so that ``k_proj`` and ``v_proj`` map 32 numbers to 16) and ``ProjNet``, a small
network whose layer names share pieces (``proj``, ``proj_out``, ``out_proj``), so that matching a target by
``in`` or by a bare ``endswith`` replaces layers it should not. The case runs the model before and after the
call and reports plain facts: which layers got LoRA, the shapes and the trainable flags of every parameter,
whether the output changed at once, the scale the new layer applies (with B set to random values, its output
minus the frozen layer's is fitted by s · B A x), whether a gradient step on the trainable parameters changes
the output, and whether two calls with generators seeded alike draw the same A (and other seeds another).

``reward_model_step`` runs on two tiny reward models (a mean of token embeddings and a linear head, called
on a dict batch like a Hugging Face model; a linear function of feature vectors); an SGD optimizer records
the gradient it sees at its step, and the parameters may hold a stale gradient from an earlier step. The
judge rebuilds the model from the seed and computes the rewards, the Bradley-Terry loss, the pair accuracy
and the fresh gradient itself.

``dpo_loss`` runs on random logits and labels (prompts and padding at -100, chosen and rejected of different
lengths); the case backpropagates the returned loss to the policy's logits and reports the gradients and
which outputs still carry a graph. The reference is Rafailov et al.'s objective computed in float64 from the
definition; its rewards are detached, as TRL's ``DPOTrainer.dpo_loss`` returns them.

Every ``Mistake`` is a wrong answer learners write, so that a failing output is named, not just flagged.
"""

import copy
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from grader.compare import Mistake, Problem, close, with_mistake
from grader.core import RAISED, Case, Exercise, _changed, raised, register
from grader.forbidden import LESSON_LORA, PEFT_LORA_LAYER, PEFT_MODEL, TRL_COMPLETION_MASK, TRL_DPO, TRL_REWARD
from grader.numbers import is_number
from grader.values import TensorData, describe

IGNORE = -100  # the label of a position the loss skips (cross-entropy's ignore_index)
ENDOFTEXT, IM_START, IM_END = 0, 1, 2  # SmolLM2's special ids: <|im_end|> ends every turn, and is EOS and padding


# ================================================================ response_only_labels

def labels_variant(input_ids, prompt_lengths, attention_mask, *, prompt="mask", padding="mask", offset=0,
                   first_row=False, shift=False, fill=IGNORE):
    """The labels, with switches that reproduce the common mistakes (defaults: the right labels).
    ``prompt``: "mask", "none" (prompt kept) or "only" (the prompt kept, the answer masked); ``padding``: "mask"
    (from attention_mask), "none", or a token id masked wherever it occurs; ``offset`` added to each prompt
    length; ``first_row``: the first row's prompt length for every row; ``shift``: labels moved one step left."""
    lengths = torch.as_tensor(prompt_lengths).reshape(-1)
    if first_row:
        lengths = lengths[:1].expand(len(lengths))
    positions = torch.arange(input_ids.shape[1])[None, :]  # (1, T)
    in_prompt = positions < (lengths[:, None] + offset)  # (B, T)
    if padding == "mask":
        pad = attention_mask == 0
    elif padding == "none":
        pad = torch.zeros_like(in_prompt)
    else:
        pad = input_ids == padding
    keep = {"mask": ~in_prompt, "none": torch.ones_like(in_prompt), "only": in_prompt}[prompt] & ~pad
    labels = torch.where(keep, input_ids, torch.full_like(input_ids, fill))
    if shift:
        labels = torch.cat([labels[:, 1:], torch.full_like(labels[:, :1], IGNORE)], dim=1)
    return labels


def _labels_mistake(description, **switches):
    return Mistake(description, lambda *args, **kwargs: labels_variant(*args, **kwargs, **switches))


PAD_BY_ID = ("masked the padding by its token id: SmolLM2 pads with its end-of-sequence token `<|im_end|>` (id 2), "
             "which also closes every answer, so the answer's own end is masked and the model never learns to "
             "stop; read the padding from attention_mask (0 = padding)")
LABELS_SHIFTED = ("shifted the labels by one position: they stay aligned with input_ids (label t is token t, or "
                  "-100); the model shifts them itself when it computes its loss, so a second shift trains each "
                  "position on the token two steps ahead")
PROMPT_KEPT = ("the prompt is not masked: every token before the row's prompt length gets -100, so that the loss "
               "counts the answer only")
PADDING_KEPT = "the padding is not masked: every position where attention_mask is 0 gets -100"
PROMPT_OFF_BY_ONE = ("off by one at the prompt's end: exactly the first prompt_lengths[i] tokens of row i are the "
                     "prompt (positions 0 to prompt_lengths[i] - 1); the answer starts at position "
                     "prompt_lengths[i]")
FIRST_ROW_LENGTH = "one prompt length for every row (the first row's): each row has its own prompt length"
INVERTED = "inverted: the prompt kept its ids and the answer got -100; it is the other way round"
ZERO_FILL = ("filled the masked positions with 0 (or another token id): the loss skips -100 only; 0 is a real "
             "token (`<|endoftext|>`), which the model would be trained to predict")
LABELS_DTYPE = ("the labels are not torch.long: cross-entropy takes its targets as int64 class indices; build "
                "them from input_ids (a clone keeps its dtype)")

LABEL_MISTAKES = [
    _labels_mistake(PAD_BY_ID, padding=IM_END),
    _labels_mistake(PAD_BY_ID, padding=ENDOFTEXT),
    _labels_mistake(LABELS_SHIFTED, shift=True),
    _labels_mistake(PROMPT_KEPT, prompt="none"),
    _labels_mistake(PADDING_KEPT, padding="none"),
    _labels_mistake(PROMPT_OFF_BY_ONE, offset=1),
    _labels_mistake(PROMPT_OFF_BY_ONE, offset=-1),
    _labels_mistake(FIRST_ROW_LENGTH, first_row=True),
    _labels_mistake(INVERTED, prompt="only"),
    _labels_mistake(ZERO_FILL, fill=0),
    _labels_mistake(ZERO_FILL, fill=IM_END),
]

# Three chats in SmolLM2's template, token ids from the shipped tokenizer (tests/checks/test_instruction_tuning.py
# compares them): the prompt is everything up to and including "<|im_start|>assistant\n" (the template with
# add_generation_prompt=True), the answer a label word, then "<|im_end|>" and "\n".
# <|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n
SYSTEM = [1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018, 411, 407, 19712,
          8182, 2, 198]
ASSISTANT = [1, 520, 9531, 198]  # <|im_start|>assistant\n
CHATS = [  # (user turn, answer) as SmolLM2's tokenizer writes them
    ([1, 4093, 198, 21465, 42, 637, 49, 35702, 28, 43773, 4771, 6662, 20085, 355, 3524, 47, 2, 198], [16185, 2, 198]),
    ([1, 4093, 198, 21465, 42, 637, 52, 1274, 284, 1869, 1147, 986, 6662, 20085, 355, 3524, 47, 2, 198],
     [17728, 2, 198]),
    ([1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47, 1963, 2229, 30, 2, 198], [38634, 2, 198]),
]
CHAT_TEXTS = [  # what the ids above encode (user turn, answer)
    ("Review: 'A gorgeous, witty film.' Positive or negative?", "positive"),
    ("Review: 'Dull and far too long.' Positive or negative?", "negative"),
    ("What is the capital of France? One word.", "Paris"),
]


def chat_rows() -> list:
    """(prompt ids, answer ids) of the three chats."""
    return [(SYSTEM + user + ASSISTANT, answer) for user, answer in CHATS]


def label_batch(rows, pad_id=IM_END, length=None) -> tuple:
    """(input_ids, prompt_lengths, attention_mask) of ``rows`` of (prompt ids, answer ids), right-padded."""
    length = length or max(len(p) + len(a) for p, a in rows)
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, (prompt, answer) in enumerate(rows):
        seq = list(prompt) + list(answer)
        ids[i, :len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[i, :len(seq)] = 1
    return ids, torch.tensor([len(p) for p, _ in rows], dtype=torch.long), mask


def random_rows(seed: int, spec, eos=IM_END, low=3, high=500, with_pad_token=None) -> list:
    """Rows of random ids in [low, high): ``spec`` is a list of (prompt length, answer length); each answer ends
    with ``eos`` (when the answer is not empty) and each prompt with an <|im_end|> and an <|im_start|> turn
    opener, as in a chat. ``with_pad_token`` is an id written into some answers too (a real token)."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for prompt_len, answer_len in spec:
        prompt = torch.randint(low, high, (prompt_len,), generator=g).tolist()
        if prompt_len >= 3:
            prompt[-3:-1] = [IM_END, IM_START]
        answer = torch.randint(low, high, (answer_len,), generator=g).tolist()
        if answer_len:
            answer[-1] = eos
        if with_pad_token is not None and answer_len >= 3:
            answer[0] = with_pad_token
        rows.append((prompt, answer))
    return rows


def labels_cases() -> list:
    rows = random_rows(1101, [(6, 4), (3, 7), (8, 1), (5, 5)])
    edge = random_rows(1102, [(0, 6), (5, 0), (4, 5), (2, 2)])
    zero_padded = random_rows(1103, [(4, 5), (6, 3), (3, 6)], eos=IM_END, with_pad_token=ENDOFTEXT)
    return [
        Case("three chats in SmolLM2's template (system and user turns, then the answer 'positive', 'negative' or "
             "'Paris' closed by <|im_end|> (id 2) and a newline), right-padded with <|im_end|>: the pad token is "
             "the end-of-sequence token", label_batch(chat_rows())),
        Case("4 rows of random ids (prompts of 6, 3, 8 and 5 tokens), each answer closed by <|im_end|> (2), "
             "right-padded with 2 to 12 positions, one row without padding", label_batch(rows, length=12)),
        Case("edge rows: a prompt of length 0 (every real token is answer), a prompt that fills its row's real "
             "tokens (no answer: every label -100), padding with 2", label_batch(edge, length=10)),
        Case("padding with id 0 (<|endoftext|>), which also occurs inside some answers as a real token",
             label_batch(zero_padded, pad_id=ENDOFTEXT, length=11)),
        Case("a single row of 5 tokens without padding, prompt of 2",
             label_batch(random_rows(1104, [(2, 3)]))),
    ]


def _first_difference(case: Case, got: np.ndarray, expected: np.ndarray) -> str:
    ids, lengths, mask = (a.numpy() for a in case.args)
    wrong = np.argwhere(got != expected)
    i, t = (int(v) for v in wrong[0])
    token = int(ids[i, t])
    name = {IM_END: " = <|im_end|>", IM_START: " = <|im_start|>", ENDOFTEXT: " = <|endoftext|>"}.get(token, "")
    where = ("padding" if mask[i, t] == 0 else "in the prompt" if t < lengths[i] else "in the answer")
    return (f"{len(wrong)} of {got.size} labels are wrong; the first at row {i}, position {t} (token {token}{name}, "
            f"{where}; prompt length {int(lengths[i])}): yours {int(got[i, t])}, expected {int(expected[i, t])}")


def judge_labels(case: Case, out) -> str | None:
    expected = labels_variant(*case.args).numpy()
    shape = tuple(case.args[0].shape)
    if not isinstance(out, TensorData):
        return f"return the labels as a tensor of shape {shape}, like input_ids; got {describe(out)}"
    if out.shape != shape:
        if out.shape == (shape[0], shape[1] - 1):
            return Problem(f"the labels have shape {out.shape}; expected {shape}, the shape of input_ids",
                           LABELS_SHIFTED)
        return f"the labels have shape {out.shape}; expected {shape}, the shape of input_ids"
    got = out.array
    if np.issubdtype(got.dtype, np.floating) and not np.isnan(got).any():
        got = got.astype(np.int64)
        if (got == expected).all():
            return Problem(f"the labels are right but their dtype is {out.dtype}", LABELS_DTYPE)
    if (got == expected).all():
        if out.dtype != "torch.int64":
            return Problem(f"the labels are right but their dtype is {out.dtype}", LABELS_DTYPE)
        return None
    return with_mistake(_first_difference(case, got, expected), out, case, LABEL_MISTAKES)


def explain_labels_error(case: Case, outcome) -> str | None:
    message = outcome.message
    if "only integer tensors of a single element" in message or "a Tensor with" in message and "to bool" in message:
        return ("prompt_lengths holds one length per row: a slice like `[:, :n]` takes one number, so mask each "
                "row with its own length")
    if "index" in message and "out of bounds" in message:
        return "a position is between 0 and T - 1; a row's prompt may be as long as its real tokens, or 0"
    return None


register(Exercise(
    name="response_only_labels", chapter="11", signature="(input_ids, prompt_lengths, attention_mask)", points=2,
    make_cases=labels_cases, judge=judge_labels, explain_error=explain_labels_error,
    forbidden=(TRL_COMPLETION_MASK,),
))


# ================================================================ add_lora: the checks' models

def tiny_llama(seed: int, hidden=32, layers=2, heads=4, kv_heads=2, intermediate=48, vocab=48):
    """A Llama-architecture causal LM with random weights (SmolLM2's architecture, tied embeddings, in small)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                         max_position_embeddings=64, initializer_range=0.2, tie_word_embeddings=True,
                         bos_token_id=IM_START, eos_token_id=IM_END, pad_token_id=IM_END)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LlamaForCausalLM(config).eval()


class ProjBlock(nn.Module):
    """A residual block whose three layers' names share pieces: proj, proj_out, out_proj (all with biases)."""

    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.proj = nn.Linear(width, hidden)
        self.proj_out = nn.Linear(hidden, width)
        self.out_proj = nn.Linear(width, width)

    def forward(self, x):
        return x + self.out_proj(self.proj_out(torch.tanh(self.proj(x))))


class ProjNet(nn.Module):
    """Blocks of ProjBlock and a head: Linear layers named blocks.i.proj, blocks.i.proj_out, blocks.i.out_proj and
    head, with a LayerNorm in between (a parameter that is not a Linear's)."""

    def __init__(self, width=12, hidden=20, n_blocks=2, n_out=5):
        super().__init__()
        self.blocks = nn.ModuleList(ProjBlock(width, hidden) for _ in range(n_blocks))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, n_out)

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


def proj_net(seed: int, **dims) -> ProjNet:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ProjNet(**dims).eval()


def matches(name: str, target: str) -> bool:
    """The exercise's rule: the qualified name is the target, or ends with "." + the target."""
    return name == target or name.endswith("." + target)


RULES = {  # how learners match a layer's name against a target: the right rule and the usual wrong ones
    "right": matches,
    "in": lambda name, target: target in name,
    "endswith": lambda name, target: name.endswith(target),
    "last": lambda name, target: name.split(".")[-1] == target,
}


def chosen_layers(names, targets, rule="right") -> list:
    return [n for n in names if any(RULES[rule](n, t) for t in targets)]


def unmatched_targets(names, targets, rule="right") -> list:
    return [t for t in targets if not any(RULES[rule](n, t) for n in names)]


LR = 0.5  # the SGD step the case takes on the trainable parameters


@dataclass
class LoraCase(Case):
    """One add_lora call on a model built here: ``kind`` "llama" (tiny_llama with ``dims``) or "projnet"
    (ProjNet with ``dims``), from ``model_seed``; ``targets`` passed as given (a list or a tuple); the generator
    seeded with ``seed``. ``run`` reports what the call did to the model, as plain values."""

    kind: str = "llama"
    dims: dict = field(default_factory=dict)
    model_seed: int = 0
    targets: tuple | list = ()
    r: int = 4
    alpha: float = 8.0
    seed: int = 0
    dtype: str = "float32"  # ProjNet may be built in float64

    def build(self):
        """(model, its input): token ids (2, 7) for the Llama, features (2, 5, width) for ProjNet."""
        g = torch.Generator().manual_seed(self.model_seed + 1)
        if self.kind == "llama":
            model = tiny_llama(self.model_seed, **self.dims)
            return model, torch.randint(3, model.config.vocab_size, (2, 7), generator=g)
        dtype = getattr(torch, self.dtype)
        model = proj_net(self.model_seed, **self.dims).to(dtype)
        return model, torch.randn(2, 5, model.head.in_features, generator=g).to(dtype)

    def linear_shapes(self) -> dict:
        """name -> (in_features, out_features) of every nn.Linear of the case's model, in order."""
        model, _ = self.build()
        return {n: (m.in_features, m.out_features) for n, m in model.named_modules() if isinstance(m, nn.Linear)}

    def forward(self, model, inputs):
        out = model(inputs)
        return out.logits if self.kind == "llama" else out

    def loss(self, out, inputs):
        if self.kind == "llama":
            return F.cross_entropy(out[:, :-1].reshape(-1, out.shape[-1]), inputs[:, 1:].reshape(-1))
        target = torch.randn(out.shape, generator=torch.Generator().manual_seed(self.model_seed + 2))
        return (out - target.to(out.dtype)).pow(2).mean()

    def call(self, fn, model, seed, global_seed):
        targets = copy.copy(self.targets)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(global_seed)  # a different global stream each call: A must come from `generator`
            return fn(model, targets, self.r, self.alpha, torch.Generator().manual_seed(seed))

    def run(self, fn):
        model, inputs = self.build()
        originals = {n: (m, m.weight.detach().clone(), None if m.bias is None else m.bias.detach().clone())
                     for n, m in model.named_modules() if isinstance(m, nn.Linear)}
        old = {id(p) for p in model.parameters()}
        with torch.no_grad():
            before = self.forward(model, inputs)
        try:
            value = self.call(fn, model, self.seed, 1000)
        except ValueError as err:
            return (RAISED, str(err)[:300]), {}
        layers, inside = {}, set()
        for name, (original, weight, bias) in originals.items():
            try:
                module = model.get_submodule(name)
            except AttributeError:
                continue
            new = [(n, p) for n, p in module.named_parameters() if id(p) not in old]
            if module is original and not new:
                continue
            inside |= {id(p) for p in module.parameters()}
            layers[name] = self.layer_facts(module, original, weight, bias, new)
        first_a = self.a_tensors(model, layers)
        observations = {"layers": layers, **self.training_facts(model, inputs, before, inside)}
        if layers and all(facts["A"] for facts in layers.values()):
            observations.update(self.repeat(fn, layers, first_a))
        return value, observations

    def training_facts(self, model, inputs, before, inside) -> dict:
        """The trainable parameters, the output's change at once, and after one SGD step on the trainable ones."""
        trainable = [(n, list(p.shape)) for n, p in model.named_parameters() if p.requires_grad]
        outside = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in inside]
        with torch.no_grad():
            after = self.forward(model, inputs)
        params = [p for p in model.parameters() if p.requires_grad]
        step_change = 0.0
        if params:
            model.zero_grad(set_to_none=True)
            self.loss(self.forward(model, inputs), inputs).backward()
            torch.optim.SGD(params, lr=LR).step()
            with torch.no_grad():
                step_change = float((self.forward(model, inputs) - after).abs().max())
        return {
            "trainable": [[n, s] for n, s in trainable],
            "n_trainable": sum(p.numel() for p in params),
            "n_total": sum(p.numel() for p in model.parameters()),
            "trainable_outside": outside,
            "change_at_once": float((after - before).abs().max()),
            "step_change": step_change,
        }

    def layer_facts(self, module, original, weight, bias, new) -> dict:
        """What one layer that got LoRA holds and computes: its new parameters, A and B found by their shapes,
        whether the frozen weight still trains, and the scale of its update, fitted with B set to random values:
        (output - frozen layer's output) = scale * B A x, with the residual of that fit."""
        d_in, d_out = original.in_features, original.out_features
        a = next((p for _, p in new if tuple(p.shape) == (self.r, d_in)), None)
        b = next((p for _, p in new if tuple(p.shape) == (d_out, self.r)), None)
        base_trains = bool(original.weight.requires_grad) or any(
            p.requires_grad and tuple(p.shape) == (d_out, d_in) for _, p in module.named_parameters())
        facts = {"new": [[n, list(p.shape), bool(p.requires_grad)] for n, p in new], "d_in": d_in, "d_out": d_out,
                 "A": a is not None, "B": b is not None, "base_trains": base_trains}
        if a is None or b is None:
            return facts
        facts.update({"A_trains": bool(a.requires_grad), "B_trains": bool(b.requires_grad),
                      "A_zero": bool((a == 0).all()), "A_finite": bool(torch.isfinite(a).all()),
                      "B_zero": bool((b == 0).all())})
        g = torch.Generator().manual_seed(self.seed + 7)
        x = torch.randn(2, 3, d_in, generator=g).to(weight.dtype)
        b_random = torch.randn(b.shape, generator=g).to(b.dtype)
        with torch.no_grad():
            saved = b.detach().clone()
            b.copy_(b_random)
            try:
                out = module(x)
            finally:
                b.copy_(saved)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, 3, d_out):
            facts["probe"] = f"the layer returned {describe(out)} for an input of shape (2, 3, {d_in})"
            return facts
        update = ((x @ a.detach().to(x.dtype).T) @ b_random.to(x.dtype).T).double()
        norm = float(update.pow(2).sum())
        if norm == 0 or not math.isfinite(norm):
            return facts
        out = out.detach().double()
        for key, base in (("", F.linear(x, weight, bias)), ("_without_bias", F.linear(x, weight))):
            delta = out - base.double()
            scale = float((delta * update).sum()) / norm
            size = max(float(delta.norm()), abs(scale) * math.sqrt(norm), 1e-12)
            facts["scale" + key] = scale
            facts["residual" + key] = float((delta - scale * update).norm()) / size
        return facts

    def a_tensors(self, model, layers) -> list:
        """Every LoRA layer's A (its new 2-D parameter of shape (r, d_in)), in the layers' order."""
        found = []
        for name, facts in layers.items():
            module = model.get_submodule(name)
            found += [p.detach().clone() for p in module.parameters() if tuple(p.shape) == (self.r, facts["d_in"])]
        return found

    def repeat(self, fn, layers, first_a) -> dict:
        """Two more calls on fresh models: the same seed (under another global random stream), and the next seed."""
        found = []
        try:
            for seed, global_seed in ((self.seed, 2000), (self.seed + 1, 3000)):
                model, _ = self.build()
                self.call(fn, model, seed, global_seed)
                found.append(self.a_tensors(model, layers))
        except Exception:  # noqa: BLE001  (a function that fails on a second call is judged on its first)
            return {}

        def same(a, b):
            return len(a) == len(b) and all(x.shape == y.shape and bool((x == y).all()) for x, y in zip(a, b))

        return {"same_seed_same_A": same(first_a, found[0]), "other_seed_other_A": not same(first_a, found[1])}


def lora_cases() -> list:
    return [
        LoraCase("the tiny Llama (2 layers, hidden 32, key/value projections 32 -> 16), targets ['q_proj', "
                 "'v_proj'], r=4, alpha=8", (), kind="llama", model_seed=1110, targets=["q_proj", "v_proj"], r=4,
                 alpha=8, seed=1),
        LoraCase("the tiny Llama, every projection of attention and MLP as a tuple ('q_proj', 'k_proj', 'v_proj', "
                 "'o_proj', 'gate_proj', 'up_proj', 'down_proj'), r=2, alpha=16",
                 (), kind="llama", model_seed=1111,
                 targets=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
                 r=2, alpha=16, seed=2),
        LoraCase("the tiny Llama, targets of two parts ['self_attn.o_proj', 'mlp.down_proj'], r=3, alpha=6",
                 (), kind="llama", model_seed=1112, targets=["self_attn.o_proj", "mlp.down_proj"], r=3, alpha=6,
                 seed=3),
        LoraCase("ProjNet, whose layers are blocks.i.proj (12 -> 20), blocks.i.proj_out, blocks.i.out_proj and head, "
                 "all with biases: target ['proj'] names blocks.0.proj and blocks.1.proj only; r=2, alpha=4",
                 (), kind="projnet", model_seed=1113, targets=["proj"], r=2, alpha=4, seed=4),
        LoraCase("ProjNet, targets ['blocks.1.proj', 'head'] (one layer of one block, and the head), r=3, alpha=12",
                 (), kind="projnet", model_seed=1114, targets=["blocks.1.proj", "head"], r=3, alpha=12, seed=5),
        LoraCase("ProjNet in float64 (A and B in the dtype of the layer's weight), targets ['proj_out'], r=2, "
                 "alpha=2", (), kind="projnet", model_seed=1116, targets=["proj_out"], r=2, alpha=2, seed=7,
                 dtype="float64"),
        LoraCase("the tiny Llama, targets ['q_proj', 'mlp']: 'mlp' names a module that is not an nn.Linear (the "
                 "MLP block), so no Linear matches it: ValueError", (), kind="llama", model_seed=1115,
                 targets=["q_proj", "mlp"], r=4, alpha=8, seed=6),
    ]


NO_DOT = ("matched the end of the name without the dot: a target names whole parts of the dotted name, so 'proj' "
          "matches blocks.0.proj but not blocks.0.out_proj (a name matches when it is the target, or ends with a "
          "dot followed by the target)")
BY_IN = ("matched by `in` (the target anywhere in the name): 'proj' then also matches blocks.0.proj_out, and 'mlp' "
         "every layer inside the MLP; a target must match the end of the qualified name, by whole parts")
LAST_PART = ("compared only the last part of the name (after the last dot): a target may have several parts, as "
             "'self_attn.o_proj' or 'blocks.1.proj', and must match the end of the qualified name")
EVERY_LINEAR = "LoRA on every nn.Linear: only the layers whose names match one of target_modules get it"
NOT_SET = ("no layer of the model was replaced: build the new layer and set it on its parent module in place of the "
           "Linear (`setattr(parent, child_name, new_layer)`; `model.get_submodule` finds the parent)")
NO_RAISE = ("no ValueError for a target that matches no nn.Linear: a typo (or a module that is not a Linear) would "
            "otherwise leave that part of the model silently untrained")
B_RANDOM = ("B is not zeros: the model's output changes the moment LoRA is added; B starts at zero so that B A x "
            "is 0 and the tuned model starts exactly where the pretrained one is")
A_ZERO = ("A is zeros too: with A and B both zero, the gradient of each is zero (each is multiplied by the other), "
          "so training never moves them; draw A at random with the generator")
A_NOT_FINITE = "A holds NaN or inf: draw it from a distribution with finite values (a normal or a uniform one)"
WRONG_DTYPE = ("A and B are in another dtype than the layer's weight: make them in the weight's dtype (and on its "
               "device)")
A_TRANSPOSED = ("A and B have each other's layout: A is (r, d_in), so that A x has r numbers, and B is (d_out, r), "
                "so that B (A x) has d_out; the check finds them by these shapes")
SCALE_ALPHA = "the update is scaled by alpha instead of alpha / r"
NO_SCALE = "the update B A x is not scaled: multiply it by alpha / r"
SCALE_INVERTED = "the update is scaled by r / alpha instead of alpha / r"
SCALE_SQRT = "the update is scaled by alpha / sqrt(r) (rsLoRA's scale): this exercise uses Hu et al.'s alpha / r"
BIAS_DROPPED = ("the frozen layer's bias was dropped: the new layer computes the original linear layer (weight and "
                "bias) plus the update")
WEIGHTS_LOST = ("the frozen layer's weights changed: keep the original nn.Linear (its weight and bias) inside the "
                "new layer, untouched; a new nn.Linear starts from random weights")
BASE_TRAINABLE = ("the replaced layer's own weight is still trainable: LoRA freezes it (requires_grad False) and "
                  "trains only A and B")
NOT_FROZEN = ("parameters outside the LoRA layers are still trainable (embeddings, norms, other layers, and "
              "often the replaced layers' own weights): freeze every parameter of the model but the new A and B")
LORA_FROZEN = ("A and B are not trainable: they must be parameters with requires_grad=True (nn.Parameter); freeze "
               "the model before adding them, or a freeze afterwards catches them too")
NOT_PARAMETERS = ("A and B are not parameters of the model: register them as nn.Parameter attributes of the new "
                  "layer, so that model.parameters() (and the optimizer) finds them")
NOT_FROM_GENERATOR = ("A is not drawn from `generator`: two calls with generators seeded alike gave different A; draw "
                      "it with `generator=generator`, so that a seed reproduces the run")
OWN_GENERATOR = ("A is the same whatever generator is passed in (a generator or seed of your own?): draw it from the "
                 "`generator` argument")
COUNT_TOTAL = "returned every parameter of the model: return the number of trainable parameters (A and B)"
COUNT_LAYERS = "returned the number of layers replaced: return the number of trainable parameters (entries of A and B)"
COUNT_TENSORS = "returned the number of trainable tensors: count their entries (numel)"
COUNT_A = "counted the entries of A only: B's d_out x r entries train too"
COUNT_TENSOR = "returned a tensor: return the count as a Python int"
NO_LEARNING = ("a training step on the trainable parameters did not change the model's output: the new layer's "
               "output must depend on A and B")


def _rule_mistake(got: list, names: list, targets) -> str | None:
    """The named way of matching that selects exactly ``got``."""
    if not got:
        return NOT_SET
    if sorted(got) == sorted(names):
        return EVERY_LINEAR
    for rule, mistake in (("in", BY_IN), ("endswith", NO_DOT), ("last", LAST_PART)):
        if sorted(got) == sorted(chosen_layers(names, targets, rule)):
            return mistake
    return None


def _layers_text(names) -> str:
    return ", ".join(names) if names else "no layer"


def _scale_mistake(scale: float, r: int, alpha: float) -> str | None:
    for value, mistake in ((alpha, SCALE_ALPHA), (1.0, NO_SCALE), (r / alpha, SCALE_INVERTED),
                           (alpha / math.sqrt(r), SCALE_SQRT)):
        if not math.isclose(value, alpha / r) and math.isclose(scale, value, rel_tol=1e-3):
            return mistake
    return None


def _layer_problems(case: LoraCase, name: str, facts: dict) -> list:
    """(text, mistake) pairs about one layer that got LoRA."""
    r, alpha = case.r, case.alpha
    d_in, d_out = facts["d_in"], facts["d_out"]
    if not facts["A"] or not facts["B"]:
        shapes = ", ".join(f"{n} {tuple(s)}" for n, s, _ in facts["new"]) or "none"
        text = (f"{name} ({d_in} -> {d_out}): its new parameters are {shapes}; expected A of shape ({r}, {d_in}) and "
                f"B of shape ({d_out}, {r})")
        transposed = {tuple(s) for _, s, _ in facts["new"]} >= {(d_in, r), (r, d_out)}
        return [(text, A_TRANSPOSED if transposed else NOT_PARAMETERS if not facts["new"] else None)]
    problems = []
    if not (facts["A_trains"] and facts["B_trains"]):
        problems.append((f"{name}: A and B have requires_grad False.", LORA_FROZEN))
    if facts["base_trains"]:
        problems.append((f"{name}: the frozen layer's weight ({d_out}, {d_in}) still has requires_grad True.",
                         BASE_TRAINABLE))
    if not facts["B_zero"]:
        problems.append((f"{name}: B holds nonzero values right after add_lora.", B_RANDOM))
    if not facts["A_finite"]:
        problems.append((f"{name}: A holds NaN or inf.", A_NOT_FINITE))
    elif facts["A_zero"]:
        problems.append((f"{name}: A is all zeros.", A_ZERO))
    if "probe" in facts:
        problems.append((f"{name}: {facts['probe']}.", None))
    elif "scale" in facts:
        if facts["residual"] > 1e-3:
            if facts["residual_without_bias"] < 1e-3:
                problems.append((f"{name}: its output lacks the frozen layer's bias.", BIAS_DROPPED))
            else:
                problems.append((f"{name}: with B set to random values, the layer's output minus the frozen layer's "
                                 f"is not a multiple of B A x (the fit leaves {facts['residual']:.0%}).", WEIGHTS_LOST
                                 if facts["residual"] > 0.5 else None))
        elif not math.isclose(facts["scale"], alpha / r, rel_tol=1e-4):
            problems.append((f"{name}: the update is {facts['scale']:.4g} x B A x; expected alpha / r = {alpha:g} / "
                             f"{r} = {alpha / r:.4g}.", _scale_mistake(facts["scale"], r, alpha)))
    return problems


def _count_problem(case: LoraCase, out, observations: dict, expected_layers: list, shapes: dict):
    expected = sum(case.r * (shapes[n][0] + shapes[n][1]) for n in expected_layers)
    if isinstance(out, TensorData) and out.array.size == 1:
        value = out.array.item()
        return (f"returned a tensor ({out.dtype}) holding {value:g}; expected the Python int {expected:,}",
                COUNT_TENSOR if value == expected else None)
    if isinstance(out, bool) or not isinstance(out, int):
        if isinstance(out, float) and out == expected:
            return (f"returned the float {out:g}: a count is an int", COUNT_TENSOR)
        return (f"return the number of trainable parameters as an int; got {describe(out)}", None)
    if out == expected:
        return None
    candidates = [(observations.get("n_total"), COUNT_TOTAL), (len(expected_layers), COUNT_LAYERS),
                  (2 * len(expected_layers), COUNT_TENSORS),
                  (sum(case.r * shapes[n][0] for n in expected_layers), COUNT_A)]
    mistake = next((m for value, m in candidates if value == out), None)
    if mistake is None and out == observations.get("n_trainable"):
        return None  # the count matches what the call left trainable: the problem is reported where it lies
    return (f"returned {out:,}; the layers that get LoRA here hold {expected:,} trainable parameters "
            f"(r x (d_in + d_out) each)", mistake)


def judge_add_lora(case: LoraCase, out, observations: dict):
    shapes = case.linear_shapes()
    names = list(shapes)
    missing = unmatched_targets(names, case.targets)
    if missing:
        if raised(out):
            return None
        got = sorted(observations.get("layers", {}))
        mistake = NO_RAISE
        if got != sorted(chosen_layers(names, case.targets)):
            mistake = _rule_mistake(got, names, case.targets) or NO_RAISE
        return Problem(f"the target {missing[0]!r} matches no nn.Linear of this model, so the function must raise "
                       f"ValueError; it returned {describe(out)} (LoRA went into {_layers_text(got)})", mistake)
    if raised(out):
        text = f"raised ValueError ({out[1]}), but every target here matches at least one nn.Linear"
        return Problem(text, LAST_PART if unmatched_targets(names, case.targets, "last") else None)
    expected = chosen_layers(names, case.targets)
    layers = observations["layers"]
    problems = []
    got = list(layers)
    if sorted(got) != sorted(expected):
        problems.append((f"LoRA went into {_layers_text(got)}; expected {_layers_text(expected)} "
                         f"(targets {list(case.targets)})", _rule_mistake(got, names, case.targets)))
    outside = observations["trainable_outside"]
    if outside:
        shown = ", ".join(outside[:4]) + (f" and {len(outside) - 4} more" if len(outside) > 4 else "")
        problems.append((f"still trainable outside the LoRA layers: {shown}.", NOT_FROZEN))
    for name in (n for n in got if n in expected):
        layer_problems = [(text, mistake) for text, mistake in _layer_problems(case, name, layers[name])
                          if not (outside and mistake == BASE_TRAINABLE)]  # the model was not frozen at all
        if layer_problems:
            problems += layer_problems
            break  # one layer's problems are enough to read; the others are usually the same
    clean = not problems
    if observations["change_at_once"] > 1e-4 and not any(m in (B_RANDOM, WEIGHTS_LOST, BIAS_DROPPED)
                                                         for _, m in problems):
        problems.append((f"the model's output changed by up to {observations['change_at_once']:.3g} as soon as LoRA "
                         f"was added; it must stay the same until training.", None))
    if clean and observations["step_change"] == 0.0:
        problems.append(("one SGD step on the trainable parameters left the output unchanged.", NO_LEARNING))
    if observations.get("same_seed_same_A") is False:
        problems.append(("called twice with generators seeded alike, it drew different A.", NOT_FROM_GENERATOR))
    elif observations.get("other_seed_other_A") is False:
        problems.append(("called with generators seeded differently, it drew the same A.", OWN_GENERATOR))
    count = _count_problem(case, out, observations, expected, shapes)
    if count:
        problems.append(count)
    if not problems:
        return None
    return Problem("\n".join(text for text, _ in problems), next((m for _, m in problems if m), None))


def explain_lora_error(case: Case, outcome) -> str | None:
    message = outcome.message
    if "changed size during iteration" in message or "mutated during iteration" in message:
        return ("the model's modules changed while you iterated over them: collect the names of the layers to "
                "replace first (in a list), then replace them")
    if "maximum recursion depth" in message:
        return ("the new layer calls itself (or wraps another LoRA layer): keep the original nn.Linear inside it and "
                "call that one")
    if "same dtype" in message or "dtype" in message and "expected" in message.lower():
        return WRONG_DTYPE
    if "cannot be multiplied" in message or "size mismatch" in message:
        return ("A is (r, d_in) and B is (d_out, r): A maps the layer's d_in inputs to r numbers, B those r numbers "
                "to its d_out outputs")
    return None


register(Exercise(
    name="add_lora", chapter="11", signature="(model, target_modules, r, alpha, generator)", points=3,
    make_cases=lora_cases, judge=judge_add_lora, explain_error=explain_lora_error, pure=False,
    forbidden=(PEFT_MODEL, PEFT_LORA_LAYER, LESSON_LORA),
    timeout_s=60,  # the first case imports transformers' Llama
))


# ================================================================ reward_model_step

class BagReward(nn.Module):
    """A reward model called like a Hugging Face model on a dict batch: the mean of the real tokens' embeddings,
    then a linear head to one number; ``reward_fn(batch)`` returns the ``(B,)`` rewards. Counts its calls."""

    def __init__(self, vocab_size=40, dim=6):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim)
        self.head = nn.Linear(dim, 1)
        self.calls = 0

    def forward(self, batch):
        self.calls += 1
        ids, mask = batch["input_ids"], batch["attention_mask"]
        weights = mask[..., None].to(self.embed.weight.dtype)  # (B, T, 1)
        pooled = (self.embed(ids) * weights).sum(1) / weights.sum(1)  # (B, dim)
        return self.head(pooled).squeeze(-1)  # (B,)


class FeatureReward(nn.Module):
    """A linear reward on feature vectors: ``reward_fn(features)`` with features ``(B, dim)`` returns ``(B,)``."""

    def __init__(self, dim=4):
        super().__init__()
        self.head = nn.Linear(dim, 1)
        self.calls = 0

    def forward(self, features):
        self.calls += 1
        return self.head(features).squeeze(-1)


class StepRecordingSGD(torch.optim.SGD):
    """Plain SGD that records, at every ``step()``, the gradients of its parameters (None where there is none)."""

    def __init__(self, params, lr):
        super().__init__(params, lr=lr)
        self.records: list = []

    def step(self, closure=None):
        params = [p for group in self.param_groups for p in group["params"]]
        self.records.append([None if p.grad is None else p.grad.detach().clone() for p in params])
        return super().step(closure)


def bag_pairs(seed: int, n_pairs: int, ties: int = 0, length: int = 6, vocab_size: int = 40) -> tuple:
    """(chosen, rejected): dict batches of token ids with right padding; the last ``ties`` pairs are the same
    sequence twice (equal rewards)."""
    g = torch.Generator().manual_seed(seed)

    def batch():
        ids = torch.randint(1, vocab_size, (n_pairs, length), generator=g)
        lengths = torch.randint(2, length + 1, (n_pairs,), generator=g)
        mask = (torch.arange(length)[None, :] < lengths[:, None]).long()
        return {"input_ids": ids * mask, "attention_mask": mask}

    chosen, rejected = batch(), batch()
    if ties:
        for key in chosen:
            rejected[key][-ties:] = chosen[key][-ties:]
    return chosen, rejected


def feature_pairs(seed: int, differences, dim: int = 4) -> tuple:
    """(chosen, rejected) feature batches whose rewards under ``FeatureReward`` built from ``seed`` differ by
    ``differences`` (chosen minus rejected): the rejected features are random, the chosen ones moved along the
    head's weight."""
    model = reward_model("features", seed)
    w = model.head.weight.detach()[0]  # (dim,)
    rejected = torch.randn(len(differences), dim, generator=torch.Generator().manual_seed(seed + 1))
    chosen = rejected + torch.tensor(differences, dtype=torch.float32)[:, None] * w / w.pow(2).sum()
    return chosen, rejected


def reward_model(kind: str, seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return BagReward() if kind == "bag" else FeatureReward()


def stale_gradients(model: nn.Module, seed: int) -> list:
    """What an earlier step left in ``.grad`` (the same every time for a seed)."""
    g = torch.Generator().manual_seed(seed + 99)
    return [torch.randn(p.shape, generator=g) for p in model.parameters()]


@dataclass
class RewardCase(Case):
    """One reward_model_step call on a reward model built here (``kind`` "bag" or "features", from ``seed``) with
    an SGD optimizer at ``lr`` over its parameters; with ``stale``, the parameters hold the gradient an earlier
    step left. ``args`` are (chosen, rejected). The observations: the gradient each optimizer step saw, and the
    number of reward_fn calls."""

    kind: str = "bag"
    seed: int = 0
    stale: bool = False
    lr: float = 0.5

    def run(self, fn):
        model = reward_model(self.kind, self.seed)
        if self.stale:
            for p, grad in zip(model.parameters(), stale_gradients(model, self.seed)):
                p.grad = grad
        optimizer = StepRecordingSGD(model.parameters(), self.lr)
        args, _ = self.inputs()
        value = fn(model, optimizer, *args)
        steps = [_flat_grads(grads) for grads in optimizer.records]
        observations = {"steps": steps, "calls": model.calls,
                        "grad_after": _flat_grads([p.grad for p in model.parameters()])}
        changed = [i + 2 for i, (after, before) in enumerate(zip(args, self.args)) if _changed(after, before)]
        if changed:
            observations["modified_inputs"] = changed
        return value, observations


def _flat_grads(grads):
    """The gradients as one flat tensor, or None when a parameter has none."""
    if any(g is None for g in grads):
        return None
    return torch.cat([g.detach().reshape(-1) for g in grads])


def reward_facts(case: RewardCase) -> dict:
    """What a right step computes: the rewards before the step, the loss, the accuracy, the gradient of the loss
    (and of the usual wrong losses, keyed by their mistake), and the stale gradient the parameters held."""
    model = reward_model(case.kind, case.seed)
    chosen, rejected = copy.deepcopy(case.args)
    difference = model(chosen) - model(rejected)
    losses = {None: -F.logsigmoid(difference).mean(), RM_SWAPPED: -F.logsigmoid(-difference).mean(),
              RM_NO_MINUS: F.logsigmoid(difference).mean(), RM_SUMMED: -F.logsigmoid(difference).sum(),
              RM_MEAN_FIRST: -F.logsigmoid(difference.mean())}
    grads = {key: _flat_grads(torch.autograd.grad(loss, list(model.parameters()), retain_graph=True)).double()
             for key, loss in losses.items()}
    stale = (torch.cat([g.reshape(-1) for g in stale_gradients(model, case.seed)]).double() if case.stale else None)
    d = difference.detach().double()
    return {"difference": d, "loss": float(-F.logsigmoid(d).mean()), "accuracy": float((d > 0).double().mean()),
            "grads": grads, "stale": stale, "n": len(d)}


def reward_cases() -> list:
    return [
        RewardCase("4 pairs of token batches (dicts with input_ids and attention_mask, as a Hugging Face model "
                   "takes them), a fresh optimizer", bag_pairs(1130, 4), kind="bag", seed=1130),
        RewardCase("6 pairs, 2 of them ties (the same answer twice: equal rewards, not a right pair), and the "
                   "parameters still hold the gradient of an earlier step", bag_pairs(1131, 6, ties=2), kind="bag",
                   seed=1131, stale=True),
        RewardCase("5 pairs of feature vectors (tensors, not dicts) whose rewards differ by 150, -150, 120, -100 "
                   "and 3: the loss stays finite; a stale gradient from an earlier step",
                   feature_pairs(1132, [150.0, -150.0, 120.0, -100.0, 3.0]), kind="features", seed=1132,
                   stale=True, lr=0.01),
        RewardCase("a single pair, stale gradient", bag_pairs(1133, 1), kind="bag", seed=1133, stale=True),
    ]


RM_LOG_SIGMOID = ("log(sigmoid(...)): for a reward difference of -100, sigmoid underflows to 0 in float32 and the "
                  "loss is inf (its gradient NaN); use F.logsigmoid, which stays finite")
RM_SWAPPED = ("swapped: the loss is -log σ(r_rejected - r_chosen), which trains the rejected answer up; it is "
              "-log σ(r_chosen - r_rejected)")
RM_NO_MINUS = "the loss is log σ(r_chosen - r_rejected) without the minus: minimising it trains the wrong way"
RM_SUMMED = ("summed the pairs' losses: the loss is their mean, so that the step's size does not grow with the "
             "number of pairs")
RM_MEAN_FIRST = ("averaged the rewards before the loss: the loss is the mean over pairs of each pair's "
                 "-log σ(r_chosen - r_rejected), not one σ of the mean difference")
RM_TIES = ("ties counted as right (>=): a pair is right only when the chosen reward is strictly larger; an equal "
           "reward has not learnt the preference")
RM_COUNT = "the accuracy is the number of right pairs, not their fraction: divide by the number of pairs"
RM_INVERTED_ACC = "the accuracy counts the pairs where the rejected reward is larger: count chosen > rejected"
RM_ACC_AFTER = ("the accuracy comes from rewards computed again after the step: report the pairs the step trained "
                "on, from the rewards of this step's forward pass")
RM_NO_ZERO_GRAD = ("optimizer.zero_grad forgotten: the gradient an earlier step left in .grad is added to this one's; "
                   "clear the gradients before the backward pass")
RM_ZERO_BEFORE_STEP = ("optimizer.zero_grad between loss.backward and optimizer.step: the step sees no gradient; "
                       "clear them before the backward pass")
RM_STEP_BEFORE_BACKWARD = ("optimizer.step before loss.backward: the step applies the old gradient (or none); the "
                           "order is zero_grad, the loss, backward, step")
RM_NO_STEP = "optimizer.step never called: the function takes one training step"
RM_LOSS_TENSOR = "returned the loss as a tensor: return a Python float (.item())"


def _same_grad(observed: torch.Tensor, expected) -> bool:
    return expected is not None and bool(torch.allclose(observed, expected, rtol=1e-4, atol=1e-6))


def _step_problem(observed, grad_after, facts) -> tuple | None:
    """What is wrong with the gradient the optimizer's step saw (text, mistake), or None when it is this step's."""
    fresh, stale = facts["grads"][None], facts["stale"]
    if isinstance(observed, TensorData):
        observed = torch.from_numpy(observed.array).double()
    if observed is not None and not torch.isfinite(observed).all():
        return ("the optimizer's step saw NaN or inf gradients.", RM_LOG_SIGMOID)
    if observed is None or not observed.abs().sum():
        after = torch.from_numpy(grad_after.array).double() if isinstance(grad_after, TensorData) else None
        if after is not None and _same_grad(after, fresh):
            return ("the optimizer's step saw no gradient; this step's gradient arrived after it.",
                    RM_STEP_BEFORE_BACKWARD)
        return ("the optimizer's step saw no gradient.", RM_ZERO_BEFORE_STEP)
    if _same_grad(observed, fresh):
        return None
    if _same_grad(observed, stale):
        return ("the optimizer's step saw the gradient an earlier step left, not this step's.", RM_STEP_BEFORE_BACKWARD)
    for mistake, grad in facts["grads"].items():
        if _same_grad(observed, None if stale is None else stale + grad):
            return ("the optimizer's step saw this step's gradient plus the one an earlier step left in .grad.",
                    RM_NO_ZERO_GRAD)
        if mistake is not None and _same_grad(observed, grad):
            return ("the optimizer's step saw the gradient of another loss than the mean of -log σ(r_chosen - "
                    "r_rejected).", mistake)
    return ("the optimizer's step saw a gradient other than this step's loss's.", None)


def _loss_candidates(facts) -> list:
    d = facts["difference"]
    with np.errstate(divide="ignore"):
        naive = float(-torch.log(torch.sigmoid(d.float())).double().mean())
    return [(naive, RM_LOG_SIGMOID), (float(-F.logsigmoid(-d).mean()), RM_SWAPPED),
            (float(F.logsigmoid(d).mean()), RM_NO_MINUS), (float(-F.logsigmoid(d).sum()), RM_SUMMED),
            (float(-F.logsigmoid(d.mean())), RM_MEAN_FIRST)]


def _near(a: float, b: float) -> bool:
    return (math.isinf(a) and a == b) or math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-5)


def _reward_value_problems(out: dict, facts: dict, observations: dict) -> list:
    problems = []
    loss = out["loss"]
    inside = loss.array.item() if isinstance(loss, TensorData) and loss.array.size == 1 else loss
    if not is_number(inside):
        problems.append((f"'loss' should be a Python float; got {describe(loss)}.", None))
    elif not _near(float(inside), facts["loss"]):
        mistake = next((m for value, m in _loss_candidates(facts) if _near(float(inside), value)), None)
        problems.append((f"'loss' is {inside:.6g}; expected {facts['loss']:.6g}, the mean over the pairs of "
                         f"-log σ(r_chosen - r_rejected).", mistake))
    elif not is_number(loss):
        problems.append((f"'loss' is right ({inside:.6g}) but {describe(loss)}.", RM_LOSS_TENSOR))
    accuracy = out["accuracy"]
    inside = accuracy.array.item() if isinstance(accuracy, TensorData) and accuracy.array.size == 1 else accuracy
    d, n = facts["difference"], facts["n"]
    if not is_number(inside):
        problems.append((f"'accuracy' should be a Python float; got {describe(accuracy)}.", None))
    elif not math.isclose(float(inside), facts["accuracy"], abs_tol=1e-6):
        candidates = [(float((d >= 0).double().mean()), RM_TIES), (float((d > 0).sum()), RM_COUNT),
                      (float((d < 0).double().mean()), RM_INVERTED_ACC)]
        mistake = RM_ACC_AFTER if observations.get("calls", 2) > 2 else next(
            (m for value, m in candidates if value != facts["accuracy"] and math.isclose(float(inside), value,
                                                                                        abs_tol=1e-6)), None)
        problems.append((f"'accuracy' is {inside:.6g}; {int((d > 0).sum())} of the {n} pairs have a chosen reward "
                         f"larger than the rejected one: {facts['accuracy']:.6g}.", mistake))
    elif not is_number(accuracy):
        problems.append((f"'accuracy' is right but {describe(accuracy)}.", "returned the accuracy as a tensor: "
                                                                          "return a Python float"))
    return problems


def judge_reward_step(case: RewardCase, out, observations: dict):
    facts = reward_facts(case)
    problems = []
    steps = observations["steps"]
    if not steps:
        problems.append(("optimizer.step was never called.", RM_NO_STEP))
    elif len(steps) > 1:
        problems.append((f"optimizer.step was called {len(steps)} times; one step per call.", None))
    else:
        problem = _step_problem(steps[0], observations.get("grad_after"), facts)
        if problem:
            problems.append(problem)
    if not isinstance(out, dict):
        problems.append((f"return a dict with the keys 'loss' and 'accuracy'; got {describe(out)}.", None))
    elif [k for k in ("loss", "accuracy") if k not in out]:
        missing = [k for k in ("loss", "accuracy") if k not in out]
        problems.append((f"the dict has no {', '.join(map(repr, missing))}: return 'loss' and 'accuracy'.", None))
    else:
        problems += _reward_value_problems(out, facts, observations)
    if not problems:
        return None
    return Problem("\n".join(text for text, _ in problems), next((m for _, m in problems if m), None))


def explain_reward_error(case: Case, outcome) -> str | None:
    message = outcome.message
    if "does not require grad" in message:
        return ("the loss has no graph to backpropagate through: compute the rewards with gradients on (no "
                "torch.no_grad, no .detach() or .item() before the loss)")
    if "got an unexpected keyword argument" in message or "argument after ** must be a mapping" in message:
        return "pass each batch to reward_fn as it is: reward_fn(chosen), reward_fn(rejected)"
    if "not subscriptable" in message or "has no attribute 'shape'" in message:
        return "a batch is whatever reward_fn takes (a dict of tensors, or a tensor): hand it over unopened"
    if "backward through the graph a second time" in message:
        return "call backward once, on the one loss of both the chosen and the rejected rewards"
    if "modified by an inplace operation" in message:
        return RM_STEP_BEFORE_BACKWARD
    return None


register(Exercise(
    name="reward_model_step", chapter="11", signature="(reward_fn, optimizer, chosen, rejected)", points=2,
    make_cases=reward_cases, judge=judge_reward_step, explain_error=explain_reward_error,
    forbidden=(TRL_REWARD,),
    timeout_s=60,  # the first optimizer a process builds imports torch._dynamo (several seconds)
))


# ================================================================ dpo_loss

def sequence_logps(logits, labels, *, shift="right", reduce="sum", ignored="mask", normalise="vocab"):
    """(B,) float64 log-probability of each row's labelled tokens, with switches that reproduce the common
    mistakes (defaults: the definition). ``shift``: "right" (logits[:, :-1] score labels[:, 1:]), "none", "left";
    ``reduce``: "sum" or "mean" over the labelled positions; ``ignored``: "mask" or "zero" (-100 read as token 0
    and counted); ``normalise``: "vocab" (log_softmax over the vocabulary), "time" (over the positions) or "raw"
    (the logits themselves)."""
    logits = logits.double()
    if shift == "right":
        logits, labels = logits[:, :-1], labels[:, 1:]
    elif shift == "left":
        logits, labels = logits[:, 1:], labels[:, :-1]
    logprobs = {"vocab": lambda x: torch.log_softmax(x, dim=-1), "time": lambda x: torch.log_softmax(x, dim=1),
                "raw": lambda x: x}[normalise](logits)
    keep = (labels != IGNORE) if ignored == "mask" else torch.ones_like(labels, dtype=torch.bool)
    picked = logprobs.gather(-1, labels.clamp(min=0)[..., None])[..., 0] * keep
    total = picked.sum(-1)
    return total / keep.sum(-1).clamp(min=1) if reduce == "mean" else total


def dpo_variant(policy_chosen_logits, policy_rejected_logits, ref_chosen_logits, ref_rejected_logits,
                chosen_labels, rejected_labels, beta, *, models="right", pairs="right", reward_beta=True,
                loss_beta=1, inside="right", logsigmoid="stable", batch="mean", **per_sequence):
    """(loss, chosen_rewards, rejected_rewards) in float64, with switches that reproduce the common mistakes
    (defaults: Rafailov et al.'s objective). The rewards are detached."""
    def logps(logits, labels):
        return sequence_logps(logits, labels, **per_sequence)

    pc, pr = logps(policy_chosen_logits, chosen_labels), logps(policy_rejected_logits, rejected_labels)
    rc, rr = logps(ref_chosen_logits, chosen_labels), logps(ref_rejected_logits, rejected_labels)
    if models == "swapped":
        pc, rc, pr, rr = rc, pc, rr, pr
    if pairs == "swapped":
        pc, pr, rc, rr = pr, pc, rr, rc
    scale = beta if reward_beta else 1.0
    chosen_rewards, rejected_rewards = (scale * (pc - rc)).detach(), (scale * (pr - rr)).detach()
    z = beta ** loss_beta * ((pc - rc) - (pr - rr))
    if inside == "flipped":
        z = -z
    if logsigmoid == "stable":
        losses = -F.logsigmoid(z)
    elif logsigmoid == "naive":  # in float32, as a learner's tensors are
        losses = -torch.log(torch.sigmoid(z.float())).double()
    else:  # "no minus"
        losses = F.logsigmoid(z)
    loss = {"mean": losses.mean(), "sum": losses.sum(), "none": losses}[batch]
    return loss, chosen_rewards, rejected_rewards


def _dpo_mistake(description, **switches):
    return Mistake(description, lambda *args, **kwargs: dpo_variant(*args, **kwargs, **switches))


DPO_NO_SHIFT = ("no shift: the logits at position t predict the token at t + 1, so logits[:, :-1] score "
                "labels[:, 1:]; scoring labels[:, t] with logits[:, t] rates each token by a prediction made after "
                "seeing it")
DPO_SHIFT_LEFT = ("shifted the wrong way: logits[:, :-1] (positions 0 .. T-2) score labels[:, 1:] (the tokens 1 .. "
                  "T-1 that follow them), not logits[:, 1:] against labels[:, :-1]")
DPO_MEAN_TOKENS = ("averaged the log-probabilities over each answer's tokens: a sequence's log-probability is their "
                   "sum (DPO compares whole answers; a mean per token is another objective)")
DPO_IGNORED_COUNTED = ("positions labelled -100 were counted (read as token 0): they are the prompt and the padding, "
                       "and add nothing to a sequence's log-probability")
DPO_RAW_LOGITS = ("gathered the raw logits: turn them into log-probabilities first (log_softmax over the "
                  "vocabulary), or every logit's offset leaks into the rewards")
DPO_TIME_DIM = "log_softmax over the positions: normalise over the vocabulary, the last dimension"
DPO_REWARD_NO_BETA = "beta missing from the rewards: the implicit reward is beta x (log π_policy - log π_reference)"
DPO_MODELS_SWAPPED = ("policy and reference swapped: the reward is beta x (policy - reference), so the loss trains the "
                      "policy's log-ratio up for the chosen answer")
DPO_PAIRS_SWAPPED = ("chosen and rejected swapped: the margin is the chosen answer's log-ratio minus the rejected "
                     "answer's, and the loss pushes the chosen one up")
DPO_FLIPPED = ("the margin's sign is flipped inside the log-sigmoid: the loss is -log σ(beta x margin), with margin "
               "= (chosen log-ratio) - (rejected log-ratio)")
DPO_NO_MINUS = "the loss is log σ(...) without the minus: minimising it trains the rejected answer up"
DPO_LOG_SIGMOID = ("log(sigmoid(...)): at a margin of beta x (log-ratios) = -300, sigmoid underflows to 0 in float32 "
                   "and the loss is inf; use F.logsigmoid, which stays finite")
DPO_SUMMED = "summed the pairs' losses: the loss is their mean over the batch"
DPO_PER_PAIR = "returned one loss per pair: the loss is their mean, one number (a 0-d tensor)"
DPO_LOSS_NO_BETA = "beta missing from the loss: it is -log σ(beta x margin)"
DPO_BETA_TWICE = ("beta applied twice: the rewards already hold one beta, so the loss is -log σ(chosen reward - "
                  "rejected reward), not of beta x that difference")
DPO_NOT_DETACHED = ("the rewards still carry the policy's graph: they are for reading, not for training (TRL's "
                    "DPOTrainer returns them detached); return them with .detach()")
DPO_NO_GRAD = ("the loss has no gradient with respect to the policy's logits (detached, or computed under "
               "torch.no_grad, or from .item() values): DPO trains the policy through this loss")
DPO_LOSS_FLOAT = "returned the loss as a Python number: return the tensor, which training backpropagates"

REWARD_MISTAKES = [
    _dpo_mistake(DPO_NO_SHIFT, shift="none"), _dpo_mistake(DPO_SHIFT_LEFT, shift="left"),
    _dpo_mistake(DPO_MEAN_TOKENS, reduce="mean"), _dpo_mistake(DPO_IGNORED_COUNTED, ignored="zero"),
    _dpo_mistake(DPO_RAW_LOGITS, normalise="raw"), _dpo_mistake(DPO_TIME_DIM, normalise="time"),
    _dpo_mistake(DPO_REWARD_NO_BETA, reward_beta=False), _dpo_mistake(DPO_MODELS_SWAPPED, models="swapped"),
    _dpo_mistake(DPO_PAIRS_SWAPPED, pairs="swapped"),
]
LOSS_MISTAKES = [
    _dpo_mistake(DPO_FLIPPED, inside="flipped"), _dpo_mistake(DPO_NO_MINUS, logsigmoid="no minus"),
    _dpo_mistake(DPO_LOG_SIGMOID, logsigmoid="naive"), _dpo_mistake(DPO_SUMMED, batch="sum"),
    _dpo_mistake(DPO_LOSS_NO_BETA, loss_beta=0), _dpo_mistake(DPO_BETA_TWICE, loss_beta=2),
]


def dpo_batch(seed: int, prompts, answers, length: int, vocab: int = 11, scale: float = 2.0) -> tuple:
    """(logits (B, length, vocab), labels (B, length)): each row a prompt of ``prompts[i]`` positions and an answer
    of ``answers[i]`` tokens, the rest right padding; prompt and padding labelled -100."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(len(prompts), length, vocab, generator=g) * scale
    labels = torch.full((len(prompts), length), IGNORE, dtype=torch.long)
    for i, (p, a) in enumerate(zip(prompts, answers)):
        labels[i, p:p + a] = torch.randint(0, vocab, (a,), generator=g)
    return logits, labels


def dpo_args(seed: int, prompts, chosen, rejected, lengths, beta, vocab=11, scale=2.0, drift=0.5) -> tuple:
    """The seven arguments of dpo_loss: random reference logits, the policy's a drift away from them."""
    (rc, cl), (rr, rl) = (dpo_batch(seed, prompts, chosen, lengths[0], vocab, scale),
                          dpo_batch(seed + 1, prompts, rejected, lengths[1], vocab, scale))
    g = torch.Generator().manual_seed(seed + 2)
    pc = rc + drift * torch.randn(rc.shape, generator=g)
    pr = rr + drift * torch.randn(rr.shape, generator=g)
    return pc, pr, rc, rr, cl, rl, beta


def large_margin_args(seed: int) -> tuple:
    """Pairs whose beta x margin is far below 0 for one pair (about -300) and far above for another: the policy
    moved hundreds of nats away from the reference on the labelled tokens."""
    pc, pr, rc, rr, cl, rl, beta = dpo_args(seed, [1, 2], [4, 3], [3, 4], (7, 7), 1.0, drift=0.0)
    for logits, labels, push in ((pc, cl, (-25.0, 25.0)), (pr, rl, (25.0, -25.0))):
        for row in range(len(labels)):
            for t in range(1, labels.shape[1]):
                if labels[row, t] != IGNORE:
                    logits[row, t - 1, labels[row, t]] += push[row] * 4
    return pc, pr, rc, rr, cl, rl, beta


@dataclass
class DPOCase(Case):
    """A dpo_loss call with the policy's logits requiring gradients (leaves); the observations say which outputs
    carry a graph and hold the loss's gradient with respect to the policy's chosen and rejected logits."""

    atol: float = 1e-4
    rtol: float = 1e-4

    def run(self, fn):
        args, kwargs = self.inputs()
        for logits in args[:2]:
            logits.requires_grad_(True)
        value = fn(*args, **kwargs)
        observations = {}
        changed = [i for i, (after, before) in enumerate(zip(args, self.args)) if _changed(after, before)]
        if changed:
            observations["modified_inputs"] = changed
        if isinstance(value, (tuple, list)) and len(value) == 3 and all(isinstance(v, torch.Tensor) for v in value):
            loss, chosen_rewards, rejected_rewards = value
            observations["loss_requires_grad"] = bool(loss.requires_grad)
            observations["rewards_require_grad"] = bool(chosen_rewards.requires_grad or rejected_rewards.requires_grad)
            if loss.requires_grad and loss.numel() == 1:
                grads = torch.autograd.grad(loss.sum(), args[:2], allow_unused=True)
                observations["grads"] = [None if g is None else g.detach() for g in grads]
        return value, observations


def dpo_cases() -> list:
    return [
        DPOCase("2 pairs, chosen and rejected of 6 positions, vocabulary 10, beta=0.1; prompts of 2 and 3 tokens and "
                "the padding labelled -100", dpo_args(1140, [2, 3], [4, 2], [3, 3], (6, 6), 0.1, vocab=10)),
        DPOCase("3 pairs, chosen padded to 8 positions and rejected to 5 (each side has its own length), "
                "vocabulary 12, beta=0.5", dpo_args(1141, [1, 2, 1], [6, 3, 5], [3, 2, 4], (8, 5), 0.5, vocab=12)),
        DPOCase("the policy equal to the reference (the first step of training): rewards 0 and loss log 2, beta=0.1",
                (lambda a: (a[2], a[3], a[2].clone(), a[3].clone(), *a[4:]))(
                    dpo_args(1142, [2, 1], [3, 4], [4, 2], (6, 7), 0.1))),
        DPOCase("large margins, beta=1: beta x margin is about -400 for one pair and +400 for the other; the loss "
                "stays finite", large_margin_args(1143), atol=1e-2, rtol=1e-4),
        DPOCase("a row without a prompt (labels[:, 0] is a real token, which no position predicts), beta=0.2",
                dpo_args(1144, [0, 2], [5, 3], [4, 4], (6, 6), 0.2)),
    ]


def _dpo_expected(case: Case) -> tuple:
    """(loss, chosen_rewards, rejected_rewards, grads of the loss w.r.t. the policy's logits), float64."""
    args = [a.detach().double().requires_grad_(True) if i < 2 else a for i, a in enumerate(case.args)]
    loss, chosen, rejected = dpo_variant(*args)
    grads = torch.autograd.grad(loss, args[:2])
    return loss.detach(), chosen, rejected, grads


def _matches(got, expected: torch.Tensor, case: Case) -> bool:
    return close(got, TensorData(expected.detach().numpy(), "torch.float64"), case.atol, case.rtol)


def _named_variant(case: Case, mistakes: list, loss=None, chosen=None, rejected=None) -> str | None:
    """The first of ``mistakes`` whose outputs equal the learner's given ones (None: not compared)."""
    for mistake in mistakes:
        try:
            candidate = mistake.make(*case.args)
        except Exception:  # noqa: BLE001  (that mistake does not apply here)
            continue
        if all(got is None or _matches(got, value, case) for got, value in zip((loss, chosen, rejected), candidate)):
            return mistake.description
    return None


def _named_by_gradient(case: Case, grads: list) -> str | None:
    """The first mistake whose loss has the learner's gradient with respect to the policy's logits."""
    for mistake in LOSS_MISTAKES + REWARD_MISTAKES:
        args = [a.detach().double().requires_grad_(True) if i < 2 else a for i, a in enumerate(case.args)]
        try:
            loss = mistake.make(*args)[0]
            if loss.numel() != 1 or not loss.requires_grad:
                continue
            candidate = torch.autograd.grad(loss, args[:2], allow_unused=True)
        except Exception:  # noqa: BLE001  (that mistake does not apply here)
            continue
        if all(g is not None and c is not None and close(g, TensorData(c.numpy(), "torch.float64"), 1e-5, 1e-3)
               for g, c in zip(grads, candidate)):
            return mistake.description
    return None


def _first_gap(got: TensorData, expected: torch.Tensor) -> str:
    diff = np.abs(got.array.astype(np.float64) - expected.numpy())
    i = int(np.nanargmax(np.where(np.isnan(diff), np.inf, diff)))
    return f"at pair {i}: yours {float(got.array[i]):.6g}, expected {float(expected[i]):.6g}"


def judge_dpo(case: Case, out, observations: dict):
    if not isinstance(out, (tuple, list)) or len(out) != 3:
        return f"return the triple (loss, chosen_rewards, rejected_rewards); got {describe(out)}"
    loss, chosen, rejected = out
    batch = case.args[4].shape[0]
    expected_loss, expected_chosen, expected_rejected, expected_grads = _dpo_expected(case)
    for what, value in (("chosen_rewards", chosen), ("rejected_rewards", rejected)):
        if not isinstance(value, TensorData):
            return f"{what} should be a tensor of shape ({batch},), one reward per pair; got {describe(value)}"
        if value.shape != (batch,):
            return f"{what} has shape {value.shape}; expected ({batch},), one reward per pair"
    problems = []
    rewards_right = _matches(chosen, expected_chosen, case) and _matches(rejected, expected_rejected, case)
    if not rewards_right:
        wrong = [(w, v, e) for w, v, e in (("chosen_rewards", chosen, expected_chosen),
                                            ("rejected_rewards", rejected, expected_rejected))
                 if not _matches(v, e, case)]
        what, value, expected = wrong[0]
        problems.append((f"{what} are wrong {_first_gap(value, expected)}.",
                         _named_variant(case, REWARD_MISTAKES, chosen=chosen, rejected=rejected)))
    if is_number(loss):
        if _matches(TensorData(np.array(float(loss)), "float"), expected_loss, case):
            problems.append((f"the loss is right ({float(loss):.6g}) but a Python number.", DPO_LOSS_FLOAT))
        else:
            problems.append((f"the loss is {float(loss):.6g}; expected {float(expected_loss):.6g}.", None))
    elif not isinstance(loss, TensorData):
        problems.append((f"the loss should be a 0-d tensor; got {describe(loss)}.", None))
    elif loss.shape != ():
        per_pair = dpo_variant(*case.args, batch="none")[0]
        problems.append((f"the loss has shape {loss.shape}; expected a 0-d tensor (one number for the batch).",
                         DPO_PER_PAIR if loss.shape == (batch,) and _matches(loss, per_pair, case) else None))
    elif not _matches(loss, expected_loss, case):
        mistake = (_named_variant(case, LOSS_MISTAKES + REWARD_MISTAKES, loss=loss, chosen=chosen, rejected=rejected)
                   or _named_variant(case, LOSS_MISTAKES + REWARD_MISTAKES, loss=loss))
        problems.append((f"the loss is {float(loss.array):.6g}; expected {float(expected_loss):.6g}.", mistake))
    elif not observations.get("loss_requires_grad"):
        problems.append(("the loss carries no gradient back to the policy's logits.", DPO_NO_GRAD))
    else:
        grads = observations.get("grads") or [None, None]
        for what, got, expected in zip(("chosen", "rejected"), grads, expected_grads):
            if got is None:
                problems.append((f"the loss does not depend on the policy's {what} logits.", DPO_NO_GRAD))
                break
            if not close(got, TensorData(expected.numpy(), "torch.float64"), 1e-5, 1e-3):
                problems.append((f"the loss's gradient with respect to the policy's {what} logits is wrong (the loss "
                                 f"value is right here, as it can be at a margin of 0).",
                                 _named_by_gradient(case, grads)))
                break
    if rewards_right and observations.get("rewards_require_grad"):
        problems.append(("chosen_rewards or rejected_rewards has requires_grad=True.", DPO_NOT_DETACHED))
    if not problems:
        return None
    return Problem("\n".join(text for text, _ in problems), next((m for _, m in problems if m), None))


def explain_dpo_error(case: Case, outcome) -> str | None:
    message = outcome.message
    if "out of bounds" in message or "index -100" in message or "Index" in message and "-100" in message:
        return ("the labels hold -100 where a position is not scored, and -100 is no index into the vocabulary: "
                "gather with a copy in which those positions hold a valid id (any), then leave them out of the sum")
    if "must match the size" in message or "size of tensor a" in message:
        return ("each side has its own length: compute the chosen answers' log-probabilities from the chosen logits "
                "and labels, the rejected ones' from theirs, before you combine them")
    if "a leaf Variable that requires grad" in message:
        return "do not change the policy's logits in place: compute new tensors from them"
    if "expected scalar type Long" in message or "gather(): Expected dtype int64" in message:
        return "gather takes int64 indices: use the labels as they come (torch.long), not as floats"
    return None


register(Exercise(
    name="dpo_loss", chapter="11",
    signature="(policy_chosen_logits, policy_rejected_logits, ref_chosen_logits, ref_rejected_logits, "
              "chosen_labels, rejected_labels, beta)", points=4,
    make_cases=dpo_cases, judge=judge_dpo, explain_error=explain_dpo_error,
    forbidden=(TRL_DPO,),
))
