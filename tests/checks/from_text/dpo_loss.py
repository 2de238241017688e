import torch
import torch.nn.functional as F


def _sequence_logps(logits, labels):
    """Sum over the labelled positions of log softmax(logits[:, t])[labels[:, t + 1]]: (B,)."""
    logits = logits[:, :-1]
    labels = labels[:, 1:]
    mask = labels != -100
    safe_labels = torch.where(mask, labels, torch.zeros_like(labels))
    logps = F.log_softmax(logits, dim=-1)
    token_logps = logps.gather(-1, safe_labels.unsqueeze(-1)).squeeze(-1)
    return (token_logps * mask.to(token_logps.dtype)).sum(dim=-1)


def dpo_loss(policy_chosen_logits, policy_rejected_logits, ref_chosen_logits, ref_rejected_logits,
             chosen_labels, rejected_labels, beta):
    """Rafailov et al.'s DPO loss over a batch of pairs, and the implicit rewards of the chosen and rejected answers."""
    pi_c = _sequence_logps(policy_chosen_logits, chosen_labels)
    pi_r = _sequence_logps(policy_rejected_logits, rejected_labels)
    ref_c = _sequence_logps(ref_chosen_logits, chosen_labels)
    ref_r = _sequence_logps(ref_rejected_logits, rejected_labels)
    chosen_ratio = pi_c - ref_c
    rejected_ratio = pi_r - ref_r
    loss = -F.logsigmoid(beta * (chosen_ratio - rejected_ratio)).mean()
    chosen_rewards = (beta * chosen_ratio).detach()
    rejected_rewards = (beta * rejected_ratio).detach()
    return loss, chosen_rewards, rejected_rewards
