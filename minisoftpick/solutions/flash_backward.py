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
