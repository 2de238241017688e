"""Tests for the chapter-05 checks (grader/checks/gpt_and_prompting.py): sequence_logprob, greedy_decode,
beam_search, top_k_filter, top_p_filter, sample_next_token, classify_by_likelihood.

What is tested (COURSE.md, "One set of checks, three consumers"):
- every check passes the reference solution and other correct ways of writing the answer, and fails a
  stub with "not implemented yet";
- every check fails common wrong answers, written here the way a learner would write them (not taken
  from the grader's list of mistakes), and its feedback names the mistake;
- the checks' own references agree with Hugging Face (``model.generate`` greedy and beam search on a
  tiny Llama, ``TopKLogitsWarper``, ``TopPLogitsWarper``), and the hand-made table makes beam search
  beat greedy;
- cases pickle and run in a child process; the hidden checks pass the reference and fail a wrong
  answer without showing their cases.
"""

import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from chapter_contract import A_LIST, DEFAULT_GARBAGE, ChapterContract, assert_fails_naming, reference_fn

import grader
from grader import check
from grader.forbidden import CONTINUATION_SCORING, GENERATION_SPEED, LABEL_SCORING, LM_PERPLEXITY, not_enforced
from llmcourse.evaluation import choice_logprobs, continuation_logprobs, read
from llmcourse.open_models import causal_lm_perplexity, generation_speed
from grader.checks import gpt_and_prompting as decoding
from grader.checks.gpt_and_prompting import TableLM, ToyTokenizer, beam_beats_greedy_lm

ROOT = Path(__file__).resolve().parents[2]
ASSIGNMENT = "05-gpt-and-prompting"
SOLUTION_DIR = ROOT / "solutions" / ASSIGNMENT

EXERCISES = ["sequence_logprob", "greedy_decode", "beam_search", "top_k_filter", "top_p_filter", "sample_next_token",
             "classify_by_likelihood"]


def passes(name, fn):
    result = check(name, fn)
    assert result.passed, result.feedback


# =============================================================== sequence_logprob

def _check_length(input_ids, prompt_length):
    if prompt_length < 1 or prompt_length > input_ids.shape[1]:
        raise ValueError("prompt_length out of range")


def seq_loop(model, input_ids, prompt_length):
    _check_length(input_ids, prompt_length)
    logits = model(input_ids).logits[0]
    total = 0.0
    for t in range(prompt_length, input_ids.shape[1]):
        total += torch.log_softmax(logits[t - 1], dim=-1)[input_ids[0, t]].item()
    return total


def seq_shifted_targets(model, input_ids, prompt_length):
    T = input_ids.shape[1]
    if not 0 < prompt_length <= T:
        raise ValueError(f"need 1 <= prompt_length <= {T}")
    logp = model(input_ids).logits.log_softmax(-1)[:, :-1]  # (1, T-1, V) predicts tokens 1..T-1
    picked = logp.gather(2, input_ids[:, 1:, None]).squeeze(-1)  # (1, T-1)
    return float(picked[0, prompt_length - 1:].sum())


def seq_cross_entropy(model, input_ids, prompt_length):
    T = input_ids.shape[1]
    if not 1 <= prompt_length <= T:
        raise ValueError("bad prompt_length")
    if prompt_length == T:
        return 0.0
    logits = model(input_ids).logits[0, prompt_length - 1:-1]
    return -torch.nn.functional.cross_entropy(logits, input_ids[0, prompt_length:], reduction="sum").item()


def seq_no_shift(model, input_ids, prompt_length):
    _check_length(input_ids, prompt_length)
    logp = torch.log_softmax(model(input_ids).logits[0], dim=-1)
    return sum(logp[t, input_ids[0, t]].item() for t in range(prompt_length, input_ids.shape[1]))


def seq_counts_the_prompt(model, input_ids, prompt_length):
    _check_length(input_ids, prompt_length)
    logp = torch.log_softmax(model(input_ids).logits[0], dim=-1)
    return sum(logp[t - 1, input_ids[0, t]].item() for t in range(1, input_ids.shape[1]))


def seq_starts_one_late(model, input_ids, prompt_length):
    _check_length(input_ids, prompt_length)
    logp = torch.log_softmax(model(input_ids).logits[0], dim=-1)
    return sum(logp[t - 1, input_ids[0, t]].item() for t in range(prompt_length + 1, input_ids.shape[1]))


def seq_sums_logits(model, input_ids, prompt_length):
    _check_length(input_ids, prompt_length)
    logits = model(input_ids).logits[0]
    return sum(logits[t - 1, input_ids[0, t]].item() for t in range(prompt_length, input_ids.shape[1]))


def seq_mean(model, input_ids, prompt_length):
    _check_length(input_ids, prompt_length)
    logp = torch.log_softmax(model(input_ids).logits[0], dim=-1)
    terms = [logp[t - 1, input_ids[0, t]].item() for t in range(prompt_length, input_ids.shape[1])]
    return sum(terms) / len(terms) if terms else 0.0


def seq_probability(model, input_ids, prompt_length):
    _check_length(input_ids, prompt_length)
    probs = torch.softmax(model(input_ids).logits[0], dim=-1)
    p = 1.0
    for t in range(prompt_length, input_ids.shape[1]):
        p *= probs[t - 1, input_ids[0, t]].item()
    return p


def seq_log_of_softmax(model, input_ids, prompt_length):
    _check_length(input_ids, prompt_length)
    logp = torch.softmax(model(input_ids).logits[0], dim=-1).log()
    return sum(logp[t - 1, input_ids[0, t]].item() for t in range(prompt_length, input_ids.shape[1]))


def seq_no_check(model, input_ids, prompt_length):
    logp = torch.log_softmax(model(input_ids).logits[0], dim=-1)
    return sum(logp[t - 1, input_ids[0, t]].item() for t in range(prompt_length, input_ids.shape[1]))


def seq_rejects_empty_continuation(model, input_ids, prompt_length):
    if not 1 <= prompt_length < input_ids.shape[1]:
        raise ValueError("nothing to score")
    return seq_loop(model, input_ids, prompt_length)


@pytest.mark.parametrize("fn", [seq_loop, seq_shifted_targets, seq_cross_entropy], ids=lambda f: f.__name__)
def test_sequence_logprob_accepts_other_correct_answers(fn):
    passes("sequence_logprob", fn)


def test_sequence_logprob_accepts_a_zero_dimensional_tensor():
    passes("sequence_logprob", lambda model, input_ids, prompt_length: torch.tensor(
        seq_loop(model, input_ids, prompt_length)))


