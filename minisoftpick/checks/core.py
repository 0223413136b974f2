"""The exercise runner: an exercise is a contract, a reference solution and a table of properties.

``exercise(fn)`` runs the learner's ``fn`` on each property's seeded inputs, prints one line per
property and raises ``CheckFailed`` on the first failure, naming the case, where the answer differs,
yours vs expected, and a hint. It returns the function the notebook goes on with: the learner's when
every property holds, the reference solution when the stub is unfinished (``NotImplementedError``,
also from inside a Triton kernel), or the solution under MSP_SOLUTIONS=1 (how CI runs the notebooks).
Every run is recorded for ``msp.course.progress()``.
"""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..tolerances import CHECK, Tolerance

Call = tuple[tuple, dict]
PASSED, FAILED, FELL_BACK, SOLUTIONS = (
    "passed",
    "failed",
    "fell back to the reference",
    "reference (MSP_SOLUTIONS=1)",
)
OUTCOMES: dict[str, str] = {}  # exercise name -> the outcome of its last check in this session


class CheckFailed(AssertionError):
    """An exercise check found a property the learner's function does not have."""


class Mismatch(Exception):
    """The learner's answer cannot be compared at all (wrong type, no autograd graph); the message says why."""


def solutions_mode() -> bool:
    """True when MSP_SOLUTIONS=1: checks then run the reference solution instead of the stub."""
    return os.environ.get("MSP_SOLUTIONS", "0") == "1"


def call(*args, **kwargs) -> Call:
    """The arguments a property passes to the learner's function."""
    return args, kwargs


def plain(fn: Callable, *args, **kwargs):
    """The default observation: what ``fn`` returns."""
    return fn(*args, **kwargs)


@dataclass(frozen=True)
class Property:
    """One row of an exercise's table.

    inputs(g) gives the call; observe(fn, *args, **kwargs) what is compared of the learner's function
    (default: the exercise's observer); expected(*args, **kwargs) what it must equal (default: the
    exercise's reference on the inputs in float64). With ``layout`` only shape, dtype and device count.
    """

    name: str
    case: str
    inputs: Callable[[torch.Generator], Call]
    hint: str
    expected: Callable | None = None
    observe: Callable | None = None
    tolerance: Tolerance | None = None  # default: the exercise's
    layout: bool = False


@dataclass(frozen=True)
class Exercise:
    """A check ``exercise(fn)``; ``name`` is also the name of its reference in ``minisoftpick.solutions``."""

    name: str
    contract: str
    reference: Callable
    properties: Sequence[Property]
    seed: int
    observe: Callable = plain
    tolerance: Tolerance = CHECK
    reference_in_float64: bool = True  # False where rounding boundaries make float64 a different answer
    diagnose: Callable[..., str | None] | None = (
        None  # diagnose(fn, *args, **kwargs): a hint for a known mistake
    )

    @property
    def __name__(self) -> str:  # checks are called and named like functions
        return self.name

    @property
    def solution(self) -> Callable:
        return getattr(importlib.import_module("minisoftpick.solutions"), self.name)

    def __call__(self, fn: Callable) -> Callable:
        if not callable(fn):
            raise TypeError(
                f"{self.name}: pass your function itself, e.g. check(my_fn), got {type(fn).__name__}"
            )
        if solutions_mode():
            print(f"{self.name}: MSP_SOLUTIONS=1, checking the reference solution")
            fn = self.solution
        else:
            print(f"{self.name}: checking your function")
        try:
            self._check_signature(fn)
            passed = self._run(fn)
        except CheckFailed:
            OUTCOMES[self.name] = FAILED
            raise
        except Exception as error:
            if not unfinished(error):
                raise
            print(
                f"  \u2026 not implemented yet: the notebook goes on with the reference solution "
                f"(minisoftpick.solutions.{self.name}). Come back and fill in the stub."
            )
            OUTCOMES[self.name] = FELL_BACK
            return self.solution
        OUTCOMES[self.name] = SOLUTIONS if solutions_mode() else PASSED
        print(f"{self.name}: all {passed} properties hold")
        return fn

    def _run(self, fn: Callable) -> int:
        """Check every property in order; consecutive rows of one name print one line. Returns the lines."""
        g = torch.Generator().manual_seed(self.seed)
        lines = 0
        for i, prop in enumerate(self.properties):
            self._check(fn, prop, g)
            if i + 1 == len(self.properties) or self.properties[i + 1].name != prop.name:
                print(f"  \u2713 {prop.name}")
                lines += 1
        return lines

    def _check(self, fn: Callable, prop: Property, g: torch.Generator) -> None:
        args, kwargs = prop.inputs(g)
        if prop.expected is not None:
            expected = prop.expected(*args, **kwargs)
        elif self.reference_in_float64 and not prop.layout:
            expected = self.reference(*map(to_float64, args), **kwargs)
        else:
            expected = self.reference(*args, **kwargs)
        yours = None
        try:
            yours = (prop.observe or self.observe)(fn, *args, **kwargs)
            detail = (
                layout_difference(yours, expected)
                if prop.layout
                else difference(yours, expected, prop.tolerance or self.tolerance)
            )
        except Mismatch as mismatch:
            detail = str(mismatch)
        if detail is not None:
            sharper = self.diagnose(fn, *args, **kwargs) if self.diagnose and not prop.layout else None
            self._fail(prop.name, prop.case, detail, sharper or prop.hint)

    def _check_signature(self, fn: Callable) -> None:
        """Fail in one line unless ``fn`` takes the arguments the solution takes, as the check passes them."""
        wanted = inspect.signature(self.solution)
        try:
            yours = inspect.signature(fn)
        except (TypeError, ValueError):  # a builtin or C function: nothing to read, let the calls decide
            return
        params = wanted.parameters.values()
        required = [p.name for p in params if p.default is p.empty]
        optional = {p.name: p.default for p in params if p.default is not p.empty}
        try:
            yours.bind(*required, **optional)
        except TypeError as error:
            name = getattr(fn, "__name__", "fn")
            name = name if name.isidentifier() else "fn"
            self._fail(
                "signature",
                f"a call with ({', '.join([*required, *(f'{k}=...' for k in optional)])})",
                f"yours is {name}{yours}, expected {name}{wanted} ({error})",
                f"define it as def {name}{wanted}: the check passes the optional arguments by name",
            )

    def _fail(self, prop: str, case: str, detail: str, hint: str) -> None:
        print(f"  \u2717 {prop}")
        raise CheckFailed(f"{self.name}: {prop} failed on {case}: {detail}. Hint: {hint}")


