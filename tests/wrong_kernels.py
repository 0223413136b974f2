"""Plausible wrong Triton kernels for notebooks 04, 05 and 06's checks, and right ones, for tests/test_checks.py.

Each exercise's wrong kernels are one kernel with constexpr switches, each switch one mistake, run through
the Triton interpreter on the CPU (or on the GPU when there is one) at the checks' tiny sizes. They keep
their stores masked: an unmasked store would write past the output for real.
"""

# isort: off
import inspect

import minisoftpick.kernels  # noqa: F401  (sets TRITON_INTERPRET=1 without a GPU, before the kernels below)
import torch
import triton
import triton.language as tl
# isort: on

import minisoftpick as msp
from minisoftpick import solutions

# ---- 04 softpick_rows: fn(x) -> y ----------------------------------------------------------------


# fmt: off
@triton.jit
def softpick_rows_variant(X, Y, n_cols, x_row_stride, y_row_stride, BLOCK: tl.constexpr,
                          MASK_LOAD: tl.constexpr, OTHER: tl.constexpr, DROP_MASKED: tl.constexpr, SHIFT: tl.constexpr,
                          USE_STRIDE: tl.constexpr, RELU: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    inside = cols < n_cols
    start = X + row * (x_row_stride if USE_STRIDE else n_cols)
    x = tl.load(start + cols, mask=inside, other=OTHER) if MASK_LOAD else tl.load(start + cols)
    c = tl.maximum(tl.max(x, 0), 0.0) if SHIFT else 0.0
    p = tl.exp(x - c) - tl.exp(-c)
    if DROP_MASKED:
        p = tl.where(inside, p, 0.0)
    den = tl.sum(tl.abs(p), 0) + 1e-6 * tl.exp(-c)
    tl.store(Y + row * y_row_stride + cols, (tl.maximum(p, 0.0) if RELU else p) / den, mask=inside)
# fmt: on


def softpick_rows_with(
    mask_load=True, other=float("-inf"), drop_masked=True, shift=True, use_stride=True, relu=True
):
    def launch(x):
        y = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        softpick_rows_variant[(x.shape[0],)](
            x, y, x.shape[1], x.stride(0), y.stride(0), BLOCK=triton.next_power_of_2(x.shape[1]),
            MASK_LOAD=mask_load, OTHER=other, DROP_MASKED=drop_masked, SHIFT=shift, USE_STRIDE=use_stride, RELU=relu,
        )  # fmt: skip
        return y

    return launch


# ---- 04 score_tile: fn(q, k, scale) -> s -----------------------------------------------------------


# fmt: off
@triton.jit
def score_tile_variant(Q, K, S, M, N, D, scale, stride_qm, stride_qd, stride_kn, stride_kd, stride_sm, stride_sn,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                       SCALE: tl.constexpr, STRIDES: tl.constexpr, MASK_DIMS: tl.constexpr,
                       TRANSPOSE_K: tl.constexpr, BOTH_PROGRAM_IDS: tl.constexpr, ROWS_WITH_M: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = (tl.program_id(1) if BOTH_PROGRAM_IDS else 0) * BLOCK_N + tl.arange(0, BLOCK_N)
    dims = tl.arange(0, BLOCK_D)
    if not STRIDES:  # as if q and k were contiguous
        stride_qm, stride_qd, stride_kn, stride_kd = D, 1, D, 1
    row_end, col_end = (M, N) if ROWS_WITH_M else (N, M)
    dims_in = dims < D if MASK_DIMS else dims < BLOCK_D
    q = tl.load(Q + rows[:, None] * stride_qm + dims[None, :] * stride_qd,
                mask=(rows[:, None] < row_end) & dims_in[None, :], other=0.0)
    if TRANSPOSE_K:
        k = tl.load(K + dims[:, None] * stride_kd + cols[None, :] * stride_kn,
                    mask=dims_in[:, None] & (cols[None, :] < col_end), other=0.0)
    else:  # the K tile as stored, [BLOCK_N, BLOCK_D], used as if it were K^T
        k = tl.load(K + cols[:, None] * stride_kn + dims[None, :] * stride_kd,
                    mask=(cols[:, None] < col_end) & dims_in[None, :], other=0.0)
    s = tl.dot(q, k) * (scale if SCALE else 1.0)
    tl.store(S + rows[:, None] * stride_sm + cols[None, :] * stride_sn, s,
             mask=(rows[:, None] < M) & (cols[None, :] < N))
# fmt: on


def score_tile_with(
    scale=True, strides=True, mask_dims=True, transpose_k=True, both_program_ids=True, rows_with_m=True
):
    def launch(q, k, s_scale):
        (m, d), n = q.shape, k.shape[0]
        s = torch.empty(m, n, dtype=torch.float32, device=q.device)
        score_tile_variant[(triton.cdiv(m, 16), triton.cdiv(n, 16))](
            q, k, s, m, n, d, s_scale, *q.stride(), *k.stride(), *s.stride(),
            BLOCK_M=16, BLOCK_N=16, BLOCK_D=max(16, triton.next_power_of_2(d)), SCALE=scale, STRIDES=strides,
            MASK_DIMS=mask_dims, TRANSPOSE_K=transpose_k, BOTH_PROGRAM_IDS=both_program_ids, ROWS_WITH_M=rows_with_m,
        )  # fmt: skip
        return s

    return launch


# ---- 05 flash_forward: fn(q, k, v, causal=True, scale=None) -> out ---------------------------------

MASK_SCORES, MASK_BY_MULTIPLYING, MASK_AFTER_THE_MAX = 0, 1, 2  # how the variant hides causal keys


# fmt: off
@triton.jit
def flash_forward_variant(Q, K, V, Out, scale, q_len, kv_len,
                          HEAD_DIM: tl.constexpr, CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                          RESCALE_DEN: tl.constexpr, RESCALE_ACC: tl.constexpr, C_START: tl.constexpr,
                          HIDDEN_SCORE: tl.constexpr, SCALE: tl.constexpr, INCLUSIVE: tl.constexpr,
                          SHIFT: tl.constexpr, MASKING: tl.constexpr):
    first_row = tl.program_id(0) * BLOCK_M
    head = tl.program_id(1)
    Q += head * q_len * HEAD_DIM
    Out += head * q_len * HEAD_DIM
    K += head * kv_len * HEAD_DIM
    V += head * kv_len * HEAD_DIM
    rows = first_row + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, HEAD_DIM)
    q = tl.load(Q + rows[:, None] * HEAD_DIM + dims[None, :], mask=rows[:, None] < q_len, other=0.0)
    c = tl.zeros([BLOCK_M], tl.float32) + C_START
    den = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    offset = kv_len - q_len
    for first_col in range(0, kv_len, BLOCK_N):  # every block: the mask alone must hide the causal ones
        cols = first_col + tl.arange(0, BLOCK_N)
        k = tl.load(K + cols[:, None] * HEAD_DIM + dims[None, :], mask=cols[:, None] < kv_len, other=0.0)
        v = tl.load(V + cols[:, None] * HEAD_DIM + dims[None, :], mask=cols[:, None] < kv_len, other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision="ieee")
        if SCALE:
            s = s * scale
        visible = cols[None, :] < kv_len + rows[:, None] * 0  # every loaded key, when not causal
        if CAUSAL:
            if INCLUSIVE:
                visible = cols[None, :] <= rows[:, None] + offset
            else:
                visible = cols[None, :] < rows[:, None] + offset
        masked = tl.where(visible, s, HIDDEN_SCORE)
        if MASKING == 0:
            s = masked
        c_new = c
        if SHIFT:
            c_new = tl.maximum(c, tl.max(masked if MASKING == 1 else s, 1))
        r = tl.exp(c - c_new)
        p = tl.exp(s - c_new[:, None]) - tl.exp(-c_new)[:, None]
        if MASKING == 1:
            p = p * visible
        if MASKING == 2:
            p = tl.where(visible, p, 0.0)
        den = (den * r if RESCALE_DEN else den) + tl.sum(tl.abs(p), 1)
        acc = (acc * r[:, None] if RESCALE_ACC else acc) + tl.dot(tl.maximum(p, 0.0), v, input_precision="ieee")
        c = c_new
    den += 1e-6 * tl.exp(-c)
    tl.store(Out + rows[:, None] * HEAD_DIM + dims[None, :], acc / den[:, None], mask=rows[:, None] < q_len)
# fmt: on


def flash_forward_with(rescale_den=True, rescale_acc=True, c_start=0.0, hidden_score=0.0, scale_scores=True,
                       inclusive=True, shift=True, masking=MASK_SCORES):  # fmt: skip
    def launch(q, k, v, causal=True, scale=None):
        b, h, tq, d = q.shape
        out = torch.empty_like(q)
        flash_forward_variant[(triton.cdiv(tq, 16), b * h)](
            q, k, v, out, d**-0.5 if scale is None else scale, tq, k.shape[2],
            HEAD_DIM=d, CAUSAL=causal, BLOCK_M=16, BLOCK_N=16, RESCALE_DEN=rescale_den, RESCALE_ACC=rescale_acc,
            C_START=c_start, HIDDEN_SCORE=hidden_score, SCALE=scale_scores, INCLUSIVE=inclusive, SHIFT=shift,
            MASKING=masking,
        )  # fmt: skip
        return out

    return launch


def tiled_gqa(q, k, v, causal=True, scale=None):
    """Grouped-query heads in tile order (head h reads key head h % Hkv) instead of repeat_interleave order."""
    group = q.shape[1] // k.shape[1]
    return solutions.flash_forward_state(q, k.repeat(1, group, 1, 1), v.repeat(1, group, 1, 1), causal, scale)


def state_with(out=None, shift=None, den=None):
    """The solution's (out, shift, den) with one of them replaced by a function of (q, k, v, causal, scale, state)."""

    def launch(q, k, v, causal=True, scale=None):
        state = solutions.flash_forward_state(q, k, v, causal, scale)
        parts = (out, shift, den)
        return tuple(state[i] if f is None else f(q, k, v, causal, scale, state) for i, f in enumerate(parts))

    return launch


WRONG = {
    "softpick_rows": [
        (softpick_rows_with(relu=False), "matches softpick, n_cols a power of two"),
        (softpick_rows_with(shift=False), "stable for large scores"),
        (softpick_rows_with(drop_masked=False), "masked columns stay out of the denominator"),
        (softpick_rows_with(mask_load=False), "ragged rows read only their own columns"),
        (softpick_rows_with(use_stride=False), "any row stride"),
        (lambda x: torch.softmax(x, -1), "matches softpick, n_cols a power of two"),
        (lambda x: msp.softpick(x).double(), "shape and dtype"),
    ],
    "score_tile": [
        (score_tile_with(transpose_k=False), "one tile, S = Q @ K^T"),
        (score_tile_with(scale=False), "scores multiplied by scale"),
        (score_tile_with(both_program_ids=False), "every tile of the grid"),
        (score_tile_with(rows_with_m=False), "ragged M and N"),
        (score_tile_with(mask_dims=False), "D not a power of two"),
        (score_tile_with(strides=False), "any strides"),
        (lambda q, k, scale: (q @ k.T * scale).double(), "shape and dtype"),
    ],
    "flash_forward": [
        (
            flash_forward_with(rescale_den=False, rescale_acc=False),
            "matches naive attention, several key blocks",
        ),
        (flash_forward_with(rescale_acc=False), "matches naive attention, several key blocks"),
        (flash_forward_with(rescale_den=False), "matches naive attention, several key blocks"),
        (flash_forward_with(scale_scores=False), "matches naive attention, several key blocks"),
        (flash_forward_with(hidden_score=float("-inf")), "causal mask, ragged T"),
        (flash_forward_with(inclusive=False), "causal mask, ragged T"),
        (flash_forward_with(c_start=float("-inf")), "first key block far below zero"),
        (flash_forward_with(shift=False), "stable for large scores"),
        (flash_forward_with(masking=MASK_BY_MULTIPLYING), "large hidden scores stay hidden"),
        (flash_forward_with(masking=MASK_AFTER_THE_MAX), "large hidden scores stay hidden"),
        (
            lambda q, k, v, causal=True, scale=None: solutions.flash_forward(q, k, v, causal, 0.25),
            "uses scale",
        ),
        (
            lambda q, k, v, causal=True, scale=None: solutions.flash_forward(q, k, v, causal, scale).double(),
            "shape and dtype",
        ),
        (lambda q, k, v, causal=True: solutions.flash_forward(q, k, v, causal), "signature"),
    ],
}


def padded_as_minus_inf(q, k, scale):
    """Keys past N loaded as -inf (softmax's habit): each adds |exp(-inf - c) - exp(-c)| to the denominator."""
    s = solutions.score_tile(q, k, scale)
    pad = torch.full(
        (s.shape[0], triton.next_power_of_2(s.shape[1]) - s.shape[1]), float("-inf"), device=s.device
    )
    return msp.softpick(torch.cat([s, pad], 1))[:, : s.shape[1]]


def unshifted_weights(q, k, scale):
    e = torch.exp(solutions.score_tile(q, k, scale)) - 1
    return torch.relu(e) / (e.abs().sum(-1, keepdim=True) + 1e-6)


WRONG["attention_weights"] = [
    (
        lambda q, k, scale: torch.softmax(solutions.score_tile(q, k, scale), -1),
        "one tile: softpick of the scaled scores",
    ),
    (
        lambda q, k, scale: solutions.softpick_rows(solutions.score_tile(q, k, 1.0)),
        "one tile: softpick of the scaled scores",
    ),
    (padded_as_minus_inf, "ragged keys: N not a power of two"),
    (unshifted_weights, "stable for large scores"),
    (lambda q, k, scale: solutions.attention_weights(q, k, scale).double(), "shape and dtype"),
]

WRONG["flash_forward_state"] = [
    (tiled_gqa, "grouped-query heads"),
    (state_with(shift=lambda *args: torch.zeros_like(args[-1][1])), "out, c and den, one head"),
    (state_with(den=lambda *args: torch.ones_like(args[-1][2])), "out, c and den, one head"),
    (state_with(shift=lambda *args: args[-1][1][:, :1].expand_as(args[-1][1])), "every head of the batch"),
    (state_with(out=lambda q, k, v, causal, scale, state: flash_forward_with(rescale_acc=False)(q, k, v, causal, scale)),
     "out, c and den, one head"),
    (lambda q, k, v, causal=True, scale=None: solutions.flash_forward(q, k, v, causal, scale), "out, c and den, one head"),
]  # fmt: skip

RIGHT = {
    "softpick_rows": [
        solutions.softpick_rows,
        softpick_rows_with(),
        softpick_rows_with(other=0.0, drop_masked=False),  # a 0 score adds exp(0 - c) - exp(-c) = 0
        lambda x: msp.softpick(x),
    ],
    "score_tile": [solutions.score_tile, score_tile_with(), lambda q, k, scale: q @ k.T * scale],
    # the variant visits the causal blocks past the diagonal too: only slower
    "flash_forward": [solutions.flash_forward, flash_forward_with()],
    "flash_forward_state": [solutions.flash_forward_state],
    "attention_weights": [
        solutions.attention_weights,
        lambda q, k, scale: solutions.softpick_rows(solutions.score_tile(q, k, scale)),
    ],
}


# ---- 06 flash_dq and flash_dkdv: fn(q, k, v, out, dout, shift, den, causal=True, scale=None) ------------

# How a backward variant turns the recomputed e = exp(s) / D into dS, and how it hides causal keys.
DS_SOFTPICK, DS_SOFTMAX, DS_NO_SIGN = 0, 1, 2
E_SHIFTED, E_UNSHIFTED = 0, 1  # exp(s - c) / den, or exp(s) * exp(-c) / den (equal, but inf * 0 in float32)
ALIGN_BOTTOM_RIGHT, ALIGN_TOP_LEFT, ALIGN_OFF_BY_ONE = 0, 1, 2


# fmt: off
@triton.jit
def backward_tile(q, k, v, do, shift, den, delta, rows, cols, offset, scale, CAUSAL: tl.constexpr,
                  DS: tl.constexpr, E: tl.constexpr, ALIGN: tl.constexpr, MULTIPLY_MASK: tl.constexpr,
                  RELU: tl.constexpr):
    """(p, dS) of one [BLOCK_M, BLOCK_N] tile, each switch one mistake."""
    s = tl.dot(q, tl.trans(k), input_precision="ieee") * scale
    visible = cols[None, :] <= rows[:, None] + offset
    if ALIGN == 1:
        visible = cols[None, :] <= rows[:, None]
    if ALIGN == 2:
        visible = cols[None, :] < rows[:, None] + offset
    if CAUSAL and not MULTIPLY_MASK:
        s = tl.where(visible, s, 0.0)
    if E == 0:
        e = tl.exp(s - shift[:, None]) / den[:, None]
    else:
        e = tl.exp(s) * tl.exp(-shift)[:, None] / den[:, None]
    p = (tl.exp(s - shift[:, None]) - tl.exp(-shift)[:, None]) / den[:, None]
    if RELU:
        p = tl.maximum(p, 0.0)
    dp = tl.dot(do, tl.trans(v), input_precision="ieee")
    if DS == 0:
        ds = e * tl.where(s > 0, dp - delta[:, None], tl.where(s < 0, delta[:, None], 0.0))
    elif DS == 1:
        ds = p * (dp - delta[:, None])
    else:
        ds = e * tl.where(s > 0, dp - delta[:, None], -delta[:, None])
    if CAUSAL and MULTIPLY_MASK:
        ds = ds * visible
        p = p * visible
    return p, ds


@triton.jit
def dq_variant(Q, K, V, Out, DOut, Shift, Den, DQ, scale, q_len, kv_len, group,
               HEAD_DIM: tl.constexpr, CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
               DS: tl.constexpr, E: tl.constexpr, ALIGN: tl.constexpr, MULTIPLY_MASK: tl.constexpr,
               SCALE_DQ: tl.constexpr):
    first_row = tl.program_id(0) * BLOCK_M
    head = tl.program_id(1)
    rows = first_row + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, HEAD_DIM)
    tile = head * q_len * HEAD_DIM + rows[:, None] * HEAD_DIM + dims[None, :]
    q = tl.load(Q + tile, mask=rows[:, None] < q_len, other=0.0)
    do = tl.load(DOut + tile, mask=rows[:, None] < q_len, other=0.0)
    delta = tl.sum(tl.load(Out + tile, mask=rows[:, None] < q_len, other=0.0) * do, 1)
    shift = tl.load(Shift + head * q_len + rows, mask=rows < q_len, other=0.0)
    den = tl.load(Den + head * q_len + rows, mask=rows < q_len, other=1.0)
    K += head // group * kv_len * HEAD_DIM
    V += head // group * kv_len * HEAD_DIM
    dq = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    for first_col in range(0, kv_len, BLOCK_N):
        cols = first_col + tl.arange(0, BLOCK_N)
        k = tl.load(K + cols[:, None] * HEAD_DIM + dims[None, :], mask=cols[:, None] < kv_len, other=0.0)
        v = tl.load(V + cols[:, None] * HEAD_DIM + dims[None, :], mask=cols[:, None] < kv_len, other=0.0)
        p, ds = backward_tile(q, k, v, do, shift, den, delta, rows, cols, kv_len - q_len, scale, CAUSAL,
                              DS, E, ALIGN, MULTIPLY_MASK, True)
        dq += tl.dot(ds, k, input_precision="ieee") * (scale if SCALE_DQ else 1.0)
    tl.store(DQ + tile, dq, mask=rows[:, None] < q_len)


