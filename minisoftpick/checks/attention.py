"""Checks for the exercises of notebooks 01-03: softpick, naive attention, the online algorithm."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .. import solutions
from ..attention import naive_attention as reference_attention
from ..normalizers import softpick as reference_softpick
from .core import Report, compare, first_difference, run_exercise


def _gradients(
    fn: Callable, *inputs: torch.Tensor, dtype: torch.dtype = torch.float64
) -> list[torch.Tensor] | None:
    """d(sum(fn(*inputs) * w))/d inputs for a fixed random w; None when the output has no autograd graph."""
    leaves = [x.detach().to(dtype).requires_grad_(True) for x in inputs]
    out = fn(*leaves)
    if not isinstance(out, torch.Tensor) or not out.requires_grad:
        return None
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64).to(out.dtype)
    grads = torch.autograd.grad((out * w).sum(), leaves, allow_unused=True)
    return [torch.zeros_like(x) if g is None else g for x, g in zip(leaves, grads, strict=True)]


def _check_gradients(report: Report, case: str, yours, expected, hint: str) -> None:
    if yours is None:
        report.fail("gradient", case, "your output is not connected to the inputs by autograd", hint)
    for i, (y, e) in enumerate(zip(yours, expected, strict=True)):
        compare(report, "gradient", f"{case}, input {i}", y, e, hint)
    report.ok("gradient")


def softpick(fn: Callable) -> Callable:
    """Check ``fn(x, dim=-1)`` against softpick(x) = relu(exp(x) - 1) / (sum |exp(x) - 1| + 1e-6)."""
    return run_exercise("softpick", fn, solutions.softpick, _softpick_properties)


def _softpick_properties(fn: Callable, report: Report) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, generator=g)
    out = fn(x)
    case = "x = torch.randn(3, 5)"
    if not isinstance(out, torch.Tensor) or out.shape != x.shape or out.dtype != x.dtype:
        got = f"{tuple(out.shape)} {out.dtype}" if isinstance(out, torch.Tensor) else type(out).__name__
        report.fail(
            "shape and dtype",
            case,
            f"got {got}, expected {tuple(x.shape)} {x.dtype}",
            "return a tensor shaped like x, in x's dtype",
        )
    report.ok("shape and dtype")

    x = torch.tensor([[1.5, -0.5, 0.0, 2.0, -3.0]], dtype=torch.float64)
    y = fn(x)
    compare(
        report,
        "zero weight where x <= 0",
        "x = [[1.5, -0.5, 0.0, 2.0, -3.0]]",
        y * (x <= 0),
        torch.zeros_like(x),
        "the numerator is relu(exp(x) - 1): scores <= 0 get exactly zero "
        "(softmax gives every key some weight)",
        atol=0.0,
        rtol=0.0,
    )
    report.ok("zero weight where x <= 0")

    x = -torch.rand(2, 6, generator=g, dtype=torch.float64) * 4 - 0.1
    compare(
        report,
        "a row of negative scores is all zeros",
        "x = -(4 * rand(2, 6) + 0.1)",
        fn(x),
        torch.zeros_like(x),
        "softpick rows may sum to less than one: that is how a head attends to nothing",
        atol=1e-12,
    )
    report.ok("a row of negative scores is all zeros")

    x = torch.tensor([[2.0, -3.0, -3.0, -3.0]], dtype=torch.float64)
    compare(
        report,
        "negative scores count in the denominator",
        "x = [[2, -3, -3, -3]]",
        fn(x),
        reference_softpick(x),
        "the denominator is sum |exp(x_j) - 1|: keep the absolute value",
    )
    report.ok("negative scores count in the denominator")

    x = torch.randn(4, 9, generator=g, dtype=torch.float64) * 3
    compare(
        report,
        "matches softpick on random scores",
        "x = 3 * torch.randn(4, 9) (float64)",
        fn(x),
        reference_softpick(x),
        "compare your formula with relu(exp(x) - 1) / (sum |exp(x) - 1| + 1e-6)",
    )
    report.ok("matches softpick on random scores")

    x = torch.randn(3, 4, 5, generator=g, dtype=torch.float64) * 2
    for dim in (0, 1):
        compare(
            report,
            "respects dim",
            f"x = 2 * torch.randn(3, 4, 5), dim={dim}",
            fn(x, dim=dim),
            reference_softpick(x, dim=dim),
            "reduce (amax, sum) along dim with keepdim=True",
        )
    report.ok("respects dim")

    x = torch.tensor([[500.0, 400.0, -3.0, 80.0]], dtype=torch.float32)
    compare(
        report,
        "stable for large scores",
        "x = [[500, 400, -3, 80]] (float32)",
        fn(x),
        reference_softpick(x),
        "exp(500) overflows float32: multiply numerator and denominator by exp(-c) with c = max(max(x), 0)",
    )
    report.ok("stable for large scores")

    x = torch.tensor([[-1000.0, -990.0, -2000.0]], dtype=torch.float32)
    case = "x = [[-1000, -990, -2000]] (float32)"
    hint = (
        "shifting by the row max m alone makes exp(-m) overflow when m << 0: shift by c = max(m, 0) instead"
    )
    compare(report, "stable for scores far below zero", case, fn(x), torch.zeros_like(x), hint)
    grads = _gradients(fn, x, dtype=torch.float32)
    if grads is not None:
        compare(
            report,
            "stable for scores far below zero",
            f"{case}, gradient",
            grads[0],
            torch.zeros_like(x),
            hint,
        )
    report.ok("stable for scores far below zero")

    x = torch.randn(2, 8, generator=g).half() * 4
    y = fn(x)
    if not isinstance(y, torch.Tensor) or y.dtype != torch.float16:
        report.fail(
            "half precision",
            "x = 4 * randn(2, 8) in float16",
            f"got {getattr(y, 'dtype', y)}",
            "return the input dtype; compute in float32 inside",
        )
    compare(
        report,
        "half precision",
        "x = 4 * randn(2, 8) in float16",
        y,
        reference_softpick(x),
        "compute in float32 inside, then cast back",
        atol=2e-3,
        rtol=2e-3,
    )
    report.ok("half precision")

    x = torch.randn(3, 7, generator=g, dtype=torch.float64) * 2
    _check_gradients(
        report,
        "x = 2 * randn(3, 7) (float64), loss = sum(softpick(x) * w)",
        _gradients(fn, x),
        _gradients(reference_softpick, x),
        "build the result from differentiable torch ops (no .detach() or numpy except on the shift c)",
    )


def softpick_jacobian(fn: Callable) -> Callable:
    """Check ``fn(x)`` for a 1-D x: J[i, j] = d softpick(x)_i / d x_j, as torch.autograd finds it."""
    return run_exercise("softpick_jacobian", fn, solutions.softpick_jacobian, _jacobian_properties)


def _jacobian_properties(fn: Callable, report: Report) -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(5, generator=g, dtype=torch.float64)
    out = fn(x)
    if not isinstance(out, torch.Tensor) or out.shape != (5, 5):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        report.fail("shape", "x = torch.randn(5)", f"got {got}, expected (5, 5)", "one row per output p_i")
    report.ok("shape")

    x = torch.tensor([1.5, -0.5, 2.0, -3.0, 0.7], dtype=torch.float64)
    yours = fn(x)
    compare(
        report,
        "rows where x_i <= 0 are zero",
        "x = [1.5, -0.5, 2.0, -3.0, 0.7]",
        yours * (x <= 0)[:, None],
        torch.zeros(5, 5, dtype=torch.float64),
        _jacobian_hint(
            yours,
            x,
            "where x_i <= 0, p_i stays 0 under small changes of x: d relu(e^x_i - 1)/dx_i = 1[x_i > 0] e^x_i",
        ),
        atol=0.0,
        rtol=0.0,
    )
    report.ok("rows where x_i <= 0 are zero")

    cases = [
        (
            "negative scores move the denominator",
            "x = [2, -1, 1, -2.5]",
            torch.tensor([2.0, -1.0, 1.0, -2.5], dtype=torch.float64),
            "d|e^x - 1|/dx = sign(x) e^x: as a negative score rises toward 0 the denominator shrinks",
        ),
        (
            "matches torch.autograd on random scores",
            "x = 2 * randn(7) (float64)",
            2 * torch.randn(7, generator=g, dtype=torch.float64),
            "J = (diag(1[x > 0] e^x) - outer(p, sign(x) e^x)) / D with D = sum |e^x - 1| + 1e-6",
        ),
        (
            "stable for large scores",
            "x = [800, 790, -3, 5] (float64)",
            torch.tensor([800.0, 790.0, -3.0, 5.0], dtype=torch.float64),
            "exp(800) overflows float64: e^x_j / D = e^(x_j - c) / (D e^-c) with c = max(max(x), 0)",
        ),
        (
            "stable for scores far below zero",
            "x = [-1000, -990, -2000] (float64)",
            torch.tensor([-1000.0, -990.0, -2000.0], dtype=torch.float64),
            "shifting by the row max m alone makes exp(-m) overflow when m << 0: use c = max(m, 0)",
        ),
    ]
    for prop, case, x, hint in cases:
        yours = fn(x)
        expected = torch.autograd.functional.jacobian(reference_softpick, x)
        compare(report, prop, case, yours, expected, _jacobian_hint(yours, x, hint))
        report.ok(prop)


def _jacobian_hint(yours: object, x: torch.Tensor, hint: str) -> str:
    """``hint``, or a word on orientation when ``yours`` is softpick's Jacobian at ``x`` transposed."""
    expected = torch.autograd.functional.jacobian(reference_softpick, x)
    transposed = (
        isinstance(yours, torch.Tensor)
        and yours.shape == expected.shape
        and first_difference(yours, expected, atol=1e-5, rtol=1e-4) is not None
        and first_difference(yours.mT, expected, atol=1e-5, rtol=1e-4) is None
    )
    if transposed:
        return "J[i, j] = d p_i / d x_j: rows are outputs, columns are inputs (yours is transposed)"
    return hint


