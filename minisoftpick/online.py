"""Online (flash-style) softpick attention in plain PyTorch: the teaching reference for the kernel.

Keys are visited in blocks; per query row we keep a running shift c (>= 0), a running
denominator and an unnormalised output (docs/design.md, "Online recurrence"):

    c_new = max(c, rowmax(S_blk))                  c starts at 0, so c = max(m, 0) throughout
    r     = exp(c - c_new)
    P~    = exp(S_blk - c_new) - exp(-c_new)         masked entries set to 0
    den   = den * r + rowsum(|P~|)
    O     = O * r + relu(P~) @ V_blk
    out   = O / (den + eps * exp(-c))

Starting c at 0 (not -inf, not the first block's max) is what keeps a first block of scores far
below zero from overflowing exp(-c): the paper's shift by m alone gives inf - inf = NaN there.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from .attention import causal_mask, check_attention_inputs, repeat_kv


class OnlineState(NamedTuple):
    """What the forward pass keeps per query row, as the kernel saves it for backward."""

    out: Tensor  # [B, Hq, Tq, D]
    shift: Tensor  # c = max(m, 0), [B, Hq, Tq]
    denominator: Tensor  # sum_j |exp(s_j - c) - exp(-c)| + eps * exp(-c), [B, Hq, Tq]


def online_softpick_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    causal: bool = True,
    scale: float | None = None,
    block_size: int = 64,
    eps: float = 1e-6,
    return_state: bool = False,
) -> Tensor | OnlineState:
    """Softpick attention computed one key block at a time; equals ``naive_attention``.

    Never forms the [Tq, Tk] matrix, only [Tq, block_size] tiles. With ``return_state`` returns
    an ``OnlineState`` with the per-row shift and denominator as well as the output.
    """
    check_attention_inputs(q, k, v)
    if not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be a positive int, got {block_size!r}")
    b, hq, tq, d = q.shape
    tk = k.shape[2]
    if scale is None:
        scale = 1.0 / math.sqrt(d)
    compute = torch.float64 if q.dtype == torch.float64 else torch.float32
    groups = hq // k.shape[1]
    qf = q.to(compute) * scale
    kf = repeat_kv(k, groups).to(compute)
    vf = repeat_kv(v, groups).to(compute)

    shift = torch.zeros(b, hq, tq, 1, dtype=compute, device=q.device)
    denominator = torch.zeros_like(shift)
    acc = torch.zeros(b, hq, tq, d, dtype=compute, device=q.device)
    visible = causal_mask(tq, tk, q.device) if causal else None
    for start in range(0, tk, block_size):
        stop = min(start + block_size, tk)
        scores = qf @ kf[:, :, start:stop].transpose(-1, -2)
        keep = visible[:, start:stop] if causal else torch.ones_like(scores, dtype=torch.bool)
        block_max = scores.masked_fill(~keep, float("-inf")).amax(-1, keepdim=True)
        new_shift = torch.maximum(shift, block_max)
        rescale = torch.exp(shift - new_shift)
        p = (torch.exp(scores - new_shift) - torch.exp(-new_shift)).masked_fill(~keep, 0.0)
        denominator = denominator * rescale + p.abs().sum(-1, keepdim=True)
        acc = acc * rescale + torch.relu(p) @ vf[:, :, start:stop]
        shift = new_shift
    denominator = denominator + eps * torch.exp(-shift)
    out = (acc / denominator).to(q.dtype)
    if return_state:
        return OnlineState(out, shift.squeeze(-1), denominator.squeeze(-1))
    return out
