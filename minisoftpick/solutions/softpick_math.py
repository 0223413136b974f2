"""Solutions to notebook 01 (the softpick math)."""

import torch


def softpick(x, dim=-1):
    """relu(exp(x) - 1) / (sum |exp(x) - 1| + eps), shifted by c = max(max(x), 0) for stability."""
    xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    c = xf.amax(dim, keepdim=True).clamp(min=0).detach()
    e = torch.exp(xf - c) - torch.exp(-c)
    out = torch.relu(e) / (e.abs().sum(dim, keepdim=True) + 1e-6 * torch.exp(-c))
    return out.to(x.dtype)


def softpick_jacobian(x):
    """J[i, j] = d p_i / d x_j for a 1-D x: (diag(1[x > 0] e^x) - outer(p, sign(x) e^x)) / D."""
    c = x.max().clamp(min=0).detach()
    e = torch.exp(x - c)  # e^x, scaled by e^-c like the denominator below
    den = (e - torch.exp(-c)).abs().sum() + 1e-6 * torch.exp(-c)  # D e^-c
    p = softpick(x)
    return (torch.diag((x > 0) * e) - torch.outer(p, torch.sign(x) * e)) / den


def softpick_vjp(x, grad):
    """dL/dx for p = softpick(x) along the last dim and grad = dL/dp, without building J (notebook 01):
    e^x / D * (1[x > 0] * grad - sign(x) * Delta), Delta = sum(grad * p), e^x / D = e^(x - c) / (D e^-c)."""
    c = x.amax(-1, keepdim=True).clamp(min=0)
    e = torch.exp(x - c)
    den = (e - torch.exp(-c)).abs().sum(-1, keepdim=True) + 1e-6 * torch.exp(-c)  # D e^-c
    p = torch.relu(e - torch.exp(-c)) / den
    delta = (grad * p).sum(-1, keepdim=True)
    return e / den * ((x > 0) * grad - torch.sign(x) * delta)
