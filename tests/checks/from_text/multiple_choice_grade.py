import torch


def multiple_choice_grade(choice_scores, target_scores):
    """BIG-bench's multiple_choice_grade: the mean target score of each example's highest-scoring choice."""
    total = 0.0
    for scores, targets in zip(choice_scores, target_scores):
        scores = [float(s) for s in scores]
        best = 0
        for i in range(1, len(scores)):
            if scores[i] > scores[best]:
                best = i
        total += float(list(targets.values())[best])
    return float(total / len(choice_scores))
