"""What the paper measures on trained models: attention sinks, sparsity and massive activations.

- Sink rate (Gu et al., ICLR 2025, "When Attention Sink Emerges in Language Models"): a head is a
  sink head when its attention to the first token, averaged over query positions and batch,
  exceeds a threshold (0.3); the sink rate is the fraction of sink heads over all layers. A query
  row that attends nowhere (softpick can give all zeros) adds 0 to that average: it is no sink.
- Attention sparsity: the fraction of the causal triangle (diagonal included) whose weight is at
  most ``tol``. Softmax weights are never exactly 0; softpick's are for every score <= 0.
- Pearson kurtosis E[(x - mu)^4] / E[(x - mu)^2]^2 over all elements (3 for a Gaussian, much more
  when a few features carry massive activations) and max |x|, of the hidden states.

Attention maps are [B, H, Tq, Tk] tensors, one per layer (``Capture.attn``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .attention import causal_mask


def _check_maps(weights: Sequence[Tensor]) -> None:
    if isinstance(weights, Tensor) or not isinstance(weights, Sequence) or len(weights) == 0:
        raise TypeError("weights must be a non-empty list of attention maps [B, H, Tq, Tk], one per layer")
    for layer, w in enumerate(weights):
        if not isinstance(w, Tensor) or w.dim() != 4 or not w.is_floating_point():
            got = f"shape {tuple(w.shape)} {w.dtype}" if isinstance(w, Tensor) else type(w).__name__
            raise ValueError(f"weights[{layer}] must be a float tensor [B, H, Tq, Tk], got {got}")
        if not torch.isfinite(w).all():
            raise ValueError(f"weights[{layer}] has NaN or inf entries")


def first_token_attention(w: Tensor) -> Tensor:
    """Per head [H]: the weight on key 0, averaged over batch and every query row (zero rows count)."""
    return w[..., 0].double().mean(dim=(0, 2))


def sink_rate(weights: Sequence[Tensor], threshold: float = 0.3) -> float:
    """The fraction of heads over all layers whose ``first_token_attention`` exceeds ``threshold``."""
    _check_maps(weights)
    per_head = torch.cat([first_token_attention(w) for w in weights])
    return (per_head > threshold).double().mean().item()


def _zeros_per_head(w: Tensor, tol: float) -> tuple[Tensor, int]:
    """Per head [H]: how many causal entries (diagonal included) have weight <= tol; how many there are."""
    inside = causal_mask(w.shape[-2], w.shape[-1], w.device)
    return ((w <= tol) & inside).sum(dim=(0, 2, 3)), int(inside.sum()) * w.shape[0]


def zero_fraction(w: Tensor, tol: float = 1e-5) -> Tensor:
    """Per head [H]: the fraction of causal entries (diagonal included) with weight <= ``tol``."""
    zeros, entries = _zeros_per_head(w, tol)
    return zeros.double() / entries


def attention_sparsity(weights: Sequence[Tensor], tol: float = 1e-5) -> float:
    """The fraction of entries inside the causal triangle, over all layers, whose weight is <= ``tol``."""
    _check_maps(weights)
    counts = [_zeros_per_head(w, tol) for w in weights]
    return sum(zeros.sum().item() for zeros, _ in counts) / sum(
        entries * len(zeros) for zeros, entries in counts
    )


def kurtosis(x: Tensor) -> float:
    """Pearson kurtosis E[(x - mu)^4] / E[(x - mu)^2]^2 over all elements of x (population moments)."""
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.numel() < 2:
        raise ValueError("x must be a float tensor with at least 2 elements")
    centred = x.detach().double().flatten()
    centred = centred - centred.mean()
    variance = centred.pow(2).mean()
    if variance == 0:
        raise ValueError("x is constant: its kurtosis is undefined")
    return (centred.pow(4).mean() / variance**2).item()


def max_abs(x: Tensor) -> float:
    """The largest |activation| in x."""
    return x.detach().abs().max().item()
