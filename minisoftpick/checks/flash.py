"""Checks for the exercises of notebooks 05 and 06: a flash forward kernel, and the scores' gradient.

``flash_forward`` takes the learner's launcher ``fn(q, k, v, causal=True, scale=None) -> out``. A Triton
kernel cannot take a Python callback, so the learner copies the whole small kernel of notebook 05 into
the notebook, fills in its loop body, and passes the launcher; an unfinished launcher raises
NotImplementedError. Inputs are float32 on the GPU when there is one, else on the CPU for the Triton
interpreter, and tiny (the interpreter is slow); the reference is naive attention in float64.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .. import solutions
from ..attention import naive_attention as reference_attention
from ..kernels import interpreting, kernel_device
from ..normalizers import softpick as reference_softpick
from .attention import qkv_with_scores
from .core import Report, compare, run_exercise


def flash_forward(fn: Callable) -> Callable:
    """Check ``fn(q, k, v, causal=True, scale=None) -> out``: softpick attention of float32 q [B, H, Tq, D],
    k and v [B, H, Tk, D] (D = 16) on the kernel's device, scale defaulting to 1/sqrt(D)."""
    return run_exercise("flash_forward", fn, solutions.flash_forward, _flash_forward_properties)


def _flash_forward_properties(fn: Callable, report: Report) -> None:
    g = torch.Generator().manual_seed(6)
    # fp32 tl.dot is IEEE in the interpreter and TF32 on a GPU unless asked for input_precision="ieee"
    tol = {"atol": 1e-4, "rtol": 1e-4} if interpreting() else {"atol": 5e-3, "rtol": 5e-3}

    def qkv(tq: int, tk: int, heads: int = 1, std: float = 1.0) -> tuple[Tensor, Tensor, Tensor]:
        """float64 q, k, v with D = 16; q and k times std, so scores are about std^2 * N(0, 1)."""
        q = std * torch.randn(1, heads, tq, 16, generator=g, dtype=torch.float64)
        k = std * torch.randn(1, heads, tk, 16, generator=g, dtype=torch.float64)
        return q, k, torch.randn(1, heads, tk, 16, generator=g, dtype=torch.float64)

    def run(prop: str, case: str, q: Tensor, k: Tensor, v: Tensor, hint: str, **kwargs) -> None:
        expected = reference_attention(q, k, v, **kwargs)
        yours = fn(*(x.float().to(kernel_device()) for x in (q, k, v)), **kwargs)
        compare(report, prop, case, yours, expected, hint, **tol)
        report.ok(prop)

    q, k, v = (x.float().to(kernel_device()) for x in qkv(16, 16))
    out = fn(q, k, v)
    if (
        not isinstance(out, Tensor)
        or out.shape != q.shape
        or out.dtype != torch.float32
        or out.device != q.device
    ):
        got = (
            f"{tuple(out.shape)} {out.dtype} on {out.device}"
            if isinstance(out, Tensor)
            else type(out).__name__
        )
        report.fail(
            "shape and dtype",
            "q, k, v = randn(1, 1, 16, 16)",
            f"got {got}, expected {tuple(q.shape)} torch.float32 on {q.device}",
            "return a new float32 tensor shaped like q, on q's device",
        )
    report.ok("shape and dtype")

    run(
        "matches naive attention, several key blocks",
        "non-causal, B = 1, H = 2, Tq = Tk = 48, D = 16, scores about 2 * N(0, 1)",
        *qkv(48, 48, heads=2, std=2**0.5),
        "each key block: c_new = max(c, rowmax(s)), r = exp(c - c_new), p = exp(s - c_new) - exp(-c_new); "
        "rescale BOTH den and acc by r before adding the block's sum |p| and relu(p) @ v",
        causal=False,
    )
    run(
        "uses scale",
        "non-causal, Tq = Tk = 32, scale = 0.7",
        *qkv(32, 32),
        "multiply the dot product q @ k^T by scale (the launcher passes 1/sqrt(D) when scale is None)",
        causal=False,
        scale=0.7,
    )
    run(
        "causal mask, ragged T",
        "causal, H = 2, Tq = Tk = 37 (not a multiple of the block)",
        *qkv(37, 37, heads=2, std=2**0.5),
        "row i sees key j <= i + Tk - Tq; set hidden scores to exactly 0 with tl.where (0, not -inf: "
        "exp(-inf - c) - exp(-c) = -exp(-c) would add |.| to the denominator)",
    )
    run(
        "causal with Tq != Tk is bottom-right aligned",
        "causal, Tq = 5, Tk = 40",
        *qkv(5, 40),
        "offset = Tk - Tq: the last query sees every key; keys past a row's last visible key add nothing",
    )
    run(
        "queries that see no key give zeros",
        "causal, Tq = 20, Tk = 9: the first 11 queries see no key at all",
        *qkv(20, 9),
        "a row that sees no key keeps c = 0, den = 0, acc = 0 and outputs 0 (the loop may not run at all)",
    )

    scores = -3 * torch.rand(20, generator=g, dtype=torch.float64) - 0.01
    run(
        "rows of negative scores give zeros",
        "every score in (-3, 0), causal, T = 20",
        *qkv_with_scores(g, scores, tq=20, d=16),
        "softpick gives scores <= 0 zero weight: relu(p) in the output, |p| in the denominator",
    )

    scores = torch.cat([torch.full((16,), -200.0), 2 * torch.randn(24, generator=g)]).double()
    run(
        "first key block far below zero",
        "non-causal, keys 0-15 score -200, keys 16-39 score 2 * N(0, 1), Tq = 4 (float32)",
        *qkv_with_scores(g, scores, tq=4, d=16),
        "start c at 0 (tl.zeros), not at -inf: shifting by the row max m alone makes exp(-m) overflow in "
        "the first block, and the next block's rescale gives inf * 0 = NaN",
        causal=False,
    )


