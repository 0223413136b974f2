"""The machinery shared by every exercise check.

A check is a function ``check(fn)`` that runs the learner's ``fn`` on seeded random and
adversarial cases, prints one line per property, and raises ``CheckFailed`` on the first failure
with the case, where it differs, yours vs expected, and a hint. It returns the function the
notebook should go on with: the learner's when it passed, the reference solution when the stub
is not written yet (so "Run all" finishes), or the solution when MSP_SOLUTIONS=1 (how CI runs).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
from torch import Tensor


class CheckFailed(AssertionError):
    """An exercise check found a property the learner's function does not have."""


def solutions_mode() -> bool:
    """True when MSP_SOLUTIONS=1: checks then run the reference solution instead of the stub."""
    return os.environ.get("MSP_SOLUTIONS", "0") == "1"


class Report:
    """Prints one line per property of one exercise; ``fail`` raises CheckFailed."""

    def __init__(self, exercise: str):
        self.exercise = exercise
        self.passed = 0

    def ok(self, prop: str) -> None:
        self.passed += 1
        print(f"  \u2713 {prop}")

    def fail(self, prop: str, case: str, detail: str, hint: str) -> None:
        print(f"  \u2717 {prop}")
        raise CheckFailed(f"{self.exercise}: {prop} failed on {case}: {detail}. Hint: {hint}")


def first_difference(yours: Tensor, expected: Tensor, atol: float, rtol: float) -> str | None:
    """None when ``yours`` matches ``expected`` elementwise (NaN never matches), else where and how."""
    if tuple(yours.shape) != tuple(expected.shape):
        return f"shape {tuple(yours.shape)}, expected {tuple(expected.shape)}"
    y = yours.detach().double().cpu()
    e = expected.detach().double().cpu()
    bad = ~torch.isclose(y, e, atol=atol, rtol=rtol) | torch.isnan(y)
    if not bad.any():
        return None
    where = tuple(int(i) for i in bad.nonzero()[0])
    return f"at index {where} yours = {y[where].item():.6g}, expected {e[where].item():.6g} ({int(bad.sum())} of {bad.numel()} entries differ)"


def compare(
    report: Report,
    prop: str,
    case: str,
    yours: object,
    expected: Tensor,
    hint: str,
    atol: float = 1e-5,
    rtol: float = 1e-4,
) -> None:
    """Pass ``prop`` when ``yours`` is a tensor matching ``expected``; else fail with the first difference."""
    if not isinstance(yours, Tensor):
        report.fail(
            prop, case, f"your function returned {type(yours).__name__}, expected a torch.Tensor", hint
        )
    detail = first_difference(yours, expected, atol, rtol)
    if detail is not None:
        report.fail(prop, case, detail, hint)


def run_exercise(name: str, fn: Callable, solution: Callable, properties: Callable[[Callable, Report], None]):
    """Check ``fn`` with ``properties(fn, report)``; return the function the notebook goes on with."""
    if not callable(fn):
        raise TypeError(f"{name}: pass your function itself, e.g. check({name}_fn), got {type(fn).__name__}")
    if solutions_mode():
        print(f"{name}: MSP_SOLUTIONS=1, checking the reference solution")
        fn = solution
    else:
        print(f"{name}: checking your function")
    report = Report(name)
    try:
        properties(fn, report)
    except NotImplementedError:
        print(
            f"  \u2026 not implemented yet: the notebook goes on with the reference solution "
            f"(minisoftpick.solutions.{solution.__name__}). Come back and fill in the stub."
        )
        return solution
    print(f"{name}: all {report.passed} properties hold")
    return fn
