"""Solutions to notebook 07 (training)."""

import math


def learning_rate(cfg, step):
    """Linear warmup to cfg.lr over cfg.warmup_steps, then half a cosine down to cfg.min_lr at cfg.max_steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps  # step 0 already trains, at lr / warmup_steps
    decay_steps = max(1, cfg.max_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / decay_steps)  # 0 -> 1, then held at 1
    return cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))
