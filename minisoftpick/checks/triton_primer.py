"""Notebook 04's Triton exercises: softpick over rows, and a tile of scores.

The learner passes a launcher, a plain Python function that allocates the output and launches their
kernel. Inputs live on the GPU when there is one, else on the CPU for the Triton interpreter. Every
input is a view into a larger buffer filled with a guard value, so a load that forgets its mask reads
the guard (and gives a visibly wrong answer) instead of memory outside the tensor.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import tolerances
from ..kernels import interpreting, kernel_device
from ..normalizers import softpick as reference_softpick
from .core import Exercise, Property, call, zeros

SPARE_ROWS = 32  # guard rows after the last row: more than any block a kernel reads past the end
GUARD = 1e4  # what an unmasked load finds past the end: a huge score, which also swamps softpick's shift c


def guarded(x: Tensor, row_stride: int | None = None, guard: float = GUARD) -> Tensor:
    """A view equal to the 2-D ``x`` with rows ``row_stride`` apart (default: contiguous) inside a buffer
    whose other entries, and ``SPARE_ROWS`` rows after the last, hold ``guard``."""
    rows, cols = x.shape
    row_stride = cols if row_stride is None else row_stride
    buffer = torch.full(
        ((rows + SPARE_ROWS) * row_stride,), guard, dtype=torch.float32, device=kernel_device()
    )
    view = buffer.view(-1, row_stride)[:rows, :cols]
    view.copy_(x)
    return view


def rows_case(make, row_stride: int | None = None, guard: float = GUARD):
    """Inputs: one guarded x made from ``make(g)``."""
    return lambda g: call(guarded(make(g), row_stride, guard))


def randn(*shape: int, std: float = 1.0):
    return lambda g: std * torch.randn(*shape, generator=g)


NEGATIVE_ROWS = [[-1000.0, -990.0, -2000.0, -88.0, -5.0, -0.5, 0.0, -3.0]]

softpick_rows = Exercise(
    name="softpick_rows",
    contract="fn(x) -> y: softpick along the rows of a 2-D float32 x (any row stride), eps 1e-6, a new tensor",
    reference=reference_softpick,
    seed=4,
    tolerance=tolerances.FLOAT32,
    properties=[
        Property(
            "shape and dtype",
            "x = randn(3, 16)",
            rows_case(randn(3, 16)),
            "return a new float32 tensor shaped like x, on x's device",
            layout=True,
        ),
        Property(
            "matches softpick, n_cols a power of two",
            "x = 3 * randn(4, 16)",
            rows_case(randn(4, 16, std=3.0)),
            "y = relu(exp(x) - 1) / (sum_j |exp(x_j) - 1| + 1e-6), with tl.max / tl.sum over the row (axis 0)",
        ),
        Property(
            "rows of scores <= 0 are all zeros",
            f"x = [{NEGATIVE_ROWS[0]}, -(4 * rand(2, 8) + 0.01)]",
            rows_case(
                lambda g: torch.cat([torch.tensor(NEGATIVE_ROWS), -4 * torch.rand(2, 8, generator=g) - 0.01])
            ),
            "softpick, not softmax: relu(exp(x) - 1) is 0 wherever x <= 0",
            expected=zeros,
        ),
        Property(
            "stable for large scores",
            "x = [[500, 400, -3, 80], [90, -100, 89, 0]]",
            rows_case(lambda g: torch.tensor([[500.0, 400.0, -3.0, 80.0], [90.0, -100.0, 89.0, 0.0]])),
            "exp(90) overflows float32: shift by c = max(m, 0), m the row max: exp(x - c) - exp(-c) over "
            "sum |exp(x - c) - exp(-c)| + 1e-6 * exp(-c)",
        ),
        Property(
            "masked columns stay out of the denominator",
            "one row, n_cols = 5 (BLOCK = 8)",
            rows_case(lambda g: torch.tensor([[2.0, -3.0, 1.0, -3.0, 0.5]]), guard=0.0),
            "a masked column loaded as -inf gives exp(-inf - c) - exp(-c) = -exp(-c), and |.| adds it to the "
            "denominator: set masked entries of p to 0 with tl.where(mask, p, 0.0) before the sum",
        ),
        Property(
            "ragged rows read only their own columns",
            "x = 3 * randn(5, 100), contiguous (BLOCK = 128)",
            rows_case(randn(5, 100, std=3.0)),
            "mask the load with cols < n_cols: past a row's end lie the next row and, after the last row, memory "
            "outside x (here the check put 1e4 there, which became the row max and so the shift c)",
        ),
        Property(
            "any row stride",
            "x = (3 * randn(6, 13)) as a slice of a [6, 21] tensor, x.stride(0) = 21",
            rows_case(randn(6, 13, std=3.0), row_stride=21),
            "row r starts at X + r * x_row_stride, not X + r * n_cols: x may be a slice of a wider tensor",
        ),
    ],
)


def tile_case(m: int, n: int, d: int, scale: float, q_stride: int | None = None, k_stride: int | None = None):
    """Inputs q [m, d], k [n, d], scale; with strides given, q is a slice and k a transpose."""

    def make(g: torch.Generator):
        q = guarded(torch.randn(m, d, generator=g), q_stride)
        if k_stride is None:
            return call(q, guarded(torch.randn(n, d, generator=g)), scale)
        return call(q, guarded(torch.randn(d, n, generator=g), k_stride).T, scale)

    return make


SCORES_TOLERANCE = tolerances.kernel(interpreting(), raw_scores=True)

score_tile = Exercise(
    name="score_tile",
    contract="fn(q, k, scale) -> s = (q @ k.T) * scale in float32, q [M, D] and k [N, D] with any strides",
    reference=lambda q, k, scale: (q @ k.T) * scale,
    seed=5,
    tolerance=SCORES_TOLERANCE,
    properties=[
        Property(
            "shape and dtype",
            "q, k = randn(16, 16), randn(16, 16)",
            tile_case(16, 16, 16, 1.0),
            "return a new float32 [M, N] tensor",
            layout=True,
        ),
        Property(
            "one tile, S = Q @ K^T",
            "M = N = D = 16, scale = 1",
            tile_case(16, 16, 16, 1.0),
            "S[i, j] = sum_d Q[i, d] * K[j, d]: load the K tile transposed, as [BLOCK_D, BLOCK_N], then "
            "tl.dot(q, k_t)",
        ),
        Property(
            "scores multiplied by scale",
            "M = N = D = 16, scale = 0.125",
            tile_case(16, 16, 16, 0.125),
            "multiply the tl.dot result by scale",
        ),
        Property(
            "every tile of the grid",
            "M = N = 48, D = 16: a 3 x 3 grid of 16 x 16 tiles",
            tile_case(48, 48, 16, 0.25),
            "program (i, j) = (tl.program_id(0), tl.program_id(1)) covers rows i * BLOCK_M + tl.arange(0, "
            "BLOCK_M) and columns j * BLOCK_N + tl.arange(0, BLOCK_N)",
        ),
        Property(
            "ragged M and N",
            "M = 37, N = 21, D = 16",
            tile_case(37, 21, 16, 0.25),
            "mask rows < M and columns < N (rows go with M, columns with N) in the loads and the store",
        ),
        Property(
            "D not a power of two",
            "M = 20, N = 18, D = 24 (BLOCK_D = 32)",
            tile_case(20, 18, 24, 0.25),
            "load with mask dims < D and other=0.0: the zeros add nothing to the dot product, anything else does",
        ),
        Property(
            "any strides",
            "q a slice with q.stride() = (29, 1), k a transpose with k.stride() = (1, 25); M, N, D = 19, 22, 24",
            tile_case(19, 22, 24, 0.25, q_stride=29, k_stride=25),
            "address Q[i, d] as Q + i * stride_qm + d * stride_qd and K[j, d] as K + j * stride_kn + "
            "d * stride_kd: never assume a row is D entries long or that a tensor is contiguous",
        ),
    ],
)


def weights_reference(q, k, scale):
    return reference_softpick((q @ k.T) * scale)


WEIGHTS_TOLERANCE = tolerances.kernel(interpreting(), raw_scores=True)

attention_weights = Exercise(
    name="attention_weights",
    contract="fn(q, k, scale) -> softpick((q @ k.T) * scale) along the keys, float32, q [M, D] and k [N, D] with "
    "any strides, N <= 256: one kernel, scores never written to memory",
    reference=weights_reference,
    seed=15,
    tolerance=WEIGHTS_TOLERANCE,
    properties=[
        Property(
            "shape and dtype",
            "q, k = randn(16, 16), randn(16, 16)",
            tile_case(16, 16, 16, 0.25),
            "return a new float32 [M, N] tensor",
            layout=True,
        ),
        Property(
            "one tile: softpick of the scaled scores",
            "M = N = D = 16, scale = 0.5",
            tile_case(16, 16, 16, 0.5),
            "s = tl.dot(q, k_t) * scale as in score_tile, then softpick_rows's shift, p, den and ratio along axis 1",
        ),
        Property(
            "every block of rows",
            "M = 40, N = 16, D = 16 (three programs)",
            tile_case(40, 16, 16, 0.5),
            "program i covers rows i * BLOCK_M + tl.arange(0, BLOCK_M); mask rows < M in the load and the store",
        ),
        Property(
            "ragged keys: N not a power of two",
            "M = 20, N = 21 (BLOCK_N = 32), D = 16",
            tile_case(20, 21, 16, 0.5),
            "load missing keys as zeros (other=0.0): their scores are exactly 0, and softpick gives a score of 0 "
            "weight 0 and nothing in the denominator; a missing key loaded as -inf would add 1 each",
        ),
        Property(
            "any strides, D not a power of two",
            "q a slice with q.stride() = (29, 1), k a transpose with k.stride() = (1, 25); M, N, D = 19, 22, 24",
            tile_case(19, 22, 24, 0.5, q_stride=29, k_stride=25),
            "address with the strides passed in and mask dims < D with other=0.0",
        ),
        Property(
            "stable for large scores",
            "M = N = D = 16, scale = 40 (scores in the hundreds)",
            tile_case(16, 16, 16, 40.0),
            "shift each row by c = max(m, 0): exp(s - c) - exp(-c) never overflows",
        ),
    ],
)
