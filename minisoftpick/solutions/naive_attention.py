"""Solutions to notebook 02 (naive softpick attention)."""

import math

import torch


def naive_attention(q, k, v, causal=True):
    """Softpick attention for q [B, H, Tq, D], k/v [B, H, Tk, D], causal mask bottom-right aligned."""
    tq, tk, d = q.shape[-2], k.shape[-2], q.shape[-1]
    scores = q @ k.transpose(-1, -2) / math.sqrt(d)
    keep = (
        causal_mask(tq, tk).to(q.device) if causal else torch.ones(tq, tk, dtype=torch.bool, device=q.device)
    )
    weights = masked_softpick(scores, keep)
    return weights @ v


def causal_mask(tq, tk):
    """Bool [tq, tk], True where query i sees key j: j <= i + tk - tq (the last query sees every key)."""
    return torch.arange(tk)[None, :] <= torch.arange(tq)[:, None] + tk - tq


def masked_softpick(scores, keep):
    """Softpick over the last dim of the entries where keep is True; the others get weight 0 (notebook 02)."""
    c = scores.masked_fill(~keep, float("-inf")).amax(-1, keepdim=True).clamp(min=0)  # a row of no key: c = 0
    e = (torch.exp(scores - c) - torch.exp(-c)).masked_fill(~keep, 0.0)  # hidden entries leave the sum
    return torch.relu(e) / (e.abs().sum(-1, keepdim=True) + 1e-6 * torch.exp(-c))
