"""Check for the exercise of notebook 07: the learning-rate schedule of the trainer."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from .. import solutions
from .core import Report, compare, run_exercise

if TYPE_CHECKING:  # the trainer is imported when a check runs, not with the package
    from ..train import TrainConfig


def learning_rate(fn: Callable) -> Callable:
    """Check ``fn(cfg, step)``: linear warmup to ``cfg.lr``, then cosine decay to ``cfg.min_lr``."""
    return run_exercise("learning_rate", fn, solutions.learning_rate, _learning_rate_properties)


def _schedule(fn: Callable, cfg: TrainConfig, steps: range, report: Report, prop: str, case: str):
    """``fn``'s learning rates at ``steps`` and the trainer's, as float64 tensors."""
    from .. import train

    yours = []
    for step in steps:
        value = fn(cfg, step)
        if isinstance(value, bool) or not isinstance(value, int | float):
            report.fail(prop, case, f"step {step} returned {type(value).__name__}", "return a Python float")
        yours.append(float(value))
    expected = [train.learning_rate(cfg, step) for step in steps]
    return torch.tensor(yours, dtype=torch.float64), torch.tensor(expected, dtype=torch.float64)


def _learning_rate_properties(fn: Callable, report: Report) -> None:
    from .. import train

    cfg = train.preset("cpu", lr=1e-3, min_lr=1e-4, warmup_steps=10, max_steps=110)
    described = "lr=1e-3, min_lr=1e-4, warmup_steps=10, max_steps=110"
    cases = [
        (
            "warmup rises linearly from lr / warmup_steps",
            range(0, 10),
            "at step s < warmup_steps return lr * (s + 1) / warmup_steps: step 0 already trains",
        ),
        (
            "cosine decay from lr",
            range(10, 110),
            "after warmup, progress = (step - warmup_steps) / (max_steps - warmup_steps) and "
            "lr_t = min_lr + (lr - min_lr) * (1 + cos(pi * progress)) / 2, a cosine rather than a straight line",
        ),
        (
            "ends at min_lr and stays there",
            range(110, 130),
            "at and after max_steps return min_lr, not 0 (clamp progress at 1)",
        ),
    ]
    for prop, steps, hint in cases:
        case = f"{described}, steps {steps.start}..{steps.stop - 1}"
        yours, expected = _schedule(fn, cfg, steps, report, prop, case)
        compare(report, prop, case, yours, expected, hint, atol=1e-12, rtol=1e-9)
        report.ok(prop)

    prop = "every preset's schedule"
    for name in train.PRESETS:
        preset = train.PRESETS[name]
        case = f"the {name} preset, every step"
        yours, expected = _schedule(fn, preset, range(preset.max_steps + 1), report, prop, case)
        compare(
            report, prop, case, yours, expected, "read every number from cfg: nothing hard-coded", 1e-12, 1e-9
        )
    report.ok(prop)
