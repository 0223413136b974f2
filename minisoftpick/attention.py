"""Reference attention: scores, masks and a normalizer, written out with whole T x T matrices.

Layout everywhere in the package: q [B, Hq, Tq, D], k and v [B, Hkv, Tk, D] with Hq a multiple of
Hkv (grouped-query attention: query head h reads key/value head h // (Hq // Hkv)). A causal mask
with Tq != Tk is bottom-right aligned, as in FlashAttention: query i sees keys j <= i + Tk - Tq
(docs/design.md, "Masking"). Every attention entry point (``naive_attention``,
``online_softpick_attention``, ``flash_softpick_attention``) takes (q, k, v, *, causal, scale, eps)
plus what its backend adds, and validates them with ``check_attention_inputs``.

Every size must be at least 1 (an empty q, k or v is a ValueError, for every backend alike). A row
that sees no key (Tq > Tk under a causal mask) gives zeros, as a fully masked row does.
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import torch
from torch import Tensor

from .normalizers import (
    DEFAULT_EPS,
    FLOAT_DTYPES,
    Normalizer,
    check_eps,
    check_mask,
    compute_dtype,
    get_normalizer,
    softpick,
)


class AttentionInputs(NamedTuple):
    """What ``check_attention_inputs`` resolves from its arguments."""

    scale: float  # the given scale, or 1/sqrt(D)
    groups: int  # Hq // Hkv: query heads per key/value head
    eps: float


def check_attention_inputs(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    causal: bool = True,
    scale: float | None = None,
    eps: float = DEFAULT_EPS,
) -> AttentionInputs:
    """Validate the arguments every attention entry point shares; return the resolved scale, GQA group
    size and eps. Raises TypeError (wrong type or dtype) or ValueError (wrong shape, device or value)
    naming the argument and what was expected."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(
                f"{name} must have 4 dims [batch, heads, seq, head_dim], got shape {tuple(t.shape)}"
            )
        if t.dtype not in FLOAT_DTYPES:
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
    if 0 in q.shape or 0 in k.shape:
        raise ValueError(
            f"q, k and v must be non-empty (every size at least 1), got shapes {tuple(q.shape)} and {tuple(k.shape)}"
        )
    if not isinstance(causal, bool):
        raise TypeError(f"causal must be a bool, got {type(causal).__name__}")
    if scale is not None:
        if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
            raise TypeError(f"scale must be None or a real number, got {type(scale).__name__}")
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be positive and finite, got {scale}")
    resolved = 1.0 / math.sqrt(q.shape[3]) if scale is None else float(scale)
    return AttentionInputs(resolved, q.shape[1] // k.shape[1], check_eps(eps))


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
    eps: float = DEFAULT_EPS,
    normalizer: str | Normalizer = "softpick",
    mask: Tensor | None = None,
    return_weights: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Attention out = normalizer(q k^T * scale, mask) @ v, materialising the weights.

    ``scale`` defaults to 1/sqrt(D). ``normalizer`` is a name in ``NORMALIZERS`` or a callable
    ``fn(scores, mask)``; ``eps`` is softpick's and is used when the normalizer is "softpick".
    ``mask`` (bool, broadcastable to [B, Hq, Tq, Tk], True = take part) is combined with the causal
    mask, e.g. for padding. Half precision is computed in fp32 and returned in the input dtype. With
    ``return_weights`` also returns the [B, Hq, Tq, Tk] weights.
    """
    scale, groups, eps = check_attention_inputs(q, k, v, causal=causal, scale=scale, eps=eps)
    if isinstance(normalizer, str) and normalizer == "softpick":

        def normalize(scores: Tensor, mask: Tensor | None) -> Tensor:
            return softpick(scores, eps=eps, mask=mask)

    else:
        normalize = get_normalizer(normalizer)
    compute = compute_dtype(q.dtype)
    kf = repeat_kv(k, groups).to(compute)
    vf = repeat_kv(v, groups).to(compute)
    scores = torch.matmul(q.to(compute), kf.transpose(-1, -2)) * scale
    full_mask = check_mask(mask, scores.shape, q.device)
    if causal:
        hidden_future = causal_mask(q.shape[2], k.shape[2], q.device)
        full_mask = hidden_future if full_mask is None else full_mask & hidden_future
    weights = normalize(scores, full_mask)
    out = torch.matmul(weights, vf).to(q.dtype)
    return (out, weights.to(q.dtype)) if return_weights else out
