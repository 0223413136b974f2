"""Solution to notebook 06: the gradient of softpick attention's scores for one block, in PyTorch."""

import torch


def softpick_score_grad(s, shift, den, dp, delta):
    """dS = exp(s) / D * (1[s > 0] * dP - sign(s) * Delta) for one block of scores (docs/design.md, "Backward").

    s, dp: [M, N] scores and dP = dO @ V^T; shift, den, delta: [M] per row, as the forward saved them
    (c = max(rowmax, 0) and den = D * exp(-c)) and Delta = rowsum(dO * O). exp(s) / D is computed as
    exp(s - c) / den, which never overflows.
    """
    e = torch.exp(s - shift[:, None]) / den[:, None]
    return e * ((s > 0) * dp - torch.sign(s) * delta[:, None])


def attention_roofline(b, h, t, d, mode, peak_flops, bandwidth):
    """(FLOPs, bytes, attainable FLOP/s) of causal bf16 attention [B, H, T, D] on a roofline (notebook 06).

    FLOPs as bench/bench_attention.py counts them: two T x T x D matmuls of 2 FLOPs per multiply-add, half
    of them under the causal mask; forward+backward does 3.5 times the forward's. Bytes: the minimum
    traffic, each of q, k, v, out read or written once (forward), plus dO read and dq, dk, dv written and
    q, k, v, out read again (backward), two bytes each. Attainable: min(peak, intensity * bandwidth).
    """
    forward = 4 * b * h * t * t * d / 2
    flops = forward if mode == "fwd" else 3.5 * forward
    tensors = 4 if mode == "fwd" else 12
    moved = tensors * b * h * t * d * 2
    return flops, moved, min(peak_flops, flops / moved * bandwidth)
