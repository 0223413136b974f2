"""Solutions to notebook 06: the score gradient for one block in PyTorch, the roofline, and the inner loops
of two didactic backward kernels in Triton.

The kernels are notebook 05's didactic forward turned around (docs/design.md, "Backward"): fixed 16 x 16
blocks, float32, natural exp, and every block visited with the causal mask applied (skipping the hidden
blocks, as notebook 05's third exercise does, would only be faster). The dQ kernel has a program per query
block and loops over the key blocks; the dK/dV kernel has a program per key block of a key/value head and
loops over the query blocks of every query head of its GQA group, summing their gradients. Both recompute
the weights from the forward's saved shift c and den: exp(s) / D = exp(s - c) / den.

This module defines @triton.jit kernels, so it is imported lazily (by the checks, or on first use of
``minisoftpick.solutions.flash_dq``), after ``minisoftpick.kernels`` has set TRITON_INTERPRET=1 on a
machine without a GPU.
"""

# isort: off
from .. import kernels  # noqa: F401  (sets TRITON_INTERPRET=1 without a GPU, before triton is imported)
import torch
import triton
import triton.language as tl
# isort: on

BLOCK = 16  # BLOCK_M = BLOCK_N: the smallest tile tl.dot takes on a GPU


def softpick_score_grad(s, shift, den, dp, delta):
    """dS = exp(s) / D * (1[s > 0] * dP - sign(s) * Delta) for one block of scores (docs/design.md, "Backward").

    s, dp: [M, N] scores and dP = dO @ V^T; shift, den, delta: [M] per row, as the forward saved them
    (c = max(rowmax, 0) and den = D * exp(-c)) and Delta = rowsum(dO * O). exp(s) / D is computed as
    exp(s - c) / den, which never overflows.
    """
    e = torch.exp(s - shift[:, None]) / den[:, None]
    return e * ((s > 0) * dp - torch.sign(s) * delta[:, None])


def attention_roofline(b, h, t, d, mode, peak_flops, bandwidth):
    """(FLOPs, bytes, attainable FLOP/s) of causal bf16 attention [B, H, T, D] on a roofline (notebook 06).

    FLOPs as bench/bench_attention.py counts them: two T x T x D matmuls of 2 FLOPs per multiply-add, half
    of them under the causal mask; forward+backward does 3.5 times the forward's. Bytes: the minimum
    traffic, each of q, k, v, out read or written once (forward), plus dO read and dq, dk, dv written and
    q, k, v, out read again (backward), two bytes each. Attainable: min(peak, intensity * bandwidth).
    """
    forward = 4 * b * h * t * t * d / 2
    flops = forward if mode == "fwd" else 3.5 * forward
    tensors = 4 if mode == "fwd" else 12
    moved = tensors * b * h * t * d * 2
    return flops, moved, min(peak_flops, flops / moved * bandwidth)


# fmt: off
@triton.jit
def flash_dq_kernel(Q, K, V, Out, DOut, Shift, Den, DQ, scale, q_len, kv_len, group,
                    HEAD_DIM: tl.constexpr, CAUSAL: tl.constexpr,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Program (i, bh) writes rows [i * BLOCK_M, (i + 1) * BLOCK_M) of dq for query head bh of contiguous
    [B * Hq, Tq, D] tensors, reading key/value head bh // group of [B * Hkv, Tk, D]; Shift, Den: [B * Hq, Tq]."""
    first_row = tl.program_id(0) * BLOCK_M
    head = tl.program_id(1)  # b * Hq + h
    kv_head = head // group
    Q += head * q_len * HEAD_DIM
    Out += head * q_len * HEAD_DIM
    DOut += head * q_len * HEAD_DIM
    DQ += head * q_len * HEAD_DIM
    K += kv_head * kv_len * HEAD_DIM
    V += kv_head * kv_len * HEAD_DIM
    rows = first_row + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, HEAD_DIM)
    tile = rows[:, None] * HEAD_DIM + dims[None, :]
    q = tl.load(Q + tile, mask=rows[:, None] < q_len, other=0.0)
    do = tl.load(DOut + tile, mask=rows[:, None] < q_len, other=0.0)
    delta = tl.sum(tl.load(Out + tile, mask=rows[:, None] < q_len, other=0.0) * do, 1)  # rowsum(dO * O)
    shift = tl.load(Shift + head * q_len + rows, mask=rows < q_len, other=0.0)  # the forward's c
    den = tl.load(Den + head * q_len + rows, mask=rows < q_len, other=1.0)  # and its den = D * exp(-c)
    offset = kv_len - q_len  # causal, bottom-right aligned: row i sees key j when j <= i + offset
    dq = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    # --- the loop: notebook 06's first exercise ---
    for first_col in range(0, kv_len, BLOCK_N):
        cols = first_col + tl.arange(0, BLOCK_N)
        k = tl.load(K + cols[:, None] * HEAD_DIM + dims[None, :], mask=cols[:, None] < kv_len, other=0.0)
        v = tl.load(V + cols[:, None] * HEAD_DIM + dims[None, :], mask=cols[:, None] < kv_len, other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision="ieee") * scale
        if CAUSAL:
            s = tl.where(cols[None, :] <= rows[:, None] + offset, s, 0.0)  # a 0 score gets zero gradient
        e = tl.exp(s - shift[:, None]) / den[:, None]  # exp(s) / D, at most 1 / den
        dp = tl.dot(do, tl.trans(v), input_precision="ieee")
        ds = e * tl.where(s > 0, dp - delta[:, None], tl.where(s < 0, delta[:, None], 0.0))
        dq += scale * tl.dot(ds, k, input_precision="ieee")
    # --- end of the loop ---
    tl.store(DQ + tile, dq, mask=rows[:, None] < q_len)


