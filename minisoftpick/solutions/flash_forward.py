"""Solutions to notebook 05: a didactic flash softpick forward kernel, its launchers, and a faster version that
visits only the key blocks a causal program needs.

Simpler than kernels/flash_softpick.py: fixed 16 x 16 blocks, no autotuning, float32 throughout, natural exp
instead of the exp2 fold. ``online_update`` is one key block of the online update of notebook 03
(docs/design.md, "Online recurrence"), notebook 05's first exercise; ``flash_forward_kernel`` calls it for
every key block, the causal mask applied in each, takes grouped-query heads (``group`` query heads per
key/value head) and stores per row what the backward needs, the shift c and the denominator den (eps term
included): the second exercise. ``flash_forward_blocks_kernel`` is the third: it skips the key blocks no row
of its program sees and applies the mask only to the blocks that straddle the diagonal, and counts both.

This module defines @triton.jit kernels, so it is imported lazily (by the checks, or on first use of
``minisoftpick.solutions.flash_forward``), after ``minisoftpick.kernels`` has set TRITON_INTERPRET=1 on
a machine without a GPU.
"""

# isort: off
from .. import kernels  # noqa: F401  (sets TRITON_INTERPRET=1 without a GPU, before triton is imported)
import torch
import triton
import triton.language as tl
# isort: on

BLOCK = 16  # BLOCK_M = BLOCK_N: the smallest tile tl.dot takes on a GPU


# fmt: off
@triton.jit
def online_update(c, den, acc, q, k, v, rows, cols, offset, scale, MASKED: tl.constexpr):
    """The state (c, den, acc) of BLOCK_M query rows after one key block: k, v [BLOCK_N, D], keys past kv_len
    loaded as 0; with MASKED, row i sees key j when j <= i + offset."""
    # --- the loop body: notebook 05's first exercise ---
    s = tl.dot(q, tl.trans(k), input_precision="ieee") * scale  # keys past kv_len load as 0: s = 0
    if MASKED:
        s = tl.where(cols[None, :] <= rows[:, None] + offset, s, 0.0)  # a score of 0 weighs nothing
    c_new = tl.maximum(c, tl.max(s, 1))
    r = tl.exp(c - c_new)
    p = tl.exp(s - c_new[:, None]) - tl.exp(-c_new)[:, None]  # every entry in [-1, 1]
    den = den * r + tl.sum(tl.abs(p), 1)
    acc = acc * r[:, None] + tl.dot(tl.maximum(p, 0.0), v, input_precision="ieee")
    c = c_new
    # --- end of the loop body ---
    return c, den, acc


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
    for first_col in range(0, kv_len, BLOCK_N):  # every key block: the mask hides what a row may not see
        cols = first_col + tl.arange(0, BLOCK_N)
        k = tl.load(K + cols[:, None] * HEAD_DIM + dims[None, :], mask=cols[:, None] < kv_len, other=0.0)
        v = tl.load(V + cols[:, None] * HEAD_DIM + dims[None, :], mask=cols[:, None] < kv_len, other=0.0)
        c, den, acc = online_update(c, den, acc, q, k, v, rows, cols, offset, scale, CAUSAL)
    den += 1e-6 * tl.exp(-c)
    tl.store(Out + rows[:, None] * HEAD_DIM + dims[None, :], acc / den[:, None], mask=rows[:, None] < q_len)
    tl.store(Shift + head * q_len + rows, c, mask=rows < q_len)  # what the backward needs
    tl.store(Den + head * q_len + rows, den, mask=rows < q_len)