def softpick_score_grad(fn: Callable) -> Callable:
    """Check ``fn(s, shift, den, dp, delta) -> ds`` for one block of scores s [M, N] (float64), with shift
    c [M], den [M] (forward's saved pair), dp = dO @ V^T [M, N] and delta = rowsum(dO * O) [M]."""
    return run_exercise("softpick_score_grad", fn, solutions.softpick_score_grad, _score_grad_properties)


def _score_grad_case(s: Tensor, g: torch.Generator) -> tuple[tuple[Tensor, ...], Tensor]:
    """fn's inputs for scores s [M, N] and random V, dO, and the gradient autograd finds for s."""
    s = s.detach().requires_grad_(True)
    v = torch.randn(s.shape[1], 8, generator=g, dtype=torch.float64)
    dout = torch.randn(s.shape[0], 8, generator=g, dtype=torch.float64)
    out = reference_softpick(s) @ v
    (expected,) = torch.autograd.grad((out * dout).sum(), s)
    s = s.detach()
    shift = s.amax(-1).clamp_min(0.0)
    floor = torch.exp(-shift)
    den = (torch.exp(s - shift[:, None]) - floor[:, None]).abs().sum(-1) + 1e-6 * floor  # eps term included
    return (s, shift, den, dout @ v.T, (dout * out.detach()).sum(-1)), expected


def _score_grad_properties(fn: Callable, report: Report) -> None:
    g = torch.Generator().manual_seed(7)
    cases = [
        (
            "matches autograd on random scores",
            "s = 2 * randn(6, 10)",
            2 * torch.randn(6, 10, generator=g, dtype=torch.float64),
            "dS_j = exp(s_j) / D * (1[s_j > 0] * dP_j - sign(s_j) * Delta), and exp(s_j) / D = "
            "exp(s_j - c) / den: the saved den already carries the factor exp(-c)",
        ),
        (
            "negative scores get gradient through the denominator",
            "s: one positive score per row, the rest in (-3, 0)",
            torch.cat(
                [
                    torch.rand(4, 1, generator=g, dtype=torch.float64) + 0.5,
                    -3 * torch.rand(4, 7, generator=g, dtype=torch.float64),
                ],
                1,
            ),
            "a negative score has zero weight but moves D = sum |exp(s) - 1|: its gradient is "
            "-exp(s_j) / D * sign(s_j) * Delta = +exp(s_j) / D * Delta, not 0",
        ),
        (
            "scores exactly 0 get zero gradient",
            "s = [[1.2, 0, -0.7, 0, 0.4], [0, 0, 0, 0, 0]] (masked scores are set to 0 in the kernels)",
            torch.tensor([[1.2, 0.0, -0.7, 0.0, 0.4], [0.0] * 5], dtype=torch.float64),
            "at s = 0 both 1[s > 0] and sign(s) are 0: use s > 0 (not >=) and torch.sign",
        ),
        (
            "rows of negative scores give zero gradient",
            "s = -(3 * rand(3, 8) + 0.01)",
            -3 * torch.rand(3, 8, generator=g, dtype=torch.float64) - 0.01,
            "with every weight 0 the output is 0, so Delta = 0 and every term of dS vanishes",
        ),
        (
            "stable for large scores",
            "s = [[800, 790, -3, 5], [60, -900, 0.5, 1]]",
            torch.tensor([[800.0, 790.0, -3.0, 5.0], [60.0, -900.0, 0.5, 1.0]], dtype=torch.float64),
            "exp(800) overflows float64: compute exp(s - c) / den with the saved shift c, never exp(s)",
        ),
    ]
    for prop, case, s, hint in cases:
        inputs, expected = _score_grad_case(s, g)
        compare(report, prop, case, fn(*inputs), expected, hint, atol=1e-8, rtol=1e-6)
        report.ok(prop)