@pytest.mark.parametrize("fn, phrase", [
    (seq_no_shift, "off by one position"),
    (seq_counts_the_prompt, "the prompt tokens counted in the score"),
    (seq_starts_one_late, "started one token late"),
    (seq_sums_logits, "summed the logits, not the log-probabilities"),
    (seq_mean, "averaged the log-probabilities"),
    (seq_probability, "returned the probability of the continuation"),
    (seq_no_check, "no check of prompt_length"),
    (seq_log_of_softmax, "took the log of the softmax"),
    (seq_rejects_empty_continuation, "prompt_length == T is allowed"),
], ids=lambda x: getattr(x, "__name__", ""))
def test_sequence_logprob_names_the_mistake(fn, phrase):
    assert_fails_naming(check("sequence_logprob", fn), phrase)


def seq_by_perplexity(model, input_ids, prompt_length):
    """Right answers from lesson 10's perplexity helper: log P(x_1..x_{n-1} | x_0) = -(n - 1) log(perplexity)."""
    _check_length(input_ids, prompt_length)

    def after_first_token(ids):
        n = ids.shape[1]
        return -(n - 1) * math.log(causal_lm_perplexity(model, ids[0], window=n, progress=False)) if n > 1 else 0.0

    return after_first_token(input_ids) - after_first_token(input_ids[:, :prompt_length])


def seq_by_harness(model, input_ids, prompt_length):
    _check_length(input_ids, prompt_length)
    ids = input_ids[0].tolist()
    if prompt_length == len(ids):
        return 0.0
    return continuation_logprobs(model, read(model, ids[:prompt_length]), [ids[prompt_length:]])[0]


def test_sequence_logprob_refuses_the_course_helpers_that_sum_the_same_log_probabilities():
    with not_enforced():  # allowed, the perplexity helper would pass every case
        assert check("sequence_logprob", seq_by_perplexity).passed
    for fn, helper in [(seq_by_perplexity, LM_PERPLEXITY), (seq_by_harness, CONTINUATION_SCORING)]:
        result = check("sequence_logprob", fn)
        assert not result.passed
        assert list(result.mistakes) == [helper.mistake], fn.__name__


def test_greedy_decode_refuses_lesson_10s_timer():
    def greedy_decode(model, input_ids, max_new_tokens, eos_token_id=None):
        if max_new_tokens == 0:
            return input_ids
        ids = generation_speed(model, input_ids, max_new_tokens)["ids"]  # greedy, with the cache
        new = ids[0, input_ids.shape[1]:].tolist()
        if eos_token_id in new:
            ids = ids[:, :input_ids.shape[1] + new.index(eos_token_id) + 1]
        return ids

    result = check("greedy_decode", greedy_decode)  # the timer decodes greedily (by `model.generate`)
    assert list(result.mistakes) == [GENERATION_SPEED.mistake], result.feedback


def test_a_tensor_returned_for_the_model_output_gets_a_hint():
    def sequence_logprob(model, input_ids, prompt_length):
        _check_length(input_ids, prompt_length)
        logp = torch.log_softmax(model(input_ids), dim=-1)[0]  # the output object is not a tensor
        return sum(logp[t - 1, input_ids[0, t]].item() for t in range(prompt_length, input_ids.shape[1]))

    feedback = check("sequence_logprob", sequence_logprob).feedback
    assert "`.logits`" in feedback, feedback


# =============================================================== greedy_decode

def greedy_list(model, input_ids, max_new_tokens, eos_token_id=None):
    tokens = input_ids[0].tolist()
    for _ in range(max_new_tokens):
        logits = model(torch.tensor([tokens])).logits
        tokens.append(int(torch.argmax(logits[0, -1])))
        if tokens[-1] == eos_token_id:
            break
    return torch.tensor([tokens])


def greedy_with_cache(model, input_ids, max_new_tokens, eos_token_id=None):
    ids, step_input, cache = input_ids, input_ids, None
    for _ in range(max_new_tokens):
        out = model(step_input, cache=cache, use_cache=True)
        cache = out.cache
        step_input = out.logits[:, -1].argmax(-1, keepdim=True)  # (1, 1)
        ids = torch.cat((ids, step_input), dim=-1)
        if eos_token_id is not None and (step_input == eos_token_id).all():
            break
    return ids


def greedy_while_loop(model, input_ids, max_new_tokens, eos_token_id=None):
    out = input_ids.clone()
    n = 0
    while n < max_new_tokens:
        nxt = model(out).logits[0, -1].argmax()
        out = torch.cat([out, nxt[None, None]], 1)
        n += 1
        if nxt.item() == eos_token_id:
            return out
    return out


def greedy_ignores_eos(model, input_ids, max_new_tokens, eos_token_id=None):
    ids = input_ids
    for _ in range(max_new_tokens):
        ids = torch.cat([ids, model(ids).logits[0, -1].argmax().view(1, 1)], dim=1)
    return ids


def greedy_stops_before_eos(model, input_ids, max_new_tokens, eos_token_id=None):
    ids = input_ids
    for _ in range(max_new_tokens):
        nxt = model(ids).logits[0, -1].argmax().view(1, 1)
        if nxt.item() == eos_token_id:
            break
        ids = torch.cat([ids, nxt], dim=1)
    return ids


def greedy_eos_anywhere(model, input_ids, max_new_tokens, eos_token_id=None):
    ids = input_ids
    for _ in range(max_new_tokens):
        ids = torch.cat([ids, model(ids).logits[0, -1].argmax().view(1, 1)], dim=1)
        if eos_token_id is not None and eos_token_id in ids:
            break
    return ids


def greedy_new_tokens_only(model, input_ids, max_new_tokens, eos_token_id=None):
    ids, new = input_ids, []
    for _ in range(max_new_tokens):
        nxt = model(ids).logits[0, -1].argmax().view(1, 1)
        ids = torch.cat([ids, nxt], dim=1)
        new.append(nxt.item())
        if nxt.item() == eos_token_id:
            break
    return torch.tensor([new], dtype=torch.long)


def greedy_last_token_only(model, input_ids, max_new_tokens, eos_token_id=None):
    ids = input_ids
    for _ in range(max_new_tokens):
        nxt = model(ids[:, -1:]).logits[0, -1].argmax().view(1, 1)
        ids = torch.cat([ids, nxt], dim=1)
        if nxt.item() == eos_token_id:
            break
    return ids