def naive_attention(fn: Callable) -> Callable:
    """Check ``fn(q, k, v, causal=True)`` against softpick attention with scale 1/sqrt(D)."""
    return run_exercise("naive_attention", fn, solutions.naive_attention, _attention_properties)


def _qkv(g: torch.Generator, b: int, h: int, tq: int, tk: int, d: int, std: float = 1.0):
    q = torch.randn(b, h, tq, d, generator=g, dtype=torch.float64) * std
    k = torch.randn(b, h, tk, d, generator=g, dtype=torch.float64) * std
    v = torch.randn(b, h, tk, d, generator=g, dtype=torch.float64)
    return q, k, v


def _attention_properties(fn: Callable, report: Report) -> None:
    g = torch.Generator().manual_seed(1)
    q, k, v = _qkv(g, 2, 3, 6, 6, 8)
    out = fn(q, k, v, causal=True)
    if not isinstance(out, torch.Tensor) or out.shape != q.shape:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        report.fail(
            "shape",
            "q, k, v of shape [2, 3, 6, 8]",
            f"got {got}, expected {tuple(q.shape)}",
            "return weights @ v, shaped like q",
        )
    report.ok("shape")

    q, k, v = qkv_with_scores(g, -torch.rand(6, generator=g, dtype=torch.float64) * 3 - 0.01, tq=6, d=8)
    compare(
        report,
        "rows of negative scores attend to nothing",
        "non-causal, every score < 0",
        fn(q, k, v, causal=False),
        torch.zeros_like(q),
        "softpick, not softmax: an all-negative row has weight zero everywhere, so its output is 0",
        atol=1e-12,
    )
    report.ok("rows of negative scores attend to nothing")

    # Query 0 sees only key 0 (score 2); key 1 scores exactly 0 for it, so an off-by-one mask changes
    # nothing here, but each masked key counted in the denominator adds 1.
    q, k, v = _qkv(g, 1, 1, 5, 5, 4)
    q0 = q[0, 0, 0]
    k[0, 0, 0] = q0 * 2 * 2 / q0.norm() ** 2  # q0.k0 / sqrt(4) = 2
    k[0, 0, 1] -= (k[0, 0, 1] @ q0) / q0.norm() ** 2 * q0
    row0 = fn(q, k, v, causal=True)[..., 0, :]
    if isinstance(row0, torch.Tensor) and torch.all(row0 == 0):
        report.fail(
            "causal mask",
            "causal, query 0 sees only key 0 (score 2)",
            "query 0 attends to nothing",
            "query i sees keys j <= i: the diagonal is included",
        )
    compare(
        report,
        "masked keys stay out of the denominator",
        "causal, query 0 sees only key 0",
        row0,
        reference_attention(q, k, v)[..., 0, :],
        "exp(-inf) - 1 = -1 adds 1 per masked key to sum |exp(s) - 1|: zero masked entries before summing",
    )
    report.ok("masked keys stay out of the denominator")

    q, k, v = _qkv(g, 1, 2, 6, 6, 64)
    unscaled = reference_attention(q, k, v, causal=False, scale=1.0)
    yours = fn(q, k, v, causal=False)
    if isinstance(yours, torch.Tensor) and yours.shape == unscaled.shape and torch.allclose(yours, unscaled):
        report.fail(
            "scores scaled by 1/sqrt(D)",
            "causal=False, D = 64",
            "your output equals the unscaled one",
            "divide q @ k^T by sqrt(D)",
        )
    compare(
        report,
        "scores scaled by 1/sqrt(D)",
        "causal=False, D = 64",
        yours,
        reference_attention(q, k, v, causal=False),
        "divide q @ k^T by sqrt(D) before softpick",
    )
    report.ok("scores scaled by 1/sqrt(D)")

    q, k, v = _qkv(g, 2, 2, 7, 7, 8, std=1.5)
    compare(
        report,
        "causal mask",
        "causal=True, T = 7",
        fn(q, k, v, causal=True),
        reference_attention(q, k, v),
        "query i sees keys j <= i (the diagonal included)",
    )
    report.ok("causal mask")

    q, k, v = _qkv(g, 1, 2, 3, 8, 8, std=1.5)
    compare(
        report,
        "Tq != Tk, bottom-right causal mask",
        "Tq = 3, Tk = 8",
        fn(q, k, v, causal=True),
        reference_attention(q, k, v),
        "query i sees keys j <= i + Tk - Tq (the last query sees every key)",
    )
    report.ok("Tq != Tk, bottom-right causal mask")

    q, k, v = _qkv(g, 1, 1, 4, 4, 8, std=1.5)
    _check_gradients(
        report,
        "d loss / d (q, k, v), causal, T = 4",
        _gradients(lambda a, b, c: fn(a, b, c), q, k, v),
        _gradients(reference_attention, q, k, v),
        "use differentiable torch ops only",
    )