@triton.jit
def dkdv_variant(Q, K, V, DOut, Shift, Den, Delta, DK, DV, scale, q_len, kv_len, group,
                 HEAD_DIM: tl.constexpr, CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                 DS: tl.constexpr, E: tl.constexpr, ALIGN: tl.constexpr, MULTIPLY_MASK: tl.constexpr,
                 SCALE_DK: tl.constexpr, RELU: tl.constexpr, HEADS: tl.constexpr):
    first_col = tl.program_id(0) * BLOCK_N
    kv_head = tl.program_id(1)
    cols = first_col + tl.arange(0, BLOCK_N)
    dims = tl.arange(0, HEAD_DIM)
    tile = kv_head * kv_len * HEAD_DIM + cols[:, None] * HEAD_DIM + dims[None, :]
    k = tl.load(K + tile, mask=cols[:, None] < kv_len, other=0.0)
    v = tl.load(V + tile, mask=cols[:, None] < kv_len, other=0.0)
    dk = tl.zeros([BLOCK_N, HEAD_DIM], tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], tl.float32)
    for g in range(HEADS if HEADS > 0 else group):  # HEADS = 1: only the group's first query head
        head = kv_head * group + g
        for first_row in range(0, q_len, BLOCK_M):
            rows = first_row + tl.arange(0, BLOCK_M)
            rows_tile = head * q_len * HEAD_DIM + rows[:, None] * HEAD_DIM + dims[None, :]
            q = tl.load(Q + rows_tile, mask=rows[:, None] < q_len, other=0.0)
            do = tl.load(DOut + rows_tile, mask=rows[:, None] < q_len, other=0.0)
            shift = tl.load(Shift + head * q_len + rows, mask=rows < q_len, other=0.0)
            den = tl.load(Den + head * q_len + rows, mask=rows < q_len, other=1.0)
            delta = tl.load(Delta + head * q_len + rows, mask=rows < q_len, other=0.0)
            p, ds = backward_tile(q, k, v, do, shift, den, delta, rows, cols, kv_len - q_len, scale, CAUSAL,
                                  DS, E, ALIGN, MULTIPLY_MASK, RELU)
            dv += tl.dot(tl.trans(p), do, input_precision="ieee")
            dk += tl.dot(tl.trans(ds), q, input_precision="ieee") * (scale if SCALE_DK else 1.0)
    tl.store(DK + tile, dk, mask=cols[:, None] < kv_len)
    tl.store(DV + tile, dv, mask=cols[:, None] < kv_len)
