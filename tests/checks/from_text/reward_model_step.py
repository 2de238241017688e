import torch
import torch.nn.functional as F


def reward_model_step(reward_fn, optimizer, chosen, rejected):
    """One Bradley-Terry training step on a batch of preference pairs; the loss and the pair accuracy."""
    optimizer.zero_grad()
    r_chosen = reward_fn(chosen)
    r_rejected = reward_fn(rejected)
    diff = r_chosen - r_rejected
    loss = -F.logsigmoid(diff).mean()
    accuracy = (diff.detach() > 0).float().mean().item()
    loss.backward()
    optimizer.step()
    return {"loss": float(loss.item()), "accuracy": float(accuracy)}
