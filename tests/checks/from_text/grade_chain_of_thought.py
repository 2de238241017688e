import torch

_PHRASE = "the answer is"


def _last_phrase_end(text):
    """Index just after the last case-insensitive occurrence of the phrase in text, or None."""
    n = len(_PHRASE)
    for start in range(len(text) - n, -1, -1):
        if text[start:start + n].lower() == _PHRASE:
            return start + n
    return None


def _final_answer(output):
    end = _last_phrase_end(output)
    if end is None:
        return None
    answer = output[end:].split("\n", 1)[0]  # up to the first newline after the phrase
    answer = answer.strip()                  # all surrounding whitespace
    if answer.endswith("."):
        answer = answer[:-1]                 # exactly one final period
    return answer


def grade_chain_of_thought(outputs, targets):
    """(answers, accuracy): each output's final answer (None without "the answer is") and the exact-match rate."""
    answers = [_final_answer(o) for o in outputs]
    correct = sum(
        1
        for a, t in zip(answers, targets)
        if a is not None and a.strip().lower() == t.strip().lower()
    )
    return answers, float(correct / len(outputs))
