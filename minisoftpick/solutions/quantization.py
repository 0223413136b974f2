"""Solutions to notebook 09 (quantization)."""

import torch


def quantize_rtn(w, bits, group_size=64):
    """Round-to-nearest, asymmetric min-max, per group of group_size consecutive elements of the last dim."""
    levels = 2**bits - 1
    groups = w.float().reshape(*w.shape[:-1], -1, group_size)
    lo = groups.amin(-1, keepdim=True)
    hi = groups.amax(-1, keepdim=True)
    step = (hi - lo) / levels
    step = torch.where(step > 0, step, lo.abs() + (lo == 0))  # a constant group: |lo| (or 1) keeps it exact
    zero = torch.round(-lo / step)  # an integer zero point
    q = torch.clamp(torch.round(groups / step) + zero, 0, levels)
    return ((q - zero) * step).reshape(w.shape).to(w.dtype)


def hqq_zero_step(groups, step, zero, bits, beta, p=0.7):
    """One half-quadratic step of HQQ: shrink the error, then the zero point that fits what is left."""
    q = torch.clamp(torch.round(groups / step + zero), 0, 2**bits - 1)  # levels of the current zero point
    error = groups - step * (q - zero)
    magnitude = error.abs()
    w_e = torch.sign(error) * torch.relu(magnitude - magnitude ** (p - 1) / beta)  # shrink_lp: outliers stay
    return (q - (groups - w_e) / step).mean(-1, keepdim=True)


def quantize_activations(x, bits=8, granularity="per_token"):
    """Symmetric int-bits fake-quant, scale max|x| / (2**(bits-1) - 1) per token (row) or per tensor."""
    qmax = 2 ** (bits - 1) - 1
    xf = x.float() if x.dtype != torch.float64 else x
    if granularity == "per_token":
        amax = xf.abs().amax(-1, keepdim=True)
    else:
        amax = xf.abs().amax()
    step = torch.where(amax > 0, amax / qmax, torch.ones_like(amax))  # a row of zeros: any step keeps it 0
    return (torch.clamp(torch.round(xf / step), -qmax, qmax) * step).to(x.dtype)
