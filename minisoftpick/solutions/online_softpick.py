"""Solutions to notebook 03 (the online algorithm)."""

import math

import torch


def online_softpick_attention(q, k, v, causal=True, block_size=16):
    """Softpick attention one key block at a time with the running shift c = max(m, 0)."""
    tq, tk, d = q.shape[-2], k.shape[-2], q.shape[-1]
    c = torch.zeros(*q.shape[:-1], 1, dtype=q.dtype, device=q.device)
    den = torch.zeros_like(c)
    acc = torch.zeros_like(q)
    rows = torch.arange(tq, device=q.device)[:, None]
    for start in range(0, tk, block_size):
        kb, vb = k[..., start : start + block_size, :], v[..., start : start + block_size, :]
        s = q @ kb.transpose(-1, -2) / math.sqrt(d)
        cols = torch.arange(start, start + kb.shape[-2], device=q.device)[None, :]
        keep = cols <= rows + tk - tq if causal else torch.ones_like(s, dtype=torch.bool)
        c, den, acc = block_update(c, den, acc, s, vb, keep.expand_as(s))
    return acc / (den + 1e-6 * torch.exp(-c))


def merge_partials(c1, den1, acc1, c2, den2, acc2):
    """Merge two partial online states of the same rows over disjoint keys, each with its own shift.

    c [M, 1], den [M, 1] (running sums, no eps), acc [M, D]: move both to c = max(c1, c2) by the rescale
    identity (notebook 03, section 2), then add."""
    c = torch.maximum(c1, c2)
    r1, r2 = torch.exp(c1 - c), torch.exp(c2 - c)
    return c, den1 * r1 + den2 * r2, acc1 * r1 + acc2 * r2


def block_update(c, den, acc, s, v, keep):
    """One step of the online loop (notebook 03, section 2): the state (c, den, acc) after one more key block
    with scores s [M, N], values v [N, D] and visibility keep [M, N]."""
    c_new = torch.maximum(c, s.masked_fill(~keep, float("-inf")).amax(-1, keepdim=True))
    r = torch.exp(c - c_new)
    p = (torch.exp(s - c_new) - torch.exp(-c_new)).masked_fill(~keep, 0.0)
    return c_new, den * r + p.abs().sum(-1, keepdim=True), acc * r + torch.relu(p) @ v
