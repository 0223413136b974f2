"""Solutions to notebook 02 (naive softpick attention)."""

import math

import torch


def naive_attention(q, k, v, causal=True):
    """Softpick attention for q [B, H, Tq, D], k/v [B, H, Tk, D], causal mask bottom-right aligned."""
    tq, tk, d = q.shape[-2], k.shape[-2], q.shape[-1]
    scores = q @ k.transpose(-1, -2) / math.sqrt(d)
    keep = torch.ones(tq, tk, dtype=torch.bool, device=q.device)
    if causal:
        keep = (
            torch.arange(tk, device=q.device)[None, :] <= torch.arange(tq, device=q.device)[:, None] + tk - tq
        )
    c = scores.masked_fill(~keep, float("-inf")).amax(-1, keepdim=True).clamp(min=0)
    e = (torch.exp(scores - c) - torch.exp(-c)).masked_fill(~keep, 0.0)  # masked keys leave the sum
    weights = torch.relu(e) / (e.abs().sum(-1, keepdim=True) + 1e-6 * torch.exp(-c))
    return weights @ v
