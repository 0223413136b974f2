"""Reference attention: scores, masks and a normalizer, written out with whole T x T matrices.

Layout everywhere in the package: q [B, Hq, Tq, D], k and v [B, Hkv, Tk, D] with Hq a multiple of
Hkv (grouped-query attention: query head h reads key/value head h // (Hq // Hkv)). A causal mask
with Tq != Tk is bottom-right aligned, as in FlashAttention: query i sees keys j <= i + Tk - Tq.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .normalizers import Normalizer, get_normalizer

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_attention_inputs(q: Tensor, k: Tensor, v: Tensor) -> None:
    """Raise ValueError/TypeError naming the argument when q, k, v do not fit the layout above."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(
                f"{name} must have 4 dims [batch, heads, seq, head_dim], got shape {tuple(t.shape)}"
            )
        if t.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"{name} must be float16, bfloat16, float32 or float64, got {t.dtype}")
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise TypeError(f"q, k and v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if k.device != q.device or v.device != q.device:
        raise ValueError(f"q, k and v must be on one device, got {q.device}, {k.device}, {v.device}")
    if k.shape != v.shape:
        raise ValueError(f"k and v must have the same shape, got {tuple(k.shape)} and {tuple(v.shape)}")
    if k.shape[0] != q.shape[0]:
        raise ValueError(f"k must have q's batch size {q.shape[0]}, got {k.shape[0]}")
    if k.shape[3] != q.shape[3]:
        raise ValueError(f"k must have q's head_dim {q.shape[3]}, got {k.shape[3]}")
    if k.shape[1] == 0 or q.shape[1] % k.shape[1] != 0:
        raise ValueError(
            f"q's head count ({q.shape[1]}) must be a multiple of k's head count ({k.shape[1]}) for grouped-query attention"
        )


def causal_mask(tq: int, tk: int, device: torch.device | str | None = None) -> Tensor:
    """Bool [tq, tk], True where query i may see key j: j <= i + tk - tq (bottom-right aligned)."""
    rows = torch.arange(tq, device=device)[:, None]
    cols = torch.arange(tk, device=device)[None, :]
    return cols <= rows + (tk - tq)


def repeat_kv(x: Tensor, groups: int) -> Tensor:
    """[B, Hkv, T, D] -> [B, Hkv * groups, T, D], each key/value head repeated for its query group."""
    return x if groups == 1 else x.repeat_interleave(groups, dim=1)


def naive_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    causal: bool = True,
    scale: float | None = None,
    normalizer: str | Normalizer = "softpick",
    mask: Tensor | None = None,
    return_weights: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Attention out = normalizer(q k^T * scale, mask) @ v, materialising the weights.

    ``scale`` defaults to 1/sqrt(D). ``normalizer`` is a name in ``NORMALIZERS`` or a callable
    ``fn(scores, mask)``. ``mask`` (bool, broadcastable to [B, Hq, Tq, Tk], True = take part) is
    combined with the causal mask, e.g. for padding. Half precision is computed in fp32 and
    returned in the input dtype. With ``return_weights`` also returns the [B, Hq, Tq, Tk] weights.
    """
    check_attention_inputs(q, k, v)
    normalize = get_normalizer(normalizer)
    tq, tk, d = q.shape[2], k.shape[2], q.shape[3]
    if scale is None:
        scale = 1.0 / math.sqrt(d)
    groups = q.shape[1] // k.shape[1]
    compute = torch.float64 if q.dtype == torch.float64 else torch.float32
    kf = repeat_kv(k, groups).to(compute)
    vf = repeat_kv(v, groups).to(compute)
    scores = torch.matmul(q.to(compute), kf.transpose(-1, -2)) * scale
    full_mask = causal_mask(tq, tk, q.device) if causal else None
    if mask is not None:
        if mask.dtype != torch.bool:
            raise TypeError(f"mask must be a bool tensor (True = take part), got {mask.dtype}")
        try:
            torch.broadcast_shapes(mask.shape, scores.shape)
        except RuntimeError:
            raise ValueError(
                f"mask of shape {tuple(mask.shape)} must broadcast to [B, Hq, Tq, Tk] = {tuple(scores.shape)}"
            ) from None
        full_mask = mask if full_mask is None else mask & full_mask
    weights = normalize(scores, full_mask)
    out = torch.matmul(weights, vf).to(q.dtype)
    return (out, weights.to(q.dtype)) if return_weights else out
