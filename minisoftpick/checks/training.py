"""Notebook 07's exercise: the learning-rate schedule of the trainer."""

from __future__ import annotations

import torch

from .. import tolerances
from .core import Exercise, Mismatch, Property, call

DESCRIBED = "lr=1e-3, min_lr=1e-4, warmup_steps=10, max_steps=110"


def schedule(fn, cfg, steps: range) -> torch.Tensor:
    """``fn(cfg, step)`` at every step, as a float64 tensor."""
    values = []
    for step in steps:
        value = fn(cfg, step)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise Mismatch(f"step {step} returned {type(value).__name__}, expected a Python float")
        values.append(float(value))
    return torch.tensor(values, dtype=torch.float64)


def trainer_learning_rate():
    from .. import train  # the trainer loads when the check runs, not with the course

    return train.learning_rate


def trainer_schedule(cfg, steps: range) -> torch.Tensor:
    return schedule(trainer_learning_rate(), cfg, steps)


def small_config(steps: range):
    def inputs(g: torch.Generator):
        from .. import train

        return call(train.preset("cpu", lr=1e-3, min_lr=1e-4, warmup_steps=10, max_steps=110), steps)

    return inputs


def every_preset(g: torch.Generator):
    from .. import train

    return call(list(train.PRESETS.values()))


def every_step(fn, configs) -> torch.Tensor:
    """``fn``'s schedule at every step of every config, one after the other."""
    return torch.cat([schedule(fn, cfg, range(cfg.max_steps + 1)) for cfg in configs])


learning_rate = Exercise(
    name="learning_rate",
    contract="fn(cfg, step) -> float: linear warmup to cfg.lr, then cosine decay to cfg.min_lr",
    reference=trainer_schedule,
    observe=schedule,
    seed=0,
    tolerance=tolerances.SCHEDULE,
    properties=[
        Property(
            "warmup rises linearly from lr / warmup_steps",
            f"{DESCRIBED}, steps 0..9",
            small_config(range(0, 10)),
            "at step s < warmup_steps return lr * (s + 1) / warmup_steps: step 0 already trains",
        ),
        Property(
            "cosine decay from lr",
            f"{DESCRIBED}, steps 10..109",
            small_config(range(10, 110)),
            "after warmup, progress = (step - warmup_steps) / (max_steps - warmup_steps) and lr_t = min_lr + "
            "(lr - min_lr) * (1 + cos(pi * progress)) / 2, a cosine rather than a straight line",
        ),
        Property(
            "ends at min_lr and stays there",
            f"{DESCRIBED}, steps 110..129",
            small_config(range(110, 130)),
            "at and after max_steps return min_lr, not 0 (clamp progress at 1)",
        ),
        Property(
            "every preset's schedule",
            "every preset of the trainer, every step",
            every_preset,
            "read every number from cfg: nothing hard-coded",
            observe=every_step,
            expected=lambda configs: every_step(trainer_learning_rate(), configs),
        ),
    ],
)
