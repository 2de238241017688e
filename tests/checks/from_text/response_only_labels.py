import torch


def response_only_labels(input_ids, prompt_lengths, attention_mask):
    """Labels for training on the answers only: the ids, with -100 on each row's prompt and on the padding."""
    B, T = input_ids.shape
    positions = torch.arange(T, device=input_ids.device).unsqueeze(0)          # (1, T)
    lengths = torch.as_tensor(prompt_lengths, device=input_ids.device).reshape(B, 1)  # (B, 1)
    in_prompt = positions < lengths                                           # (B, T)
    is_padding = torch.as_tensor(attention_mask, device=input_ids.device) == 0  # (B, T)
    # masked_fill returns a new tensor: the caller's input_ids is left as it was.
    return input_ids.long().masked_fill(in_prompt | is_padding, -100)
