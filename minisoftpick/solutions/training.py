"""Solutions to notebook 07 (training)."""

import math

import torch

from ..model import PARAMETRIC_ATTENTIONS


def count_params(c):
    """Parameters of Transformer(c): embedding, per block attention + SwiGLU + 2 norms (+ per-head scalars),
    final norm, untied head."""
    attention = (
        2 * c.n_heads * c.head_dim * c.d_model + 2 * c.n_kv_heads * c.head_dim * c.d_model
    )  # Wq Wo, Wk Wv
    per_head_scalars = c.n_heads if c.attention in PARAMETRIC_ATTENTIONS else 0  # sink logits, query scales
    block = attention + 3 * c.d_model * c.ffn_hidden + 2 * c.d_model + per_head_scalars
    return c.vocab_size * c.d_model + c.n_layers * block + c.d_model + c.d_model * c.vocab_size


def learning_rate(cfg, step):
    """Linear warmup to cfg.lr over cfg.warmup_steps, then half a cosine down to cfg.min_lr at cfg.max_steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps  # step 0 already trains, at lr / warmup_steps
    decay_steps = max(1, cfg.max_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / decay_steps)  # 0 -> 1, then held at 1
    return cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


def clip_grad_norm(params, max_norm):
    """Scale every gradient in place so that their joint L2 norm is at most max_norm; return the norm before."""
    grads = [p.grad for p in params if p.grad is not None]
    total = torch.sqrt(
        sum((g.double() ** 2).sum() for g in grads)
    )  # one norm over every entry of every gradient
    factor = min(1.0, max_norm / (total.item() + 1e-6))  # never scale up
    for g in grads:
        g.mul_(factor)  # in place: p.grad itself changes
    return total