# fmt: on


def backward_with(
    kernel, ds=DS_SOFTPICK, e=E_SHIFTED, align=ALIGN_BOTTOM_RIGHT, multiply_mask=False, **switches
):
    """A launcher of the dQ (dq_variant) or dK/dV (dkdv_variant) variant with the given mistakes."""

    def launch(q, k, v, out, dout, shift, den, causal=True, scale=None):
        b, hq, tq, d = q.shape
        hkv, tk = k.shape[1], k.shape[2]
        scale = d**-0.5 if scale is None else scale
        common = dict(HEAD_DIM=d, CAUSAL=causal, BLOCK_M=16, BLOCK_N=16, DS=ds, E=e, ALIGN=align,
                      MULTIPLY_MASK=multiply_mask, **switches)  # fmt: skip
        if kernel is dq_variant:
            dq = torch.empty_like(q)
            dq_variant[(triton.cdiv(tq, 16), b * hq)](
                q, k, v, out, dout, shift, den, dq, scale, tq, tk, hq // hkv, **common
            )
            return dq
        dk, dv = torch.empty_like(k), torch.empty_like(v)
        delta = (out * dout).sum(-1)
        dkdv_variant[(triton.cdiv(tk, 16), b * hkv)](
            q, k, v, dout, shift, den, delta, dk, dv, scale, tq, tk, hq // hkv, **common
        )
        return dk, dv

    return launch


