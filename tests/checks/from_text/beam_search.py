import torch


def _logits(out):
    """Accept a raw logits tensor or a Hugging Face output with `.logits`."""
    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "logits"):
        return out.logits
    if isinstance(out, (tuple, list)):
        return out[0]
    return out


def beam_search(model, input_ids, num_beams, max_new_tokens):
    """Keep the num_beams hypotheses with the highest total log-probability; return the best (1, T + n)."""
    ids = input_ids
    if ids.dim() == 1:
        ids = ids.unsqueeze(0)
    ids = ids.long()
    # one hypothesis: the prompt alone, score 0
    scores = None
    with torch.no_grad():
        for _ in range(max_new_tokens):
            logits = _logits(model(ids))[:, -1, :]            # (n, V)
            if logits.dtype in (torch.float16, torch.bfloat16):
                logits = logits.float()
            logp = torch.log_softmax(logits, dim=-1)          # (n, V)
            if scores is None:
                scores = torch.zeros(logp.shape[0], dtype=logp.dtype, device=logp.device)
            n, V = logp.shape
            cand = (scores[:, None] + logp).reshape(-1)       # (n * V,)
            k = min(num_beams, cand.numel())
            top_scores, flat = torch.topk(cand, k)
            parents = torch.div(flat, V, rounding_mode="floor")
            tokens = flat % V
            ids = torch.cat([ids[parents], tokens[:, None].to(ids.dtype)], dim=1)
            scores = top_scores
    # best first from topk; with no steps, the only hypothesis is the prompt
    best = 0 if scores is None else int(torch.argmax(scores))
    return ids[best:best + 1].long()
