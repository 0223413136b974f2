"""Solutions to notebook 08 (attention sinks and massive activations)."""

import torch


def sink_rate(weights, threshold=0.3):
    """Fraction of heads, over all layers, whose mean attention to the first token exceeds threshold."""
    sink_heads, heads = 0, 0
    for w in weights:  # one [B, H, T, T] map per layer
        to_first = w[..., 0].mean(dim=(0, 2))  # average over batch and query rows (zero rows count as 0)
        sink_heads += int((to_first > threshold).sum())
        heads += to_first.numel()
    return sink_heads / heads


def kurtosis(x):
    """Pearson kurtosis E[(x - mean)^4] / E[(x - mean)^2]^2 over all elements (3 for a Gaussian)."""
    d = x.double().flatten()
    d = d - d.mean()
    return (torch.mean(d**4) / torch.mean(d**2) ** 2).item()