@triton.jit
def flash_dkdv_kernel(Q, K, V, DOut, Shift, Den, Delta, DK, DV, scale, q_len, kv_len, group,
                      HEAD_DIM: tl.constexpr, CAUSAL: tl.constexpr,
                      BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Program (j, bkv) writes rows [j * BLOCK_N, (j + 1) * BLOCK_N) of dk and dv for key/value head bkv of
    contiguous [B * Hkv, Tk, D] tensors, summing over query heads bkv * group + g (g < group) of
    [B * Hq, Tq, D]; Shift, Den, Delta: [B * Hq, Tq]."""
    first_col = tl.program_id(0) * BLOCK_N
    kv_head = tl.program_id(1)  # b * Hkv + h
    K += kv_head * kv_len * HEAD_DIM
    V += kv_head * kv_len * HEAD_DIM
    DK += kv_head * kv_len * HEAD_DIM
    DV += kv_head * kv_len * HEAD_DIM
    cols = first_col + tl.arange(0, BLOCK_N)
    dims = tl.arange(0, HEAD_DIM)
    tile = cols[:, None] * HEAD_DIM + dims[None, :]
    k = tl.load(K + tile, mask=cols[:, None] < kv_len, other=0.0)
    v = tl.load(V + tile, mask=cols[:, None] < kv_len, other=0.0)
    offset = kv_len - q_len  # causal, bottom-right aligned: row i sees key j when j <= i + offset
    dk = tl.zeros([BLOCK_N, HEAD_DIM], tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], tl.float32)
    # --- the loops: notebook 06's second exercise ---
    for g in range(group):  # every query head that reads this key/value head adds its gradient
        head = kv_head * group + g
        for first_row in range(0, q_len, BLOCK_M):
            rows = first_row + tl.arange(0, BLOCK_M)
            rows_tile = head * q_len * HEAD_DIM + rows[:, None] * HEAD_DIM + dims[None, :]
            q = tl.load(Q + rows_tile, mask=rows[:, None] < q_len, other=0.0)
            do = tl.load(DOut + rows_tile, mask=rows[:, None] < q_len, other=0.0)
            shift = tl.load(Shift + head * q_len + rows, mask=rows < q_len, other=0.0)
            den = tl.load(Den + head * q_len + rows, mask=rows < q_len, other=1.0)
            delta = tl.load(Delta + head * q_len + rows, mask=rows < q_len, other=0.0)
            s = tl.dot(q, tl.trans(k), input_precision="ieee") * scale  # [BLOCK_M, BLOCK_N]
            if CAUSAL:
                s = tl.where(cols[None, :] <= rows[:, None] + offset, s, 0.0)
            x = tl.exp(s - shift[:, None])
            p = tl.maximum(x - tl.exp(-shift)[:, None], 0.0) / den[:, None]  # the forward's weights
            dv += tl.dot(tl.trans(p), do, input_precision="ieee")
            dp = tl.dot(do, tl.trans(v), input_precision="ieee")
            ds = x / den[:, None] * tl.where(s > 0, dp - delta[:, None], tl.where(s < 0, delta[:, None], 0.0))
            dk += scale * tl.dot(tl.trans(ds), q, input_precision="ieee")
    # --- end of the loops ---
    tl.store(DK + tile, dk, mask=cols[:, None] < kv_len)
    tl.store(DV + tile, dv, mask=cols[:, None] < kv_len)
# fmt: on


def flash_dq(q, k, v, out, dout, shift, den, causal=True, scale=None):
    """dq of softpick attention for float32 q, out, dout [B, Hq, Tq, D], k, v [B, Hkv, Tk, D] and the forward's
    shift, den [B, Hq, Tq], with flash_dq_kernel; scale defaults to 1/sqrt(D)."""
    b, hq, tq, d = q.shape
    hkv, tk = k.shape[1], k.shape[2]
    scale = d**-0.5 if scale is None else scale
    q, k, v, out, dout = (x.contiguous() for x in (q, k, v, out, dout))
    dq = torch.empty_like(q)
    flash_dq_kernel[(triton.cdiv(tq, BLOCK), b * hq)](
        q, k, v, out, dout, shift.contiguous(), den.contiguous(), dq, scale, tq, tk, hq // hkv,
        HEAD_DIM=d, CAUSAL=causal, BLOCK_M=BLOCK, BLOCK_N=BLOCK,
    )  # fmt: skip
    return dq


def flash_dkdv(q, k, v, out, dout, shift, den, causal=True, scale=None):
    """(dk, dv) of softpick attention, same inputs as flash_dq, with flash_dkdv_kernel; Delta = rowsum(dO * O)
    is computed here (the package's dQ kernel writes it for its dK/dV kernel)."""
    b, hq, tq, d = q.shape
    hkv, tk = k.shape[1], k.shape[2]
    scale = d**-0.5 if scale is None else scale
    q, k, v, dout = (x.contiguous() for x in (q, k, v, dout))
    delta = (out * dout).sum(-1).contiguous()
    dk, dv = torch.empty_like(k), torch.empty_like(v)
    flash_dkdv_kernel[(triton.cdiv(tk, BLOCK), b * hkv)](
        q, k, v, dout, shift.contiguous(), den.contiguous(), delta, dk, dv, scale, tq, tk, hq // hkv,
        HEAD_DIM=d, CAUSAL=causal, BLOCK_M=BLOCK, BLOCK_N=BLOCK,
    )  # fmt: skip
    return dk, dv
