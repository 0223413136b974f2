"""Solutions to notebook 10 (long context)."""

import math

import torch


def passkey_exact_match(logits, y):
    """The fraction of sequences whose greedy prediction is right at every position y scores."""
    scored = y != -100  # only the passkey digits are scored; -100 marks everything else
    right = (logits.argmax(-1) == y) | ~scored  # logits[:, t] already predicts y[:, t] = x[:, t + 1]
    return right.all(-1).float().mean().item()  # a sequence counts only when every digit is right


def log_position_scale(query_scale, tq, tk=None):
    """s_h * log(p + 2) [H, tq, 1], p = i + tk - tq the position of query i (bottom-right aligned)."""
    tk = tq if tk is None else tk
    positions = torch.arange(tq, dtype=torch.float32) + (tk - tq)
    return query_scale[:, None, None] * torch.log(positions + 2)[None, :, None]  # natural log, log 2 at p = 0


def learnable_sink(scores, mask, sink):
    """exp(x_i) / (exp(s_h) + sum_j exp(x_j)) over the visible keys, shifted by c = max(m, s_h)."""
    x = scores if mask is None else scores.masked_fill(~mask, -math.inf)
    c = torch.maximum(x.amax(-1, keepdim=True), sink.to(x.dtype)).detach()  # finite even with no key
    e = torch.exp(x - c)  # exactly 0 for hidden keys
    return e / (e.sum(-1, keepdim=True) + torch.exp(sink - c))
