import torch


def beam_search(model, input_ids, num_beams, max_new_tokens):
    """Keep the num_beams hypotheses with the highest total log-probability; return the best (1, T + n)."""
    device = input_ids.device
    seqs = input_ids[:1].long()
    scores = torch.zeros(1, dtype=torch.float64, device=device)
    for _ in range(max_new_tokens):
        with torch.no_grad():
            out = model(seqs)
        logits = out.logits if hasattr(out, "logits") else out
        logp = torch.log_softmax(logits[:, -1, :].double(), dim=-1)  # (n, V)
        V = logp.shape[-1]
        cand = (scores.unsqueeze(1) + logp).reshape(-1)
        k = min(num_beams, cand.numel())
        top_scores, top_idx = torch.topk(cand, k)
        parents = torch.div(top_idx, V, rounding_mode="floor")
        tokens = top_idx % V
        seqs = torch.cat([seqs[parents], tokens.unsqueeze(1).to(seqs.dtype)], dim=1)
        scores = top_scores
    return seqs[:1]
