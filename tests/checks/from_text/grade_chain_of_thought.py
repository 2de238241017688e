import torch


def grade_chain_of_thought(outputs, targets):
    """(answers, accuracy): each output's final answer (None without "the answer is") and the exact-match rate."""
    phrase = "the answer is"
    answers = []
    for out in outputs:
        pos = out.lower().rfind(phrase)
        if pos == -1:
            answers.append(None)
            continue
        rest = out[pos + len(phrase):]
        ans = rest.split("\n", 1)[0].strip()
        if ans.endswith("."):
            ans = ans[:-1]
        answers.append(ans)
    correct = 0
    for ans, tgt in zip(answers, targets):
        if ans is not None and ans.strip().lower() == tgt.strip().lower():
            correct += 1
    return answers, float(correct) / len(outputs)
