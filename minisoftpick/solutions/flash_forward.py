"""Solutions to notebook 05: a didactic flash softpick forward kernel and its two launchers.

Simpler than kernels/flash_softpick.py: fixed 16 x 16 blocks, no autotuning, float32 throughout,
natural exp instead of the exp2 fold, and one loop over the key blocks with the causal mask applied in
every block. It takes grouped-query heads (``group`` query heads per key/value head) and stores per row
what the backward needs, the shift c and the denominator den (eps term included). The loop body is the
online update of notebook 03 (docs/design.md, "Online recurrence"); notebook 05's first exercise is that
body, its second the whole kernel.

This module defines a @triton.jit kernel, so it is imported lazily (by the checks, or on first use of
``minisoftpick.solutions.flash_forward``), after ``minisoftpick.kernels`` has set TRITON_INTERPRET=1 on
a machine without a GPU.
"""

import torch
import triton
import triton.language as tl

from .. import kernels  # noqa: F401  (sets TRITON_INTERPRET=1 without a GPU, before the kernel below)

BLOCK = 16  # BLOCK_M = BLOCK_N: the smallest tile tl.dot takes on a GPU


# fmt: off
@triton.jit
def flash_forward_kernel(Q, K, V, Out, Shift, Den, scale, q_len, kv_len, group,
                         HEAD_DIM: tl.constexpr, CAUSAL: tl.constexpr,
                         BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Program (i, bh) writes rows [i * BLOCK_M, (i + 1) * BLOCK_M) of query head bh of contiguous
    [B * Hq, Tq, D] tensors, reading key/value head bh // group of [B * Hkv, Tk, D]; Shift, Den: [B * Hq, Tq]."""
    first_row = tl.program_id(0) * BLOCK_M
    head = tl.program_id(1)  # b * Hq + h
    kv_head = head // group  # b * Hkv + h // group, as Hq = group * Hkv
    Q += head * q_len * HEAD_DIM
    Out += head * q_len * HEAD_DIM
    K += kv_head * kv_len * HEAD_DIM
    V += kv_head * kv_len * HEAD_DIM
    rows = first_row + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, HEAD_DIM)
    q = tl.load(Q + rows[:, None] * HEAD_DIM + dims[None, :], mask=rows[:, None] < q_len, other=0.0)

    c = tl.zeros([BLOCK_M], tl.float32)  # the shift starts at 0, so c = max(rowmax, 0) throughout
    den = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    offset = kv_len - q_len  # causal, bottom-right aligned: row i sees key j when j <= i + offset
    if CAUSAL:
        end = tl.minimum(first_row + BLOCK_M + offset, kv_len)  # keys past the block's last row's last key
    else:
        end = kv_len
    for first_col in range(0, end, BLOCK_N):
        cols = first_col + tl.arange(0, BLOCK_N)
        k = tl.load(K + cols[:, None] * HEAD_DIM + dims[None, :], mask=cols[:, None] < kv_len, other=0.0)
        v = tl.load(V + cols[:, None] * HEAD_DIM + dims[None, :], mask=cols[:, None] < kv_len, other=0.0)
        # --- the loop body: notebook 05's first exercise ---
        s = tl.dot(q, tl.trans(k), input_precision="ieee") * scale  # keys past kv_len load as 0: s = 0
        if CAUSAL:
            s = tl.where(cols[None, :] <= rows[:, None] + offset, s, 0.0)  # a score of 0 weighs nothing
        c_new = tl.maximum(c, tl.max(s, 1))
        r = tl.exp(c - c_new)
        p = tl.exp(s - c_new[:, None]) - tl.exp(-c_new)[:, None]  # every entry in [-1, 1]
        den = den * r + tl.sum(tl.abs(p), 1)
        acc = acc * r[:, None] + tl.dot(tl.maximum(p, 0.0), v, input_precision="ieee")
        c = c_new
        # --- end of the loop body ---
    den += 1e-6 * tl.exp(-c)
    tl.store(Out + rows[:, None] * HEAD_DIM + dims[None, :], acc / den[:, None], mask=rows[:, None] < q_len)
    tl.store(Shift + head * q_len + rows, c, mask=rows < q_len)  # what the backward needs
    tl.store(Den + head * q_len + rows, den, mask=rows < q_len)
# fmt: on


def flash_forward_state(q, k, v, causal=True, scale=None):
    """(out, shift, den) of softpick attention for float32 q [B, Hq, Tq, D], k and v [B, Hkv, Tk, D].

    Hq must be a multiple of Hkv, D a power of two of at least 16; scale defaults to 1/sqrt(D). shift and
    den are [B, Hq, Tq]: per row c = max(rowmax, 0) and sum |exp(s - c) - exp(-c)| + eps exp(-c).
    """
    b, hq, tq, d = q.shape
    hkv, tk = k.shape[1], k.shape[2]
    scale = d**-0.5 if scale is None else scale
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    out = torch.empty_like(q)
    shift = torch.empty(b, hq, tq, dtype=torch.float32, device=q.device)
    den = torch.empty_like(shift)
    grid = (triton.cdiv(tq, BLOCK), b * hq)
    flash_forward_kernel[grid](
        q,
        k,
        v,
        out,
        shift,
        den,
        scale,
        tq,
        tk,
        hq // hkv,
        HEAD_DIM=d,
        CAUSAL=causal,
        BLOCK_M=BLOCK,
        BLOCK_N=BLOCK,
    )
    return out, shift, den


def flash_forward(q, k, v, causal=True, scale=None):
    """Softpick attention of float32 q [B, H, Tq, D], k and v [B, H, Tk, D] with flash_forward_kernel."""
    return flash_forward_state(q, k, v, causal, scale)[0]