def greedy_range_off_by_one(model, input_ids, max_new_tokens, eos_token_id=None):
    ids = input_ids
    for _ in range(max_new_tokens + 1):
        nxt = model(ids).logits[0, -1].argmax().view(1, 1)
        ids = torch.cat([ids, nxt], dim=1)
        if nxt.item() == eos_token_id:
            break
    return ids


def greedy_1d(model, input_ids, max_new_tokens, eos_token_id=None):
    return greedy_list(model, input_ids, max_new_tokens, eos_token_id)[0]


@pytest.mark.parametrize("fn", [greedy_list, greedy_with_cache, greedy_while_loop], ids=lambda f: f.__name__)
def test_greedy_decode_accepts_other_correct_answers(fn):
    passes("greedy_decode", fn)


@pytest.mark.parametrize("fn, phrase", [
    (greedy_ignores_eos, "did not stop at EOS"),
    (greedy_stops_before_eos, "stopped before appending EOS"),
    (greedy_eos_anywhere, "stopped because the prompt contains eos_token_id"),
    (greedy_new_tokens_only, "returned only the new tokens"),
    (greedy_last_token_only, "called the model on the last token only"),
    (greedy_range_off_by_one, "one token too many"),
    (greedy_1d, "returned a 1-D tensor"),
], ids=lambda x: getattr(x, "__name__", ""))
def test_greedy_decode_names_the_mistake(fn, phrase):
    assert_fails_naming(check("greedy_decode", fn), phrase)


# =============================================================== beam_search

def beam_lists(model, input_ids, num_beams, max_new_tokens):
    """Hypotheses as (score, token list) pairs, the way a first implementation often looks."""
    beams = [(0.0, input_ids[0].tolist())]
    for _ in range(max_new_tokens):
        candidates = []
        for score, tokens in beams:
            logp = torch.log_softmax(model(torch.tensor([tokens])).logits[0, -1], dim=-1)
            for token, lp in enumerate(logp.tolist()):
                candidates.append((score + lp, tokens + [token]))
        beams = sorted(candidates, key=lambda c: c[0], reverse=True)[:num_beams]
    return torch.tensor([max(beams, key=lambda c: c[0])[1]])