def dq_with(scale_dq=True, **mistakes):
    return backward_with(dq_variant, SCALE_DQ=scale_dq, **mistakes)


def dkdv_with(scale_dk=True, relu=True, heads=0, **mistakes):
    return backward_with(dkdv_variant, SCALE_DK=scale_dk, RELU=relu, HEADS=heads, **mistakes)


def tiled_dq(q, k, v, out, dout, shift, den, causal=True, scale=None):
    """Query head h reads key head h % Hkv (tile order) instead of h // group."""
    group = q.shape[1] // k.shape[1]
    return solutions.flash_dq(q, k.repeat(1, group, 1, 1), v.repeat(1, group, 1, 1), out, dout, shift, den,
                              causal, scale)  # fmt: skip


def tiled_dkdv(q, k, v, out, dout, shift, den, causal=True, scale=None):
    """Key head j collects query heads j, j + Hkv, ... (tile order) instead of j * group + g."""
    b, hkv, tk, d = k.shape
    group = q.shape[1] // hkv
    grads = solutions.flash_dkdv(q, k.repeat(1, group, 1, 1), v.repeat(1, group, 1, 1), out, dout, shift, den,
                                 causal, scale)  # fmt: skip
    return tuple(x.view(b, group, hkv, tk, d).sum(1) for x in grads)


