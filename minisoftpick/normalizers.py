"""Attention normalizers: functions that turn a row of scores into attention weights.

Every normalizer has the signature ``fn(scores, mask) -> weights`` where ``scores`` is float
``[..., Tk]`` and ``mask`` is a bool tensor broadcastable to it (True = the key takes part) or
None. Masked keys get weight exactly 0 and never enter a denominator; a row with no unmasked key
gives all zeros (never NaN). ``NORMALIZERS`` maps names to these functions; ``naive_attention``
and the model look normalizers up there, and ``register_normalizer`` adds one.

Softpick (arXiv 2504.20966, eq. 2):

    softpick(x)_i = relu(exp(x_i) - 1) / (sum_j |exp(x_j) - 1| + eps)

computed in the stable form: with c = max(m, 0), m the row max over unmasked entries, numerator
and denominator are multiplied by exp(-c) so every term lies in [-1, 1].
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

Normalizer = Callable[[Tensor, "Tensor | None"], Tensor]
NORMALIZERS: dict[str, Normalizer] = {}

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def register_normalizer(name: str) -> Callable[[Normalizer], Normalizer]:
    """Decorator adding ``fn(scores, mask) -> weights`` to ``NORMALIZERS`` under ``name``."""

    def add(fn: Normalizer) -> Normalizer:
        if name in NORMALIZERS:
            raise ValueError(f"normalizer {name!r} is already registered")
        NORMALIZERS[name] = fn
        return fn

    return add


def get_normalizer(normalizer: str | Normalizer) -> Normalizer:
    """The normalizer called ``normalizer`` (or ``normalizer`` itself when it is callable)."""
    if callable(normalizer):
        return normalizer
    if normalizer not in NORMALIZERS:
        raise ValueError(f"normalizer must be one of {sorted(NORMALIZERS)} or a callable, got {normalizer!r}")
    return NORMALIZERS[normalizer]


def _prepare(x: Tensor, dim: int, mask: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """Validate ``x``/``dim``/``mask``; return x in fp32 (or fp64) and the mask broadcast to x."""
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"x must be a floating tensor (float16, bfloat16, float32, float64), got {x.dtype}")
    if x.dim() == 0:
        raise ValueError("x must have at least one dimension, got a scalar")
    if not -x.dim() <= dim < x.dim():
        raise ValueError(
            f"dim must be in [{-x.dim()}, {x.dim() - 1}] for x of shape {tuple(x.shape)}, got {dim}"
        )
    if mask is not None:
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
            raise TypeError(
                f"mask must be a bool tensor (True = take part), got {getattr(mask, 'dtype', type(mask))}"
            )
        if mask.device != x.device:
            raise ValueError(f"mask must be on x's device {x.device}, got {mask.device}")
        try:
            mask = mask.expand_as(x)
        except RuntimeError:
            raise ValueError(
                f"mask of shape {tuple(mask.shape)} must broadcast to x's shape {tuple(x.shape)}"
            ) from None
    return (x if x.dtype == torch.float64 else x.float()), mask


def softpick(x: Tensor, dim: int = -1, eps: float = 1e-6, mask: Tensor | None = None) -> Tensor:
    """Softpick along ``dim``: relu(exp(x) - 1) / (sum |exp(x) - 1| + eps), stable and masked.

    Rows need not sum to one: the sum lies in [0, 1] and a row of scores <= 0 is all zeros.
    ``mask`` (bool, True = take part) removes entries from numerator and denominator. Half
    precision is computed in fp32 and returned in the input dtype. Differentiable everywhere
    (the shift c = max(m, 0) cancels exactly, so it is treated as a constant).
    """
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    xf, mask = _prepare(x, dim, mask)
    if mask is not None:
        xf = xf.masked_fill(~mask, float("-inf"))
    # c = max(m, 0); a fully masked row has m = -inf and gets c = 0.
    c = xf.detach().amax(dim, keepdim=True).clamp_min(0.0)
    exp_neg_c = torch.exp(-c)
    shifted = torch.exp(xf - c) - exp_neg_c  # = exp(-c) * (exp(x) - 1), each in [-1, 1]
    if mask is not None:
        shifted = shifted.masked_fill(~mask, 0.0)  # exp(-inf) - 1 = -1 must not reach the sum
    denominator = shifted.abs().sum(dim, keepdim=True) + eps * exp_neg_c
    out = torch.relu(shifted) / denominator
    if eps == 0:
        out = torch.nan_to_num(out, nan=0.0)  # all-zero rows are 0/0 without eps
    return out.to(x.dtype)


def masked_softmax(x: Tensor, dim: int = -1, mask: Tensor | None = None) -> Tensor:
    """Softmax along ``dim`` over unmasked entries; fully masked rows give zeros instead of NaN."""
    xf, mask = _prepare(x, dim, mask)
    if mask is None:
        return torch.softmax(xf, dim).to(x.dtype)
    m = xf.masked_fill(~mask, float("-inf")).amax(dim, keepdim=True).detach()
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    e = torch.exp(xf - m).masked_fill(~mask, 0.0)
    s = e.sum(dim, keepdim=True)
    return (e / torch.where(s > 0, s, torch.ones_like(s))).to(x.dtype)


def softmax1(x: Tensor, dim: int = -1, mask: Tensor | None = None) -> Tensor:
    """Off-by-one softmax exp(x_i) / (1 + sum_j exp(x_j)): an implicit zero-logit sink.

    Stable form: with c = max(m, 0), exp(x_i - c) / (exp(-c) + sum_j exp(x_j - c)).
    """
    return sink_softmax(x, torch.zeros((), dtype=x.dtype, device=x.device), dim=dim, mask=mask)


def sink_softmax(x: Tensor, sink: Tensor, dim: int = -1, mask: Tensor | None = None) -> Tensor:
    """Softmax with an extra sink logit per head: exp(x_i) / (exp(s) + sum_j exp(x_j)).

    ``sink`` broadcasts against ``x`` with ``dim`` reduced (e.g. shape [H, 1, 1] for scores
    [B, H, Tq, Tk]), as in gpt-oss's learnable attention sinks. The weight that would have gone
    to the sink is dropped, so rows sum to less than one.
    """
    xf, mask = _prepare(x, dim, mask)
    if mask is not None:
        xf = xf.masked_fill(~mask, float("-inf"))
    s = sink.to(xf.dtype)
    c = torch.maximum(xf.amax(dim, keepdim=True), s).detach()
    e = torch.exp(xf - c)
    return (e / (e.sum(dim, keepdim=True) + torch.exp(s - c))).to(x.dtype)


register_normalizer("softpick")(lambda scores, mask: softpick(scores, mask=mask))
register_normalizer("softmax")(lambda scores, mask: masked_softmax(scores, mask=mask))
register_normalizer("softmax1")(lambda scores, mask: softmax1(scores, mask=mask))
