"""The learning-rate exercise check (notebook 07) rejects plausible wrong schedules, accepts right ones."""

import math

import pytest

import minisoftpick as msp
from minisoftpick import solutions, train
from minisoftpick.checks import CheckFailed


def schedule_with(*, warmup_from_zero=False, floor=None, linear=False, hold=True, hard_coded=False):
    """The trainer's schedule with one plausible mistake switched on."""

    def learning_rate(cfg, step):
        warmup, total = (10, 110) if hard_coded else (cfg.warmup_steps, cfg.max_steps)
        lr, min_lr = cfg.lr, cfg.min_lr if floor is None else floor
        if step < warmup:
            return lr * (step if warmup_from_zero else step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        progress = min(1.0, progress) if hold else progress
        shape = 1 - progress if linear else 0.5 * (1 + math.cos(math.pi * progress))
        return min_lr + (lr - min_lr) * shape

    return learning_rate


@pytest.mark.parametrize(
    ("wrong", "property_name"),
    [
        (schedule_with(warmup_from_zero=True), "warmup rises linearly"),
        (schedule_with(floor=0.0), "cosine decay from lr"),
        (schedule_with(linear=True), "cosine decay from lr"),
        (schedule_with(hold=False), "ends at min_lr and stays there"),
        (schedule_with(hard_coded=True), "every preset's schedule"),
        (lambda cfg, step: str(cfg.lr), "warmup rises linearly"),
    ],
)
def test_learning_rate_check_rejects(wrong, property_name, capsys):
    with pytest.raises(CheckFailed, match=property_name) as failure:
        msp.checks.learning_rate(wrong)
    assert "Hint:" in str(failure.value)
    assert any(line.startswith("  \u2717") for line in capsys.readouterr().out.splitlines())


@pytest.mark.parametrize("right", [solutions.learning_rate, train.learning_rate, schedule_with()])
def test_learning_rate_check_accepts(right):
    assert msp.checks.learning_rate(right) is right


def test_unwritten_stub_falls_back_to_the_solution():
    def stub(cfg, step):
        raise NotImplementedError

    assert msp.checks.learning_rate(stub) is solutions.learning_rate