WRONG["flash_dq"] = [
    (dq_with(ds=DS_SOFTMAX), "matches autograd, several blocks"),
    (dq_with(ds=DS_NO_SIGN), "matches autograd, several blocks"),
    (dq_with(scale_dq=False), "matches autograd, several blocks"),
    (dq_with(align=ALIGN_OFF_BY_ONE), "causal mask, ragged T"),
    (dq_with(align=ALIGN_TOP_LEFT), "causal with Tq != Tk is bottom-right aligned"),
    (tiled_dq, "grouped-query heads"),
    (dq_with(e=E_UNSHIFTED), "stable for large scores"),
    (dq_with(multiply_mask=True), "large hidden scores stay hidden"),
    (lambda q, k, v, out, dout, shift, den, causal=True, scale=None: solutions.flash_dq(
        q, k, v, out, dout, shift, den, causal, 0.25), "uses scale"),
    (lambda q, k, v, out, dout, shift, den, causal=True, scale=None: solutions.flash_dq(
        q, k, v, out, dout, shift, den, causal, scale).double(), "shape and dtype"),
    (lambda q, k, v, out, dout, shift, den: solutions.flash_dq(q, k, v, out, dout, shift, den), "signature"),
]  # fmt: skip

WRONG["flash_dkdv"] = [
    (dkdv_with(ds=DS_SOFTMAX), "matches autograd, several blocks"),
    (dkdv_with(ds=DS_NO_SIGN), "matches autograd, several blocks"),
    (dkdv_with(relu=False), "matches autograd, several blocks"),
    (dkdv_with(scale_dk=False), "matches autograd, several blocks"),
    (dkdv_with(align=ALIGN_OFF_BY_ONE), "causal mask, ragged T"),
    (dkdv_with(align=ALIGN_TOP_LEFT), "causal with Tq != Tk is bottom-right aligned"),
    (dkdv_with(heads=1), "grouped-query heads"),
    (tiled_dkdv, "grouped-query heads"),
    (dkdv_with(e=E_UNSHIFTED), "stable for large scores"),
    (dkdv_with(multiply_mask=True), "large hidden scores stay hidden"),
    (lambda q, k, v, out, dout, shift, den, causal=True, scale=None: solutions.flash_dkdv(
        q, k, v, out, dout, shift, den, causal, scale)[0], "shape and dtype"),
]  # fmt: skip

