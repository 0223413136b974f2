"""Online (flash-style) softpick attention in plain PyTorch: the teaching reference for the kernel.

Keys are visited in blocks; per query row we keep a running shift c (>= 0), a running
denominator and an unnormalised output (docs/design.md, "Online recurrence"):

    c_new = max(c, rowmax(S_blk))                  c starts at 0, so c = max(m, 0) throughout
    r     = exp(c - c_new)
    P~    = exp(S_blk - c_new) - exp(-c_new)
    den   = den * r + rowsum(|P~|)
    O     = O * r + relu(P~) @ V_blk
    out   = O / (den + eps * exp(-c))

Starting c at 0 (not -inf, not the first block's max) is what keeps a first block of scores far
below zero from overflowing exp(-c): the paper's shift by m alone gives inf - inf = NaN there.
Hidden (causally masked) scores are set to 0 before the exponential, as the kernel does: a score
of 0 gets exactly zero weight and gradient (exp(0 - c) - exp(-c) = 0) and never moves c >= 0, and a
huge hidden score never reaches exp.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from .attention import causal_mask, check_attention_inputs, repeat_kv
from .normalizers import DEFAULT_EPS, compute_dtype, divide_or_zero


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
    eps: float = DEFAULT_EPS,
    block_size: int = 64,
    return_state: bool = False,
) -> Tensor | OnlineState:
    """Softpick attention computed one key block at a time; equals ``naive_attention``.

    Never forms the [Tq, Tk] matrix, only [Tq, block_size] tiles. A row that sees no key gives 0,
    for any eps >= 0. With ``return_state`` returns an ``OnlineState`` with the per-row shift and
    denominator as well as the output.
    """
    scale, groups, eps = check_attention_inputs(q, k, v, causal=causal, scale=scale, eps=eps)
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be a positive int, got {block_size!r}")
    b, hq, tq, d = q.shape
    tk = k.shape[2]
    compute = compute_dtype(q.dtype)
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
        if causal:
            scores = scores.masked_fill(~visible[:, start:stop], 0.0)
        new_shift = torch.maximum(shift, scores.amax(-1, keepdim=True))
        rescale = torch.exp(shift - new_shift)
        p = torch.exp(scores - new_shift) - torch.exp(-new_shift)
        denominator = denominator * rescale + p.abs().sum(-1, keepdim=True)
        acc = acc * rescale + torch.relu(p) @ vf[:, :, start:stop]
        shift = new_shift
    denominator = denominator + eps * torch.exp(-shift)
    out = divide_or_zero(acc, denominator).to(q.dtype)  # den = 0 only where no key is seen and eps = 0
    if return_state:
        return OnlineState(out, shift.squeeze(-1), denominator.squeeze(-1))
    return out