def unfinished(error: BaseException) -> bool:
    """True when ``error`` is, or was caused by, a NotImplementedError (a Triton kernel wraps it)."""
    while error is not None:
        if isinstance(error, NotImplementedError) or (
            type(error).__name__ == "CompilationError" and "NotImplementedError" in str(error)
        ):
            return True
        error = error.__cause__ or error.__context__
    return False


def to_float64(x):
    """A floating tensor as float64 on the CPU (the reference's precision); anything else unchanged."""
    return x.detach().double().cpu() if isinstance(x, Tensor) and x.is_floating_point() else x


def describe(x: object) -> str:
    if isinstance(x, Tensor):
        return f"{tuple(x.shape)} {x.dtype} on {x.device}"
    return type(x).__name__


def layout_difference(yours: object, expected: Tensor) -> str | None:
    """None when ``yours`` is a tensor of ``expected``'s shape, dtype and device, else what differs."""
    if not isinstance(yours, Tensor) or (yours.shape, yours.dtype, yours.device) != (
        expected.shape,
        expected.dtype,
        expected.device,
    ):
        return f"got {describe(yours)}, expected {describe(expected)}"
    return None


def difference(yours: object, expected: Tensor | Sequence[Tensor], tol: Tolerance) -> str | None:
    """None when ``yours`` matches ``expected`` elementwise within ``tol`` (NaN never matches), else where.

    A sequence of tensors (gradients) is compared one by one."""
    if not isinstance(expected, Tensor):
        for i, (y, e) in enumerate(zip(yours, expected, strict=True)):
            if (detail := difference(y, e, tol)) is not None:
                return f"input {i}: {detail}"
        return None
    if not isinstance(yours, Tensor):
        raise Mismatch(f"your function returned {type(yours).__name__}, expected a torch.Tensor")
    if tuple(yours.shape) != tuple(expected.shape):
        return f"shape {tuple(yours.shape)}, expected {tuple(expected.shape)}"
    y, e = (x.detach().double().cpu() for x in (yours, expected))
    bad = ~torch.isclose(y, e, **tol.kwargs()) | torch.isnan(y)
    if not bad.any():
        return None
    where = tuple(int(i) for i in bad.nonzero()[0])
    return (
        f"at index {where} yours = {y[where].item():.6g}, expected {e[where].item():.6g} "
        f"({int(bad.sum())} of {bad.numel()} entries differ)"
    )


def gradients(fn: Callable, *inputs: Tensor, **kwargs) -> tuple[Tensor, ...]:
    """d(sum(fn(*inputs) * w))/d inputs in float64 for a fixed random w (every call uses the same w)."""
    leaves = [x.detach().double().requires_grad_(True) for x in inputs]
    out = fn(*leaves, **kwargs)
    if not isinstance(out, Tensor) or not out.requires_grad:
        raise Mismatch("your output is not connected to the inputs by autograd")
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    grads = torch.autograd.grad((out * w.to(out.dtype)).sum(), leaves, allow_unused=True)
    return tuple(torch.zeros_like(x) if g is None else g for x, g in zip(leaves, grads, strict=True))


def number(fn: Callable, *args, **kwargs) -> Tensor:
    """The observation of a function that returns one number: a Python number or a one-element tensor."""
    value = fn(*args, **kwargs)
    if isinstance(value, Tensor) and value.numel() == 1:
        return value.detach().double().reshape(())
    if isinstance(value, int | float) and not isinstance(value, bool):
        return torch.tensor(float(value), dtype=torch.float64)
    raise Mismatch(f"your function returned {type(value).__name__}, expected a number")


def fixed(data, dtype=torch.float64) -> Callable[[torch.Generator], Call]:
    """Inputs that are one fixed tensor."""
    return lambda g: call(torch.tensor(data, dtype=dtype))


def zeros(x: Tensor, *_, **__) -> Tensor:
    """The expected answer of a case whose answer is all zeros, shaped like its first input."""
    return torch.zeros_like(x, dtype=torch.float64)