RIGHT["flash_dq"] = [solutions.flash_dq, dq_with()]
RIGHT["flash_dkdv"] = [solutions.flash_dkdv, dkdv_with()]


# ---- 05 flash_forward_blocks: fn(q, k, v, causal=True, scale=None) -> (out, blocks) ---------------------

# How a variant computes the key-block range [0, unmasked_end) + [unmasked_end, end) of a causal program.
RIGHT_RANGE, NO_SKIP, ALL_MASKED, TOP_LEFT, FIRST_ROW_END, NOT_ROUNDED = range(6)
online_update = inspect.getmodule(solutions.flash_forward_blocks).online_update  # the solution's helper


# fmt: off
@triton.jit
def blocks_variant(Q, K, V, Out, Blocks, scale, q_len, kv_len, HEAD_DIM: tl.constexpr, CAUSAL: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, RANGE: tl.constexpr):
    first_row = tl.program_id(0) * BLOCK_M
    head = tl.program_id(1)
    Q += head * q_len * HEAD_DIM
    Out += head * q_len * HEAD_DIM
    K += head * kv_len * HEAD_DIM
    V += head * kv_len * HEAD_DIM
    rows = first_row + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, HEAD_DIM)
    q = tl.load(Q + rows[:, None] * HEAD_DIM + dims[None, :], mask=rows[:, None] < q_len, other=0.0)
    c = tl.zeros([BLOCK_M], tl.float32)
    den = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    offset = kv_len - q_len
    range_offset = 0 if RANGE == 3 else offset
    unmasked_end = tl.minimum(tl.maximum(first_row + range_offset + 1, 0), kv_len)
    if RANGE != 5:
        unmasked_end = unmasked_end // BLOCK_N * BLOCK_N
    end = tl.minimum(tl.maximum(first_row + BLOCK_M + range_offset, 0), kv_len)
    if RANGE == 1:
        end = kv_len
    if RANGE == 2:
        unmasked_end = 0
    if RANGE == 4:
        end = tl.minimum(tl.maximum(first_row + offset + 1, 0), kv_len)
    if not CAUSAL:
        unmasked_end = kv_len
        end = kv_len
    unmasked = 0
    masked = 0
    for first_col in range(0, unmasked_end, BLOCK_N):
        cols = first_col + tl.arange(0, BLOCK_N)
        k = tl.load(K + cols[:, None] * HEAD_DIM + dims[None, :], mask=cols[:, None] < kv_len, other=0.0)
        v = tl.load(V + cols[:, None] * HEAD_DIM + dims[None, :], mask=cols[:, None] < kv_len, other=0.0)
        c, den, acc = online_update(c, den, acc, q, k, v, rows, cols, offset, scale, False)
        unmasked += 1
    for first_col in range(unmasked_end, end, BLOCK_N):
        cols = first_col + tl.arange(0, BLOCK_N)
        k = tl.load(K + cols[:, None] * HEAD_DIM + dims[None, :], mask=cols[:, None] < kv_len, other=0.0)
        v = tl.load(V + cols[:, None] * HEAD_DIM + dims[None, :], mask=cols[:, None] < kv_len, other=0.0)
        c, den, acc = online_update(c, den, acc, q, k, v, rows, cols, offset, scale, True)
        masked += 1
    den += 1e-6 * tl.exp(-c)
    tl.store(Out + rows[:, None] * HEAD_DIM + dims[None, :], acc / den[:, None], mask=rows[:, None] < q_len)
    program = head * tl.num_programs(0) + tl.program_id(0)
    tl.store(Blocks + program * 2, unmasked)
    tl.store(Blocks + program * 2 + 1, masked)