def beam_per_beam_topk_then_prune(model, input_ids, num_beams, max_new_tokens):
    """Each beam proposes its own num_beams best tokens, then the pool is pruned (same result)."""
    seqs, scores = input_ids, torch.zeros(1)
    for _ in range(max_new_tokens):
        logp = model(seqs).logits[:, -1].log_softmax(-1)
        top_lp, top_tok = logp.topk(min(num_beams, logp.shape[-1]), dim=-1)  # (n, k)
        pool = (scores[:, None] + top_lp).flatten()
        keep = pool.argsort(descending=True)[:num_beams]
        k = top_tok.shape[1]
        seqs = torch.cat([seqs[keep // k], top_tok.flatten()[keep][:, None]], dim=1)
        scores = pool[keep]
    return seqs[scores.argmax()].unsqueeze(0)


def beam_probabilities_product(model, input_ids, num_beams, max_new_tokens):
    """Multiplies probabilities in float64 (the same ranking as summed log-probabilities here)."""
    beams = [(1.0, input_ids[0].tolist())]
    for _ in range(max_new_tokens):
        batch = torch.tensor([t for _, t in beams])
        probs = torch.softmax(model(batch).logits[:, -1].double(), dim=-1)
        candidates = [(p * probs[i, tok].item(), t + [tok]) for i, (p, t) in enumerate(beams)
                      for tok in range(probs.shape[-1])]
        beams = sorted(candidates, key=lambda c: -c[0])[:num_beams]
    return torch.tensor([beams[0][1]])


def beam_keeps_only_the_best(model, input_ids, num_beams, max_new_tokens):
    seq = input_ids
    for _ in range(max_new_tokens):
        logp = torch.log_softmax(model(seq).logits[0, -1], dim=-1)
        seq = torch.cat([seq, logp.topk(num_beams).indices[:1].view(1, 1)], dim=1)
    return seq


def beam_copies_of_the_prompt(model, input_ids, num_beams, max_new_tokens):
    seqs = input_ids.repeat(num_beams, 1)
    scores = torch.zeros(num_beams)
    for _ in range(max_new_tokens):
        logp = torch.log_softmax(model(seqs).logits[:, -1], dim=-1)
        V = logp.shape[-1]
        scores, idx = (scores[:, None] + logp).flatten().topk(num_beams)
        seqs = torch.cat([seqs[idx // V], (idx % V)[:, None]], dim=1)
    return seqs[:1]


def beam_ranks_by_last_step(model, input_ids, num_beams, max_new_tokens):
    beams = [(0.0, input_ids[0].tolist())]
    for _ in range(max_new_tokens):
        candidates = []
        for score, tokens in beams:
            logp = torch.log_softmax(model(torch.tensor([tokens])).logits[0, -1], dim=-1)
            candidates += [(lp, tokens + [tok]) for tok, lp in enumerate(logp.tolist())]
        beams = sorted(candidates, key=lambda c: c[0], reverse=True)[:num_beams]
    return torch.tensor([beams[0][1]])


def beam_each_extends_its_own_best(model, input_ids, num_beams, max_new_tokens):
    logp = torch.log_softmax(model(input_ids).logits[0, -1], dim=-1)
    top = logp.topk(min(num_beams, logp.shape[-1]))
    beams = [(s.item(), input_ids[0].tolist() + [t.item()]) for s, t in zip(top.values, top.indices)]
    for _ in range(max_new_tokens - 1):
        new = []
        for score, tokens in beams:
            lp = torch.log_softmax(model(torch.tensor([tokens])).logits[0, -1], dim=-1)
            new.append((score + lp.max().item(), tokens + [lp.argmax().item()]))
        beams = new
    if max_new_tokens == 0:
        return input_ids
    return torch.tensor([max(beams)[1]])


def beam_sums_logits(model, input_ids, num_beams, max_new_tokens):
    beams = [(0.0, input_ids[0].tolist())]
    for _ in range(max_new_tokens):
        candidates = []
        for score, tokens in beams:
            logits = model(torch.tensor([tokens])).logits[0, -1]
            candidates += [(score + v, tokens + [tok]) for tok, v in enumerate(logits.tolist())]
        beams = sorted(candidates, key=lambda c: c[0], reverse=True)[:num_beams]
    return torch.tensor([beams[0][1]])


def beam_returns_the_last_of_the_sorted(model, input_ids, num_beams, max_new_tokens):
    beams = [(0.0, input_ids[0].tolist())]
    for _ in range(max_new_tokens):
        candidates = []
        for score, tokens in beams:
            logp = torch.log_softmax(model(torch.tensor([tokens])).logits[0, -1], dim=-1)
            candidates += [(score + lp, tokens + [tok]) for tok, lp in enumerate(logp.tolist())]
        beams = sorted(candidates, key=lambda c: c[0], reverse=True)[:num_beams]
    return torch.tensor([beams[-1][1]])


def beam_hugging_face_start(model, input_ids, num_beams, max_new_tokens):
    """num_beams copies of the prompt, all but the first scored -1e9 (as Hugging Face starts): the copies never win."""
    seqs = input_ids.repeat(num_beams, 1)
    scores = torch.full((num_beams,), -1e9)
    scores[0] = 0.0
    for _ in range(max_new_tokens):
        logp = torch.log_softmax(model(seqs).logits[:, -1], dim=-1)
        V = logp.shape[-1]
        scores, idx = (scores[:, None] + logp).flatten().topk(num_beams)
        seqs = torch.cat([seqs[idx // V], (idx % V)[:, None]], dim=1)
    return seqs[:1]


def beam_topk_num_beams(model, input_ids, num_beams, max_new_tokens):
    """The usual vectorised version without the first step's shortage: topk(num_beams) over n * V."""
    seqs, scores = input_ids, torch.zeros(1)
    for _ in range(max_new_tokens):
        logp = torch.log_softmax(model(seqs).logits[:, -1], dim=-1)
        V = logp.shape[-1]
        scores, idx = (scores[:, None] + logp).flatten().topk(num_beams)
        seqs = torch.cat([seqs[idx // V], (idx % V)[:, None]], dim=1)
    return seqs[:1]


@pytest.mark.parametrize("fn", [beam_lists, beam_per_beam_topk_then_prune, beam_probabilities_product,
                                beam_hugging_face_start], ids=lambda f: f.__name__)
def test_beam_search_accepts_other_correct_answers(fn):
    passes("beam_search", fn)


@pytest.mark.parametrize("fn, phrase", [
    (beam_keeps_only_the_best, "the result is the greedy sequence"),
    (beam_copies_of_the_prompt, "the result is the greedy sequence"),
    (beam_ranks_by_last_step, "ranked the hypotheses by the last step's log-probability"),
    (beam_each_extends_its_own_best, "each beam was extended by its own best token only"),
    (beam_sums_logits, "summed the logits, not the log-probabilities"),
    (beam_returns_the_last_of_the_sorted, "returned the lowest-scoring beam"),
], ids=lambda x: getattr(x, "__name__", ""))
def test_beam_search_names_the_mistake(fn, phrase):
    assert_fails_naming(check("beam_search", fn), phrase)


def test_beam_search_with_more_beams_than_tokens_names_the_cause():
    feedback = check("beam_search", beam_topk_num_beams).feedback
    assert "more beams (7) than continuations" in feedback and "V = 5" in feedback, feedback


def test_beam_search_feedback_compares_the_log_probabilities():
    feedback = check("beam_search", beam_keeps_only_the_best).feedback
    assert "total log-probability of the new tokens: yours" in feedback, feedback


def test_the_hand_made_table_makes_beam_search_beat_greedy():
    model, prompt = beam_beats_greedy_lm(), torch.tensor([[0]])
    greedy = decoding._greedy_variant(model, prompt, 3)
    beam = decoding._beam_variant(model, prompt, 2, 3)
    assert greedy.tolist() == [[0, 1, 3, 4]] and beam.tolist() == [[0, 2, 3, 4]]
    greedy_p = math.exp(decoding._seq_variant(model, greedy, 1))
    beam_p = math.exp(decoding._seq_variant(model, beam, 1))
    assert greedy_p == pytest.approx(0.5 * 0.3 * 0.6) and beam_p == pytest.approx(0.4 * 0.9 * 0.6)


# =============================================================== the references against Hugging Face

@pytest.fixture(scope="module")
def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         bos_token_id=38, eos_token_id=39, pad_token_id=39)
    return LlamaForCausalLM(config).eval()


@pytest.mark.parametrize("num_beams", [1, 3, 5])
def test_reference_decoders_match_model_generate(tiny_llama, num_beams):
    """Greedy and beam search as the grader computes them equal Hugging Face's generate (no EOS within reach:
    the tiny model's EOS id is suppressed by bad_words_ids)."""
    prompt = torch.tensor([[5, 17, 3, 22]])
    with torch.no_grad():
        hf = tiny_llama.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False, num_beams=num_beams,
                                 max_new_tokens=6, length_penalty=0.0, bad_words_ids=[[39]], pad_token_id=39)

        class NoEos(torch.nn.Module):  # the same model without its EOS logit, as bad_words_ids does
            def forward(self, input_ids):
                out = tiny_llama(input_ids)
                out.logits[..., 39] = float("-inf")
                return out

        ours = decoding._beam_variant(NoEos(), prompt, num_beams, 6) if num_beams > 1 else \
            decoding._greedy_variant(NoEos(), prompt, 6)
    assert ours.tolist() == hf.tolist()


def test_reference_filters_match_hugging_face_warpers():
    from transformers import TopKLogitsWarper, TopPLogitsWarper

    for case in decoding.top_k_filter_cases():
        logits, k = case.args
        flat = logits.reshape(-1, logits.shape[-1])
        hf = TopKLogitsWarper(top_k=k)(None, flat.clone()).reshape(logits.shape)
        assert torch.equal(decoding._top_k_variant(logits, k), hf), case.label
    for case in decoding.top_p_filter_cases():
        logits, p = case.args
        if p >= 1 or "tie" in case.label:  # decided otherwise here: every tie kept, p >= 1 keeps everything
            continue
        flat = logits.reshape(-1, logits.shape[-1])
        hf = TopPLogitsWarper(top_p=p)(None, flat.clone()).reshape(logits.shape)
        assert torch.equal(torch.isfinite(decoding._top_p_variant(logits, p)), torch.isfinite(hf)), case.label


# =============================================================== top_k_filter

def top_k_sort(logits, k):
    values, _ = torch.sort(logits, dim=-1, descending=True)
    kth = values[..., k - 1:k] if k <= logits.shape[-1] else values[..., -1:]
    return torch.where(logits >= kth, logits, torch.full_like(logits, float("-inf")))


def top_k_kthvalue(logits, k):
    k = min(k, logits.shape[-1])
    kth = torch.kthvalue(logits, logits.shape[-1] - k + 1, dim=-1, keepdim=True).values
    out = logits.clone()
    out[out < kth] = float("-inf")
    return out


def top_k_numpy(logits, k):
    a = logits.numpy()
    kth = np.sort(a, axis=-1)[..., ::-1][..., min(k, a.shape[-1]) - 1][..., None]
    return torch.from_numpy(np.where(a >= kth, a, -np.inf).astype(a.dtype))


def top_k_strict(logits, k):
    kth = logits.topk(min(k, logits.shape[-1]), dim=-1).values[..., -1:]
    return logits.masked_fill(logits <= kth, float("-inf"))


def top_k_scatter_exactly_k(logits, k):
    idx = logits.topk(min(k, logits.shape[-1]), dim=-1).indices
    out = torch.full_like(logits, float("-inf"))
    return out.scatter(-1, idx, logits.gather(-1, idx))


def top_k_zero_fill(logits, k):
    kth = logits.topk(min(k, logits.shape[-1]), dim=-1).values[..., -1:]
    return torch.where(logits >= kth, logits, torch.zeros_like(logits))


def top_k_smallest(logits, k):
    kth = logits.topk(min(k, logits.shape[-1]), dim=-1, largest=False).values[..., -1:]
    return logits.masked_fill(logits > kth, float("-inf"))


def top_k_threshold_index_k(logits, k):
    values = logits.sort(dim=-1, descending=True).values
    kth = values[..., min(k, values.shape[-1] - 1):][..., :1]  # one past the k-th largest
    return logits.masked_fill(logits < kth, float("-inf"))


def top_k_first_axis(logits, k):
    kth = logits.topk(min(k, logits.shape[0]), dim=0).values[-1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_k_returns_the_values(logits, k):
    return logits.topk(min(k, logits.shape[-1]), dim=-1).values


def top_k_no_clamp(logits, k):
    kth = logits.topk(k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def test_top_k_filter_with_k_above_the_vocabulary_names_the_cause():
    feedback = check("top_k_filter", top_k_no_clamp).feedback
    assert "k = 12 is larger than the vocabulary (V = 6)" in feedback and "wrong axis" not in feedback, feedback


def test_top_k_filter_on_the_wrong_axis_is_still_named():
    feedback = check("top_k_filter", top_k_first_axis).feedback
    assert "wrong axis" in feedback, feedback


@pytest.mark.parametrize("fn", [top_k_sort, top_k_kthvalue, top_k_numpy], ids=lambda f: f.__name__)
def test_top_k_filter_accepts_other_correct_answers(fn):
    passes("top_k_filter", fn)


@pytest.mark.parametrize("fn, phrase", [
    (top_k_strict, "kept fewer than k tokens"),
    (top_k_scatter_exactly_k, "kept exactly k tokens, breaking the tie"),
    (top_k_zero_fill, "set the filtered logits to 0 instead of -inf"),
    (top_k_smallest, "kept the k smallest logits"),
    (top_k_threshold_index_k, "kept k + 1 tokens"),
    (top_k_first_axis, "top-k taken over the wrong axis"),
    (top_k_returns_the_values, "returned torch.topk's k values"),
], ids=lambda x: getattr(x, "__name__", ""))
def test_top_k_filter_names_the_mistake(fn, phrase):
    assert_fails_naming(check("top_k_filter", fn), phrase)


def test_top_k_filter_in_place_fails_naming_it():
    def top_k_filter(logits, k):
        kth = logits.topk(min(k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits[logits < kth] = float("-inf")
        return logits

    result = check("top_k_filter", top_k_filter)
    assert not result.passed and "changes its argument `logits` in place" in result.feedback, result.feedback


# =============================================================== top_p_filter

def top_p_loop(logits, p):
    """The rule as the text states it: the tokens strictly more probable than a token sum to less than p."""
    if p >= 1:
        return logits.clone()
    flat = logits.reshape(-1, logits.shape[-1])
    out = torch.full_like(flat, float("-inf"))
    for row in range(flat.shape[0]):
        probs = torch.exp(flat[row] - torch.logsumexp(flat[row], 0)).tolist()
        for i, q in enumerate(probs):
            if sum(r for r in probs if r > q) < p:
                out[row, i] = flat[row, i]
    return out.reshape(logits.shape)


def top_p_shifted_mask(logits, p):
    if p >= 1:
        return logits.clone()
    sorted_logits, idx = torch.sort(logits, descending=True, dim=-1)
    cum = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
    remove = cum > p
    remove[..., 1:] = remove[..., :-1].clone()  # shift right: keep the token that crosses p
    remove[..., 0] = False
    remove &= sorted_logits < sorted_logits.masked_fill(remove, float("inf")).amin(-1, keepdim=True)  # ties stay
    out = sorted_logits.masked_fill(remove, float("-inf"))
    return torch.empty_like(out).scatter_(-1, idx, out)


def top_p_hugging_face_style(logits, p):
    """TopPLogitsWarper's arithmetic, with the two decided details added."""
    if p >= 1:
        return logits.clone()
    sorted_logits, idx = torch.sort(logits, descending=False, dim=-1)
    cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    remove_sorted = cum <= (1 - p)
    remove_sorted[..., -1:] = False
    remove = remove_sorted.scatter(-1, idx, remove_sorted)
    least_kept = logits.masked_fill(remove, float("inf")).amin(-1, keepdim=True)
    return logits.masked_fill(logits < least_kept, float("-inf"))


def top_p_sort_only(logits, p):
    """Right except for ties: whichever tied token the sort puts after the boundary is dropped."""
    if p >= 1:
        return logits.clone()
    sorted_logits, idx = torch.sort(logits, descending=True, dim=-1)
    probs = torch.softmax(sorted_logits, dim=-1)
    out = sorted_logits.masked_fill(probs.cumsum(-1) - probs >= p, float("-inf"))
    return torch.empty_like(out).scatter(-1, idx, out)


def top_p_no_special_case_at_one(logits, p):
    """Right except at p = 1, where the float cumulative sum reaches 1 before the tail."""
    probs = torch.softmax(logits, dim=-1)
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    keep_sorted = sorted_probs.cumsum(-1) - sorted_probs < p
    keep = keep_sorted.scatter(-1, order, keep_sorted)
    least_kept = probs.masked_fill(~keep, float("inf")).amin(-1, keepdim=True)
    return logits.masked_fill(probs < least_kept, float("-inf"))


def top_p_drops_crossing(logits, p):
    sorted_logits, idx = torch.sort(logits, descending=True, dim=-1)
    cum = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
    out = sorted_logits.masked_fill(cum > p, float("-inf"))
    return torch.empty_like(out).scatter(-1, idx, out)


def top_p_own_probability(logits, p):
    probs = torch.softmax(logits, dim=-1)
    return logits.masked_fill(probs < p, float("-inf"))


def top_p_cumsum_unsorted(logits, p):
    cum = torch.softmax(logits, dim=-1).cumsum(dim=-1)
    return logits.masked_fill(cum - torch.softmax(logits, dim=-1) >= p, float("-inf"))


def top_p_not_scattered_back(logits, p):
    sorted_logits, _ = torch.sort(logits, descending=True, dim=-1)
    probs = torch.softmax(sorted_logits, dim=-1)
    before = probs.cumsum(-1) - probs
    return sorted_logits.masked_fill(before >= p, float("-inf"))


def top_p_ascending(logits, p):
    sorted_logits, idx = torch.sort(logits, dim=-1)  # ascending by mistake
    probs = torch.softmax(sorted_logits, dim=-1)
    before = probs.cumsum(-1) - probs
    out = sorted_logits.masked_fill(before >= p, float("-inf"))
    return torch.empty_like(out).scatter(-1, idx, out)


@pytest.mark.parametrize("fn", [top_p_loop, top_p_shifted_mask, top_p_hugging_face_style],
                         ids=lambda f: f.__name__)
def test_top_p_filter_accepts_other_correct_answers(fn):
    passes("top_p_filter", fn)


@pytest.mark.parametrize("fn, phrase", [
    (top_p_drops_crossing, "dropped the token that crosses p"),
    (top_p_own_probability, "compared each token's own probability with p"),
    (top_p_cumsum_unsorted, "cumulative sum in vocabulary order"),
    (top_p_not_scattered_back, "returned the logits in sorted order"),
    (top_p_ascending, "sorted in ascending order"),
    (top_p_sort_only, "dropped a token exactly as probable as the last token kept"),
    (top_p_no_special_case_at_one, "with p >= 1 some tokens were dropped"),
], ids=lambda x: getattr(x, "__name__", ""))
def test_top_p_filter_names_the_mistake(fn, phrase):
    assert_fails_naming(check("top_p_filter", fn), phrase)


# =============================================================== sample_next_token
# The learner's own filters, as exercises 5 and 6 ask for them (written here so the samplers stand alone).

def own_top_k(logits, k):
    kth = logits.topk(min(k, logits.shape[-1]), dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def own_top_p(logits, p):
    return top_p_hugging_face_style(logits, p)


def sample_multinomial_on_exp(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    if temperature == 0:
        return logits.argmax().item()
    x = logits / temperature
    if top_k:
        x = own_top_k(x, top_k)
    if top_p:
        x = own_top_p(x, top_p)
    weights = torch.exp(x - x.max())  # multinomial normalises the weights itself
    return int(torch.multinomial(weights, num_samples=1, generator=generator))


def sample_inverse_cdf(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    if temperature == 0:
        return int(torch.argmax(logits))
    x = logits / temperature
    x = own_top_k(x, top_k) if top_k is not None else x
    x = own_top_p(x, top_p) if top_p is not None else x
    cdf = torch.softmax(x, dim=-1).cumsum(0)
    u = torch.rand(1, generator=generator)
    return min(int(torch.searchsorted(cdf, u)), logits.shape[-1] - 1)


def sample_gumbel_max(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    if temperature == 0:
        return int(logits.argmax())
    x = logits / temperature
    if top_k is not None:
        x = own_top_k(x, top_k)
    if top_p is not None:
        x = own_top_p(x, top_p)
    u = torch.rand(x.shape, generator=generator).clamp_min(1e-20)
    return int((x - torch.log(-torch.log(u))).argmax())


def sample_temperature_last(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    if temperature == 0:
        return int(logits.argmax())
    x = logits
    if top_k is not None:
        x = own_top_k(x, top_k)
    if top_p is not None:
        x = own_top_p(x, top_p)
    return torch.multinomial(torch.softmax(x / temperature, -1), 1, generator=generator).item()


def sample_top_p_first(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    if temperature == 0:
        return int(logits.argmax())
    x = logits / temperature
    if top_p is not None:
        x = own_top_p(x, top_p)
    if top_k is not None:
        x = own_top_k(x, top_k)
    return torch.multinomial(torch.softmax(x, -1), 1, generator=generator).item()


def sample_multiplies_temperature(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    if temperature == 0:
        return int(logits.argmax())
    x = logits * temperature
    if top_k is not None:
        x = own_top_k(x, top_k)
    if top_p is not None:
        x = own_top_p(x, top_p)
    return torch.multinomial(torch.softmax(x, -1), 1, generator=generator).item()


def sample_ignores_generator(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    if temperature == 0:
        return int(logits.argmax())
    x = logits / temperature
    if top_k is not None:
        x = own_top_k(x, top_k)
    if top_p is not None:
        x = own_top_p(x, top_p)
    return torch.multinomial(torch.softmax(x, -1), 1).item()


def sample_returns_a_tensor(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    if temperature == 0:
        return logits.argmax()
    x = logits / temperature
    x = own_top_k(x, top_k) if top_k is not None else x
    x = own_top_p(x, top_p) if top_p is not None else x
    return torch.multinomial(torch.softmax(x, -1), 1, generator=generator)


def sample_always_argmax(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    x = logits / max(temperature, 1e-6)
    return int(x.argmax())


def sample_filters_not_used(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    if temperature == 0:
        return int(logits.argmax())
    x = logits / temperature
    filtered = own_top_k(x, top_k) if top_k is not None else x  # computed, then the wrong tensor is sampled
    del filtered
    return torch.multinomial(torch.softmax(x, -1), 1, generator=generator).item()


@pytest.mark.parametrize("fn", [sample_multinomial_on_exp, sample_inverse_cdf, sample_gumbel_max],
                         ids=lambda f: f.__name__)
def test_sample_next_token_accepts_other_correct_answers(fn):
    passes("sample_next_token", fn)


@pytest.mark.parametrize("fn, phrase", [
    (sample_temperature_last, "applied the temperature after filtering"),
    (sample_top_p_first, "applied top-p before top-k"),
    (sample_multiplies_temperature, "multiplied the logits by the temperature"),
    (sample_ignores_generator, "ignored `generator`"),
    (sample_returns_a_tensor, "returned a tensor"),
    (sample_always_argmax, "always returned the most likely token"),
    (sample_filters_not_used, "sampled from the unfiltered distribution"),
], ids=lambda x: getattr(x, "__name__", ""))
def test_sample_next_token_names_the_mistake(fn, phrase):
    assert_fails_naming(check("sample_next_token", fn), phrase)


def test_sample_next_token_explains_a_division_by_zero_temperature():
    def sample_next_token(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
        probs = torch.softmax(logits / temperature, dim=-1)
        return torch.multinomial(probs, 1, generator=generator).item()

    feedback = check("sample_next_token", sample_next_token).feedback
    assert "temperature=0 means argmax" in feedback, feedback


# =============================================================== classify_by_likelihood

def _score(model, ids, prompt_length):
    logp = torch.log_softmax(model(torch.tensor([ids])).logits[0], dim=-1)
    return sum(logp[t - 1, ids[t]].item() for t in range(prompt_length, len(ids)))


def classify_call_tokenizer(model, tokenizer, prompt, labels):
    p = tokenizer(prompt, add_special_tokens=False).input_ids
    scores = {label: _score(model, p + tokenizer(" " + label, add_special_tokens=False)["input_ids"], len(p))
              for label in labels}
    return max(scores, key=scores.get)


def classify_tensors(model, tokenizer, prompt, labels):
    p = tokenizer(prompt, add_special_tokens=False, return_tensors="pt").input_ids  # (1, P)
    best, best_score = None, -float("inf")
    for label in labels:
        lab = tokenizer(" " + label, add_special_tokens=False, return_tensors="pt").input_ids
        ids = torch.cat([p, lab], dim=1)
        logp = model(ids).logits.log_softmax(-1)[0, p.shape[1] - 1:-1]
        score = logp.gather(-1, lab[0][:, None]).sum().item()
        if score > best_score:
            best, best_score = label, score
    return best


def classify_by_harness(model, tokenizer, prompt, labels):
    """Lesson 09's harness: it scores each " " + label after the prompt, tokenized apart, as the exercise asks."""
    scores = choice_logprobs(model, tokenizer, prompt, labels)
    return labels[max(range(len(labels)), key=scores.__getitem__)]


def classify_by_perplexity(model, tokenizer, prompt, labels):
    """Lesson 10's perplexity helper: log P(label | prompt) from the perplexities of the two prefixes."""
    p = tokenizer.encode(prompt, add_special_tokens=False)

    def after_first_token(ids):
        n = len(ids)
        return -(n - 1) * math.log(causal_lm_perplexity(model, torch.tensor(ids), window=n, progress=False)) if n > 1 else 0.0

    scores = [after_first_token(p + tokenizer.encode(" " + label, add_special_tokens=False)) - after_first_token(p)
              for label in labels]
    return labels[max(range(len(labels)), key=scores.__getitem__)]


def test_classify_by_likelihood_refuses_the_course_helpers_that_score_labels():
    with not_enforced():  # allowed, each helper answers the cases it can run on
        assert check("classify_by_likelihood", classify_by_perplexity).passed
    for fn, helper in [(classify_by_harness, LABEL_SCORING), (classify_by_perplexity, LM_PERPLEXITY)]:
        result = check("classify_by_likelihood", fn)
        assert not result.passed
        assert list(result.mistakes) == [helper.mistake], (fn.__name__, result.feedback)


def classify_together(model, tokenizer, prompt, labels):
    p = tokenizer.encode(prompt, add_special_tokens=False)
    scores = [_score(model, tokenizer.encode(prompt + " " + label, add_special_tokens=False), len(p))
              for label in labels]
    return labels[int(np.argmax(scores))]


def classify_special_tokens(model, tokenizer, prompt, labels):
    p = tokenizer.encode(prompt)
    scores = [_score(model, p + tokenizer.encode(" " + label), len(p)) for label in labels]
    return labels[int(np.argmax(scores))]


def classify_no_space(model, tokenizer, prompt, labels):
    p = tokenizer.encode(prompt, add_special_tokens=False)
    scores = [_score(model, p + tokenizer.encode(label, add_special_tokens=False), len(p)) for label in labels]
    return labels[int(np.argmax(scores))]


def classify_first_token(model, tokenizer, prompt, labels):
    p = tokenizer.encode(prompt, add_special_tokens=False)
    logp = torch.log_softmax(model(torch.tensor([p])).logits[0, -1], dim=-1)
    scores = [logp[tokenizer.encode(" " + label, add_special_tokens=False)[0]].item() for label in labels]
    return labels[int(np.argmax(scores))]


def classify_mean(model, tokenizer, prompt, labels):
    p = tokenizer.encode(prompt, add_special_tokens=False)
    scores = []
    for label in labels:
        lab = tokenizer.encode(" " + label, add_special_tokens=False)
        scores.append(_score(model, p + lab, len(p)) / len(lab))
    return labels[int(np.argmax(scores))]


def classify_argmin(model, tokenizer, prompt, labels):
    p = tokenizer.encode(prompt, add_special_tokens=False)
    scores = [_score(model, p + tokenizer.encode(" " + label, add_special_tokens=False), len(p)) for label in labels]
    return labels[int(np.argmin(scores))]


def classify_last_on_tie(model, tokenizer, prompt, labels):
    p = tokenizer.encode(prompt, add_special_tokens=False)
    best, best_score = None, -float("inf")
    for label in labels:
        score = _score(model, p + tokenizer.encode(" " + label, add_special_tokens=False), len(p))
        if score >= best_score:
            best, best_score = label, score
    return best


def classify_returns_index(model, tokenizer, prompt, labels):
    p = tokenizer.encode(prompt, add_special_tokens=False)
    scores = [_score(model, p + tokenizer.encode(" " + label, add_special_tokens=False), len(p)) for label in labels]
    return int(np.argmax(scores))


@pytest.mark.parametrize("fn", [classify_call_tokenizer, classify_tensors], ids=lambda f: f.__name__)
def test_classify_by_likelihood_accepts_other_correct_answers(fn):
    passes("classify_by_likelihood", fn)


def test_classify_by_likelihood_accepts_the_reference_sequence_logprob(reference):
    sequence_logprob = reference_fn(reference, "sequence_logprob")

    def classify(model, tokenizer, prompt, labels):
        p = tokenizer.encode(prompt, add_special_tokens=False)
        scores = [sequence_logprob(model, torch.tensor([p + tokenizer.encode(" " + x, add_special_tokens=False)]),
                                   len(p)) for x in labels]
        return labels[scores.index(max(scores))]

    passes("classify_by_likelihood", classify)


@pytest.mark.parametrize("fn, phrase", [
    (classify_together, "the label was tokenized together with the prompt"),
    (classify_special_tokens, "tokenized with special tokens"),
    (classify_no_space, "without its leading space"),
    (classify_first_token, "scored only the first token of each label"),
    (classify_mean, "averaged the log-probabilities over the label's tokens"),
    (classify_argmin, "returned the least likely label"),
    (classify_returns_index, "returned the index of the best label"),
    (classify_last_on_tie, "on a tie returned a later label"),
], ids=lambda x: getattr(x, "__name__", ""))
def test_classify_by_likelihood_names_the_mistake(fn, phrase):
    assert_fails_naming(check("classify_by_likelihood", fn), phrase)


def test_the_toy_tokenizer_makes_the_boundary_matter():
    tokenizer = ToyTokenizer()
    together = tokenizer.tokenize("Output: great")
    apart = tokenizer.tokenize("Output:") + tokenizer.tokenize(" great")
    assert together == ["Output", ": ", "great"] and apart == ["Output", ":", " great"]
    assert tokenizer.encode("great")[0] == tokenizer.bos_token_id
    assert tokenizer("great", add_special_tokens=False).input_ids == [tokenizer.vocab["great"]]


# =============================================================== the checks' model, cases and API

def test_table_lm_is_called_like_a_hugging_face_model():
    model = decoding.random_lm(0, 6)
    ids = torch.tensor([[1, 2, 3]])
    out = model(ids)
    assert out.logits.shape == (1, 3, 6) and torch.equal(out[0], out.logits) and torch.equal(out["logits"], out.logits)
    assert torch.equal(model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits, out.logits)
    step = model(torch.tensor([[4]]), cache=out.cache)
    assert torch.equal(step.logits[0, -1], model(torch.tensor([[1, 2, 3, 4]])).logits[0, -1])
    assert torch.equal(model(torch.tensor([[4]]), past_key_values=out.past_key_values).logits, step.logits)
    with pytest.raises(ValueError, match="batch axis"):
        model(torch.tensor([1, 2]))
    with pytest.raises(TypeError, match="integer token ids"):
        model(torch.tensor([[1.0, 2.0]]))


@pytest.mark.parametrize("name", EXERCISES)
def test_cases_pickle(name):
    """Cases are built in the grading process and may be sent to a child process."""
    for case in grader.get_exercise(name).make_cases():
        copy = pickle.loads(pickle.dumps(case))
        assert copy.label == case.label


def test_checks_run_in_a_child_process():
    """Observations (sampling draws, the tokenizer's calls) come back from the child as plain data."""
    from grader.isolated import check_notebook

    results = check_notebook(SOLUTION_DIR / f"{ASSIGNMENT}.ipynb", ["sample_next_token", "classify_by_likelihood"])
    assert all(r.passed for r in results), "\n".join(r.feedback for r in results)


@pytest.mark.parametrize("name", EXERCISES)
def test_every_check_is_fast(reference, name):
    import time

    start = time.perf_counter()
    check(name, reference_fn(reference, name))
    assert time.perf_counter() - start < 10  # generous: the machine may be busy; a quiet one takes < 2 s


def test_a_number_instead_of_a_string_fails_clearly():
    result = check("classify_by_likelihood", lambda *a, **k: 3.5)
    assert not result.passed and "float 3.5" in result.feedback, result.feedback


# =============================================================== hidden checks

HIDDEN_WRONG = {
    "sequence_logprob": seq_counts_the_prompt,
    "greedy_decode": greedy_ignores_eos,
    "beam_search": beam_keeps_only_the_best,
    "top_k_filter": top_k_strict,
    "top_p_filter": top_p_drops_crossing,
    "sample_next_token": sample_temperature_last,
    "classify_by_likelihood": classify_together,
}


def test_table_lm_pickles_with_its_contexts():
    model = decoding.random_lm(3, 7, n_contexts=5)
    copy = pickle.loads(pickle.dumps(model))
    ids = torch.tensor([[1, 4, 2, 6, 0]])
    assert isinstance(copy, TableLM) and torch.equal(copy(ids).logits, model(ids).logits)


# =============================================================== the chapter contract (tests/chapter_contract.py)

class TestChapterContract(ChapterContract):
    ASSIGNMENT = ASSIGNMENT
    EXERCISES = EXERCISES

    NAMED_MISTAKES = [
        ("sequence_logprob", seq_no_shift),
        ("sequence_logprob", seq_no_check),
        ("sequence_logprob", seq_log_of_softmax),
        ("greedy_decode", greedy_ignores_eos),
        ("greedy_decode", greedy_last_token_only),
        ("beam_search", beam_keeps_only_the_best),
        ("beam_search", beam_ranks_by_last_step),
        ("beam_search", beam_each_extends_its_own_best),
        ("beam_search", beam_sums_logits),
        ("top_k_filter", top_k_strict),
        ("top_k_filter", top_k_scatter_exactly_k),
        ("top_p_filter", top_p_drops_crossing),
        ("top_p_filter", top_p_sort_only),
        ("top_p_filter", top_p_no_special_case_at_one),
        ("sample_next_token", sample_temperature_last),
        ("sample_next_token", sample_ignores_generator),
        ("classify_by_likelihood", classify_together),
        ("classify_by_likelihood", classify_special_tokens),
        ("classify_by_likelihood", classify_last_on_tie),
    ]
    ALL_OR_NOTHING = [
        ("sequence_logprob", seq_loop, seq_counts_the_prompt),
        ("greedy_decode", greedy_list, greedy_ignores_eos),
        ("beam_search", beam_lists, beam_keeps_only_the_best),
        ("top_k_filter", top_k_sort, top_k_strict),
        ("top_p_filter", top_p_loop, top_p_drops_crossing),
        ("sample_next_token", sample_multinomial_on_exp, sample_temperature_last),
        ("classify_by_likelihood", classify_call_tokenizer, classify_together),
    ]
    GARBAGE = DEFAULT_GARBAGE + [A_LIST]
    # this one returns text: a string is no garbage for it (test_a_number_instead_of_a_string_fails_clearly)
    GARBAGE_EXERCISES = [n for n in EXERCISES if n != "classify_by_likelihood"]

    def hidden_wrong(self, exercise, reference):
        return HIDDEN_WRONG[exercise]