@triton.jit
def flash_forward_blocks_kernel(Q, K, V, Out, Blocks, scale, q_len, kv_len, group,
                                HEAD_DIM: tl.constexpr, CAUSAL: tl.constexpr,
                                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """flash_forward_kernel's output, computing only the key blocks the program's rows see: [0, unmasked_end)
    without the mask, [unmasked_end, end) with it. Blocks [B * Hq, programs, 2]: how many of each it computed."""
    first_row = tl.program_id(0) * BLOCK_M
    head = tl.program_id(1)  # b * Hq + h
    Q += head * q_len * HEAD_DIM
    Out += head * q_len * HEAD_DIM
    K += head // group * kv_len * HEAD_DIM
    V += head // group * kv_len * HEAD_DIM
    rows = first_row + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, HEAD_DIM)
    q = tl.load(Q + rows[:, None] * HEAD_DIM + dims[None, :], mask=rows[:, None] < q_len, other=0.0)

    c = tl.zeros([BLOCK_M], tl.float32)
    den = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    offset = kv_len - q_len  # causal, bottom-right aligned: row i sees key j when j <= i + offset
    unmasked = 0  # key blocks computed without the mask, and with it
    masked = 0
    # --- the key-block range: notebook 05's third exercise ---
    if CAUSAL:  # the first row sees keys j <= first_row + offset, the block's last row j < first_row + BLOCK_M + offset
        unmasked_end = tl.minimum(tl.maximum(first_row + offset + 1, 0), kv_len) // BLOCK_N * BLOCK_N
        end = tl.minimum(tl.maximum(first_row + BLOCK_M + offset, 0), kv_len)
    else:
        unmasked_end = kv_len
        end = kv_len
    for first_col in range(0, unmasked_end, BLOCK_N):  # whole blocks every row sees
        cols = first_col + tl.arange(0, BLOCK_N)
        k = tl.load(K + cols[:, None] * HEAD_DIM + dims[None, :], mask=cols[:, None] < kv_len, other=0.0)
        v = tl.load(V + cols[:, None] * HEAD_DIM + dims[None, :], mask=cols[:, None] < kv_len, other=0.0)
        c, den, acc = online_update(c, den, acc, q, k, v, rows, cols, offset, scale, False)
        unmasked += 1
    for first_col in range(unmasked_end, end, BLOCK_N):  # the blocks that straddle the diagonal
        cols = first_col + tl.arange(0, BLOCK_N)
        k = tl.load(K + cols[:, None] * HEAD_DIM + dims[None, :], mask=cols[:, None] < kv_len, other=0.0)
        v = tl.load(V + cols[:, None] * HEAD_DIM + dims[None, :], mask=cols[:, None] < kv_len, other=0.0)
        c, den, acc = online_update(c, den, acc, q, k, v, rows, cols, offset, scale, True)
        masked += 1
    # --- end of the key-block range ---
    den += 1e-6 * tl.exp(-c)
    tl.store(Out + rows[:, None] * HEAD_DIM + dims[None, :], acc / den[:, None], mask=rows[:, None] < q_len)
    program = head * tl.num_programs(0) + tl.program_id(0)
    tl.store(Blocks + program * 2, unmasked)
    tl.store(Blocks + program * 2 + 1, masked)
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
        q, k, v, out, shift, den, scale, tq, tk, hq // hkv, HEAD_DIM=d, CAUSAL=causal, BLOCK_M=BLOCK, BLOCK_N=BLOCK
    )  # fmt: skip
    return out, shift, den


def flash_forward(q, k, v, causal=True, scale=None):
    """Softpick attention of float32 q [B, H, Tq, D], k and v [B, H, Tk, D] with flash_forward_kernel."""
    return flash_forward_state(q, k, v, causal, scale)[0]


def flash_forward_blocks(q, k, v, causal=True, scale=None):
    """(out, blocks) with flash_forward_blocks_kernel: out as flash_forward_state's, and blocks [B, Hq, programs, 2]
    int32, how many key blocks each program computed without the causal mask and with it."""
    b, hq, tq, d = q.shape
    hkv, tk = k.shape[1], k.shape[2]
    scale = d**-0.5 if scale is None else scale
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    out = torch.empty_like(q)
    blocks = torch.zeros(b, hq, triton.cdiv(tq, BLOCK), 2, dtype=torch.int32, device=q.device)
    flash_forward_blocks_kernel[(triton.cdiv(tq, BLOCK), b * hq)](
        q, k, v, out, blocks, scale, tq, tk, hq // hkv, HEAD_DIM=d, CAUSAL=causal, BLOCK_M=BLOCK, BLOCK_N=BLOCK
    )  # fmt: skip
    return out, blocks
