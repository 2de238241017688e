import torch


def train_epoch(model, batches, optimizer, scheduler=None):
    """One pass over `batches`, one optimizer (and scheduler) step per batch; the mean of the batch losses."""
    model.train()
    total = 0.0
    count = 0
    for batch in batches:
        # Clear any gradient left from earlier (a previous batch or a previous epoch),
        # so this step sees this batch's gradient only.
        optimizer.zero_grad()
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total += loss.item()
        count += 1
    # Leave no stale gradient behind for whatever comes next.
    optimizer.zero_grad()
    if count == 0:
        raise ValueError("train_epoch: no batches to train on")
    return total / count
