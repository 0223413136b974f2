"""Checks for the Triton exercises of notebook 04: softpick over rows, and a tile of scores.

The learner passes a launcher, a plain Python function that allocates the output and launches their
kernel. Inputs live on the GPU when there is one, else on the CPU for the Triton interpreter. Every
input is a view into a larger buffer filled with a guard value, so a load that forgets its mask reads
the guard (and gives a visibly wrong answer) instead of memory outside the tensor.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .. import solutions
from ..kernels import interpreting, kernel_device
from ..normalizers import softpick as reference_softpick
from .core import Report, compare, run_exercise

_SPARE_ROWS = 32  # guard rows after the last row: more than any block a kernel reads past the end
_GUARD = 1e4  # what an unmasked load finds past the end: a huge score, which also swamps softpick's shift c


def _guarded(x: Tensor, row_stride: int | None = None, guard: float = _GUARD) -> Tensor:
    """A view equal to the 2-D ``x`` with rows ``row_stride`` apart (default: contiguous) inside a buffer
    whose other entries, and ``_SPARE_ROWS`` rows after the last, hold ``guard``."""
    rows, cols = x.shape
    row_stride = cols if row_stride is None else row_stride
    buffer = torch.full(
        ((rows + _SPARE_ROWS) * row_stride,), guard, dtype=torch.float32, device=kernel_device()
    )
    view = buffer.view(-1, row_stride)[:rows, :cols]
    view.copy_(x)
    return view


def softpick_rows(fn: Callable) -> Callable:
    """Check ``fn(x) -> y``: softpick along the rows of a 2-D float32 ``x`` (any row stride, unit column
    stride), returned as a new [n_rows, n_cols] float32 tensor, with the eps 1e-6 of ``msp.softpick``."""
    return run_exercise("softpick_rows", fn, solutions.softpick_rows, _softpick_rows_properties)


def _softpick_rows_properties(fn: Callable, report: Report) -> None:
    g = torch.Generator().manual_seed(4)

    def run(prop: str, case: str, x: Tensor, hint: str, expected: Tensor | None = None) -> None:
        want = reference_softpick(x.double()) if expected is None else expected
        compare(report, prop, case, fn(x), want, hint)
        report.ok(prop)

    x = _guarded(torch.randn(3, 16, generator=g))
    y = fn(x)
    if not isinstance(y, Tensor) or y.shape != x.shape or y.dtype != torch.float32 or y.device != x.device:
        got = f"{tuple(y.shape)} {y.dtype} on {y.device}" if isinstance(y, Tensor) else type(y).__name__
        report.fail(
            "shape and dtype",
            "x = randn(3, 16)",
            f"got {got}, expected (3, 16) torch.float32 on {x.device}",
            "return a new float32 tensor shaped like x, on x's device",
        )
    report.ok("shape and dtype")

    run(
        "matches softpick, n_cols a power of two",
        "x = 3 * randn(4, 16)",
        _guarded(3 * torch.randn(4, 16, generator=g)),
        "y = relu(exp(x) - 1) / (sum_j |exp(x_j) - 1| + 1e-6), with tl.max / tl.sum over the row (axis 0)",
    )

    negative = torch.tensor([[-1000.0, -990.0, -2000.0, -88.0, -5.0, -0.5, 0.0, -3.0]])
    negative = torch.cat([negative, -4 * torch.rand(2, 8, generator=g) - 0.01])
    run(
        "rows of scores <= 0 are all zeros",
        "x = [[-1000, -990, -2000, -88, -5, -0.5, 0, -3], -(4 * rand(2, 8) + 0.01)]",
        _guarded(negative),
        "softpick, not softmax: relu(exp(x) - 1) is 0 wherever x <= 0",
        expected=torch.zeros(3, 8, dtype=torch.float64),
    )

    run(
        "stable for large scores",
        "x = [[500, 400, -3, 80], [90, -100, 89, 0]]",
        _guarded(torch.tensor([[500.0, 400.0, -3.0, 80.0], [90.0, -100.0, 89.0, 0.0]])),
        "exp(90) overflows float32: shift by c = max(m, 0), m the row max: exp(x - c) - exp(-c) over "
        "sum |exp(x - c) - exp(-c)| + 1e-6 * exp(-c)",
    )

    run(
        "masked columns stay out of the denominator",
        "one row, n_cols = 5 (BLOCK = 8)",
        _guarded(torch.tensor([[2.0, -3.0, 1.0, -3.0, 0.5]]), guard=0.0),
        "a masked column loaded as -inf gives exp(-inf - c) - exp(-c) = -exp(-c), and |.| adds it to the "
        "denominator: set masked entries of p to 0 with tl.where(mask, p, 0.0) before the sum",
    )

    run(
        "ragged rows read only their own columns",
        "x = 3 * randn(5, 100), contiguous (BLOCK = 128)",
        _guarded(3 * torch.randn(5, 100, generator=g)),
        "mask the load with cols < n_cols: past a row's end lie the next row and, after the last row, memory "
        "outside x (here the check put 1e4 there, which became the row max and so the shift c)",
    )

    run(
        "any row stride",
        "x = (3 * randn(6, 13)) as a slice of a [6, 21] tensor, x.stride(0) = 21",
        _guarded(3 * torch.randn(6, 13, generator=g), row_stride=21),
        "row r starts at X + r * x_row_stride, not X + r * n_cols: x may be a slice of a wider tensor",
    )


def score_tile(fn: Callable) -> Callable:
    """Check ``fn(q, k, scale) -> s``: s = (q @ k.T) * scale in float32 for float32 q [M, D], k [N, D]
    (any strides), M and N not multiples of the tile and D not a power of two."""
    return run_exercise("score_tile", fn, solutions.score_tile, _score_tile_properties)


def _score_tile_properties(fn: Callable, report: Report) -> None:
    g = torch.Generator().manual_seed(5)
    # fp32 tl.dot is IEEE in the interpreter, TF32 (10-bit mantissa) on a GPU
    tol = {"atol": 1e-4, "rtol": 1e-4} if interpreting() else {"atol": 2e-2, "rtol": 2e-2}

    def run(prop: str, case: str, q: Tensor, k: Tensor, scale: float, hint: str) -> None:
        expected = (q.double() @ k.double().T) * scale
        compare(report, prop, case, fn(q, k, scale), expected, hint, **tol)
        report.ok(prop)

    def qk(m: int, n: int, d: int) -> tuple[Tensor, Tensor]:
        return _guarded(torch.randn(m, d, generator=g)), _guarded(torch.randn(n, d, generator=g))

    q, k = qk(16, 16, 16)
    s = fn(q, k, 1.0)
    if not isinstance(s, Tensor) or s.shape != (16, 16) or s.dtype != torch.float32 or s.device != q.device:
        got = f"{tuple(s.shape)} {s.dtype} on {s.device}" if isinstance(s, Tensor) else type(s).__name__
        report.fail(
            "shape and dtype",
            "q, k = randn(16, 16), randn(16, 16)",
            f"got {got}, expected (16, 16) torch.float32 on {q.device}",
            "return a new float32 [M, N] tensor",
        )
    report.ok("shape and dtype")

    run(
        "one tile, S = Q @ K^T",
        "M = N = D = 16, scale = 1",
        q,
        k,
        1.0,
        "S[i, j] = sum_d Q[i, d] * K[j, d]: load the K tile transposed, as [BLOCK_D, BLOCK_N], then tl.dot(q, k_t)",
    )
    run(
        "scores multiplied by scale",
        "M = N = D = 16, scale = 0.125",
        q,
        k,
        0.125,
        "multiply the tl.dot result by scale",
    )
    run(
        "every tile of the grid",
        "M = N = 48, D = 16: a 3 x 3 grid of 16 x 16 tiles",
        *qk(48, 48, 16),
        0.25,
        "program (i, j) = (tl.program_id(0), tl.program_id(1)) covers rows i * BLOCK_M + tl.arange(0, BLOCK_M) "
        "and columns j * BLOCK_N + tl.arange(0, BLOCK_N)",
    )
    run(
        "ragged M and N",
        "M = 37, N = 21, D = 16",
        *qk(37, 21, 16),
        0.25,
        "mask rows < M and columns < N (rows go with M, columns with N) in the loads and the store",
    )
    run(
        "D not a power of two",
        "M = 20, N = 18, D = 24 (BLOCK_D = 32)",
        *qk(20, 18, 24),
        0.25,
        "load with mask dims < D and other=0.0: the zeros add nothing to the dot product, anything else does",
    )
    q = _guarded(torch.randn(19, 24, generator=g), row_stride=29)
    k = _guarded(torch.randn(24, 22, generator=g), row_stride=25).T
    run(
        "any strides",
        "q a slice with q.stride() = (29, 1), k a transpose with k.stride() = (1, 25); M, N, D = 19, 22, 24",
        q,
        k,
        0.25,
        "address Q[i, d] as Q + i * stride_qm + d * stride_qd and K[j, d] as K + j * stride_kn + "
        "d * stride_kd: never assume a row is D entries long or that a tensor is contiguous",
    )
