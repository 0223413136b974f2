"""Solutions to notebook 08 (attention sinks and massive activations)."""

import torch


def bos_attention(w, queries):
    """Per head [H]: the weight on key 0 (BOS), averaged over the (batch, query) positions queries selects."""
    selected = queries[:, None, :].double()  # [B, 1, T], broadcast over the heads
    to_bos = w[..., 0].double()  # [B, H, T]: each query row's weight on key 0, as it is (a zero row adds 0)
    return (to_bos * selected).sum(dim=(0, 2)) / queries.sum()


def first_token_norm_ratio(states):
    """Position 0's state norm over the mean norm of positions 1..T-1, norms averaged over the batch first."""
    norms = states.double().norm(dim=-1)  # [B, ..., T]: one L2 norm per position
    bos = norms[..., 0].mean(dim=0)
    others = norms[..., 1:].mean(dim=-1).mean(dim=0)
    return bos / others


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
