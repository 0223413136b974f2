"""Solutions to notebook 04 (the Triton primer): two kernels and the launchers the checks call.

This module defines @triton.jit kernels, so it is imported lazily (by the checks, or on first use of
``minisoftpick.solutions.softpick_rows``), after ``minisoftpick.kernels`` has set TRITON_INTERPRET=1
on a machine without a GPU.
"""

import torch
import triton
import triton.language as tl

from .. import kernels  # noqa: F401  (sets TRITON_INTERPRET=1 without a GPU, before the kernels below)


@triton.jit
def softpick_rows_kernel(X, Y, n_cols, x_row_stride, y_row_stride, BLOCK: tl.constexpr):
    """One program per row: y = relu(exp(x) - 1) / (sum |exp(x) - 1| + 1e-6), shifted by c = max(m, 0)."""
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    inside = cols < n_cols
    x = tl.load(X + row * x_row_stride + cols, mask=inside, other=-float("inf"))
    c = tl.maximum(tl.max(x, 0), 0.0)
    p = tl.exp(x - c) - tl.exp(-c)  # exp(-c) * (exp(x) - 1), each in [-1, 1]
    p = tl.where(inside, p, 0.0)  # a masked column gives exp(-inf) - exp(-c) = -exp(-c): drop it
    den = tl.sum(tl.abs(p), 0) + 1e-6 * tl.exp(-c)
    tl.store(Y + row * y_row_stride + cols, tl.maximum(p, 0.0) / den, mask=inside)


def softpick_rows(x):
    """Softpick along the last dim of a 2-D float32 tensor (any row stride) with softpick_rows_kernel."""
    n_rows, n_cols = x.shape
    y = torch.empty(n_rows, n_cols, dtype=x.dtype, device=x.device)
    block = triton.next_power_of_2(n_cols)
    softpick_rows_kernel[(n_rows,)](x, y, n_cols, x.stride(0), y.stride(0), BLOCK=block)
    return y


# fmt: off
@triton.jit
def score_tile_kernel(Q, K, S, M, N, D, scale,
                      stride_qm, stride_qd, stride_kn, stride_kd, stride_sm, stride_sn,
                      BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """Program (i, j) writes the tile S[i*BLOCK_M : (i+1)*BLOCK_M, j*BLOCK_N : (j+1)*BLOCK_N] of (Q @ K^T) * scale."""
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    dims = tl.arange(0, BLOCK_D)
    q = tl.load(Q + rows[:, None] * stride_qm + dims[None, :] * stride_qd,
                mask=(rows[:, None] < M) & (dims[None, :] < D), other=0.0)  # [BLOCK_M, BLOCK_D]
    k_t = tl.load(K + dims[:, None] * stride_kd + cols[None, :] * stride_kn,
                  mask=(dims[:, None] < D) & (cols[None, :] < N), other=0.0)  # [BLOCK_D, BLOCK_N]: K^T
    s = tl.dot(q, k_t) * scale
    tl.store(S + rows[:, None] * stride_sm + cols[None, :] * stride_sn, s,
             mask=(rows[:, None] < M) & (cols[None, :] < N))


def score_tile(q, k, scale):
    """S = (q @ k.T) * scale for float32 q [M, D], k [N, D] (any strides), 16 x 16 tiles of S."""
    (m, d), n = q.shape, k.shape[0]
    s = torch.empty(m, n, dtype=torch.float32, device=q.device)
    grid = (triton.cdiv(m, 16), triton.cdiv(n, 16))
    score_tile_kernel[grid](q, k, s, m, n, d, scale, *q.stride(), *k.stride(), *s.stride(),
                            BLOCK_M=16, BLOCK_N=16, BLOCK_D=max(16, triton.next_power_of_2(d)))
    return s
# fmt: on


# fmt: off
@triton.jit
def attention_weights_kernel(Q, K, W, M, N, D, scale,
                             stride_qm, stride_qd, stride_kn, stride_kd, stride_wm, stride_wn,
                             BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """Program i writes rows [i * BLOCK_M, (i + 1) * BLOCK_M) of softpick((Q @ K^T) * scale), all N <= BLOCK_N keys."""
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N)
    dims = tl.arange(0, BLOCK_D)
    q = tl.load(Q + rows[:, None] * stride_qm + dims[None, :] * stride_qd,
                mask=(rows[:, None] < M) & (dims[None, :] < D), other=0.0)
    k_t = tl.load(K + dims[:, None] * stride_kd + cols[None, :] * stride_kn,
                  mask=(dims[:, None] < D) & (cols[None, :] < N), other=0.0)
    s = tl.dot(q, k_t) * scale  # keys past N load as zeros: their scores are exactly 0, weight 0, no effect on c
    c = tl.maximum(tl.max(s, 1), 0.0)
    p = tl.exp(s - c[:, None]) - tl.exp(-c)[:, None]
    den = tl.sum(tl.abs(p), 1) + 1e-6 * tl.exp(-c)
    tl.store(W + rows[:, None] * stride_wm + cols[None, :] * stride_wn, tl.maximum(p, 0.0) / den[:, None],
             mask=(rows[:, None] < M) & (cols[None, :] < N))


def attention_weights(q, k, scale):
    """softpick((q @ k.T) * scale) along the keys for float32 q [M, D], k [N, D] (any strides, N <= 256)."""
    (m, d), n = q.shape, k.shape[0]
    w = torch.empty(m, n, dtype=torch.float32, device=q.device)
    attention_weights_kernel[(triton.cdiv(m, 16),)](q, k, w, m, n, d, scale, *q.stride(), *k.stride(), *w.stride(),
                                                    BLOCK_M=16, BLOCK_N=max(16, triton.next_power_of_2(n)),
                                                    BLOCK_D=max(16, triton.next_power_of_2(d)))
    return w
# fmt: on