def online_softpick_attention(fn: Callable) -> Callable:
    """Check ``fn(q, k, v, causal=True, block_size=16)`` against naive softpick attention."""
    return run_exercise(
        "online_softpick_attention", fn, solutions.online_softpick_attention, _online_properties
    )


def _online_properties(fn: Callable, report: Report) -> None:
    g = torch.Generator().manual_seed(2)
    q, k, v = _qkv(g, 2, 2, 20, 20, 8, std=1.5)
    expected = reference_attention(q, k, v)
    for block in (1, 7, 16, 64):
        compare(
            report,
            "equals naive attention for every block size",
            f"causal, T = 20, block_size={block}",
            fn(q, k, v, causal=True, block_size=block),
            expected,
            "rescale both the running denominator and the output by r = exp(c_old - c_new)",
        )
    report.ok("equals naive attention for every block size")

    q, k, v = _qkv(g, 1, 2, 5, 13, 8)
    compare(
        report,
        "non-causal and Tq != Tk",
        "causal=False, Tq = 5, Tk = 13, block_size=4",
        fn(q, k, v, causal=False, block_size=4),
        reference_attention(q, k, v, causal=False),
        "without a causal mask every key counts",
    )
    compare(
        report,
        "non-causal and Tq != Tk",
        "causal=True, Tq = 5, Tk = 13, block_size=4",
        fn(q, k, v, causal=True, block_size=4),
        reference_attention(q, k, v),
        "query i sees keys j <= i + Tk - Tq; blocks past a row's last key must add nothing",
    )
    report.ok("non-causal and Tq != Tk")

    scores = torch.tensor([-200.0] * 6 + [0.5, 1.0, 2.0, -1.0, 0.3, 1.5], dtype=torch.float64)
    q, k, v = qkv_with_scores(g, scores, tq=4, d=8)
    compare(
        report,
        "first key block far below zero",
        "non-causal, keys 0-5 score -200, later keys up to 2, block_size=6 (float32)",
        fn(q.float(), k.float(), v.float(), causal=False, block_size=6),
        reference_attention(q, k, v, causal=False),
        "start the running shift c at 0, not at the first block's max: exp(-m) overflows when m << 0",
        atol=1e-4,
    )
    report.ok("first key block far below zero")

    q, k, v = qkv_with_scores(g, -torch.rand(9, generator=g, dtype=torch.float64) * 3 - 0.01, tq=9, d=8)
    compare(
        report,
        "rows of negative scores give zeros",
        "every score < 0, causal, block_size=4",
        fn(q, k, v, causal=True, block_size=4),
        torch.zeros_like(q),
        "an all-negative row has no positive numerator: its output is 0",
        atol=1e-12,
    )
    report.ok("rows of negative scores give zeros")


def qkv_with_scores(g: torch.Generator, scores: torch.Tensor, tq: int, d: int):
    """q, k, v [1, 1, T, d] where every query's scaled score for key j is exactly scores[j]."""
    q = torch.zeros(1, 1, tq, d, dtype=torch.float64)
    q[..., 0] = 1.0
    k = torch.zeros(1, 1, len(scores), d, dtype=torch.float64)
    k[..., 0] = scores * math.sqrt(d)
    v = torch.randn(1, 1, len(scores), d, generator=g, dtype=torch.float64)
    return q, k, v