# fmt: on


def blocks_with(key_range):
    """A launcher of blocks_variant, one key head per query head (every case of the check but one)."""

    def launch(q, k, v, causal=True, scale=None):
        b, hq, tq, d = q.shape
        group = hq // k.shape[1]
        k, v = k.repeat_interleave(group, 1).contiguous(), v.repeat_interleave(group, 1).contiguous()
        out = torch.empty_like(q)
        blocks = torch.zeros(b, hq, triton.cdiv(tq, 16), 2, dtype=torch.int32, device=q.device)
        blocks_variant[(triton.cdiv(tq, 16), b * hq)](
            q.contiguous(), k, v, out, blocks, d**-0.5 if scale is None else scale, tq, k.shape[2],
            HEAD_DIM=d, CAUSAL=causal, BLOCK_M=16, BLOCK_N=16, RANGE=key_range,
        )  # fmt: skip
        return out, blocks

    return launch


WRONG["flash_forward_blocks"] = [
    (blocks_with(NO_SKIP), "blocks: Tq = Tk skips the blocks above the diagonal"),
    (blocks_with(ALL_MASKED), "blocks: Tq = Tk skips the blocks above the diagonal"),
    (blocks_with(TOP_LEFT), "out: Tq < Tk, bottom-right aligned"),
    (blocks_with(FIRST_ROW_END), "out: Tq < Tk, bottom-right aligned"),
    (blocks_with(NOT_ROUNDED), "out: causal, ragged T"),
    (
        lambda q, k, v, causal=True, scale=None: (solutions.flash_forward(q, k, v, causal, scale), None),
        "shape and dtype",
    ),
]
RIGHT["flash_forward_blocks"] = [solutions.flash_forward_blocks, blocks_with(RIGHT_RANGE)]
