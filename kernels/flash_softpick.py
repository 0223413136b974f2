"""Flash softpick attention in Triton: forward and backward, causal or not, GQA, any length.

    out = softpick(scale * q k^T) @ v,    softpick(s)_j = relu(exp(s_j) - 1) / (sum_j |exp(s_j) - 1| + eps)

Forward: one program per block of BLOCK_M query rows (docs/design.md, "Online recurrence"). It
visits the keys BLOCK_N at a time, keeping per row a shift c (it starts at 0, so c = max(rowmax, 0)
throughout), a denominator and an unnormalised output:

    c_new = max(c, rowmax(S))             r = exp(c - c_new)
    P~    = exp(S - c_new) - exp(-c_new)      every entry in [-1, 1]
    den   = den * r + rowsum(|P~|)
    acc   = acc * r + relu(P~) @ V
    out   = acc / (den + eps * exp(-c))       (den below includes the eps term)

Saved for backward (docs/design.md, "What the kernel saves"): q, k, v, out and two fp32 numbers
per query row, the final shift c and den (the state online_softpick_attention returns), never
anything T x T. With X = exp(S - c), backward
recomputes the weights and the gradient of the scores (docs/design.md, "Jacobian" and "Backward")
block by block:

    P  = relu(X - exp(-c)) / den                          the forward's weights
    dS = X / den * (1[S > 0] * dP - sign(S) * Delta)      dP = dO @ V^T,  Delta = rowsum(dO * O)
    dV = P^T @ dO        dK = scale * dS^T @ Q        dQ = scale * dS @ K

X / den is exp(s) / D, D = sum|exp(s) - 1| + eps the true denominator. One number per row would do,
L = log D, as P = relu(exp(S - L) - exp(-L)); but when D is small both terms are near 1/D and the
rounding of S - L makes P |log2 D| times less accurate than the forward's. Backward is two kernels,
as in FlashAttention-2: the dQ kernel (a program per query block, looping over keys) also writes
Delta; the dK/dV kernel (a program per key block of a key/value head, looping over the query blocks
of every query head in its GQA group) reads it. Its tiles are [queries, keys] or [keys, queries],
whichever the autotuner finds faster: on an H100 the first won at head dim 64, the second at 128;
on an H200 the first won at 64, 128 and 256 (bench/NOTES.md).

Masks cost almost nothing (docs/design.md, "Masking"): softpick gives a score of exactly 0 zero
weight and zero gradient (exp(0 - c) - exp(-c) = 0 and 1[0 > 0] = sign(0) = 0), and a 0 never moves
the shift c >= 0. So rows
past the end are loaded as zeros, which makes their scores exactly 0, and the causal mask sets hidden
scores to 0, only in the blocks that straddle the diagonal. (Softmax would need -inf and more care.)

eps is a runtime argument of the forward kernel and lives inside den from then on, so backward never
needs it. With eps = 0 a row that sees no key has den = 0 and acc = 0: its output and gradients are
0 (as softpick's), never 0/0.

Exponentials are exp2, with scale * log2(e) folded into one multiply-add; c is kept in log2 units
inside the kernels and stored in natural units. fp32 inputs multiply as three TF32 products (about
fp32 accuracy). On a GPU each kernel's tiles are autotuned among named ``Tile`` choices, keyed by
power-of-two buckets of the lengths (a new length retunes only past a power of two); sequences up to
512 and the Triton interpreter take the first, safe tile. Without a GPU the same kernels run through
the interpreter, with bf16 computed in fp32 (the interpreter gets bf16 wrong).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from minisoftpick.attention import check_attention_inputs
from minisoftpick.normalizers import DEFAULT_EPS

from . import check_interpreter_ready, interpreting

LOG2E = tl.constexpr(1.4426950408889634)  # exp(x) = exp2(x * LOG2E)
LN2 = tl.constexpr(0.6931471805599453)
MAX_HEAD_DIM = 256
MAX_GRID_HEADS = 65535  # batch * heads is the grid's second axis
SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)

# Runtime ints the kernels must not be recompiled for (Triton specializes ints that are 1 or multiples of 16).
LENGTH_ARGS = ["q_len", "kv_len", "group", "q_bucket", "kv_bucket"]

# The Triton code keeps its argument lists on a few lines.
# fmt: off


# ----------------------------------------------------------------------------------------- helpers


@triton.jit
def _load_rows(ptr, rows, n_rows, dims, HEAD_DIM: tl.constexpr):
    """Tile [rows, dims] of the row-major [n_rows, HEAD_DIM] matrix at ptr; zeros outside it."""
    mask = (rows[:, None] < n_rows) & (dims[None, :] < HEAD_DIM)
    return tl.load(ptr + rows[:, None] * HEAD_DIM + dims[None, :], mask=mask, other=0.0)


@triton.jit
def _store_rows(ptr, x, rows, n_rows, dims, HEAD_DIM: tl.constexpr):
    mask = (rows[:, None] < n_rows) & (dims[None, :] < HEAD_DIM)
    tl.store(ptr + rows[:, None] * HEAD_DIM + dims[None, :], x.to(ptr.dtype.element_ty), mask=mask)


@triton.jit
def _dot(a, b, acc):
    """a @ b + acc in fp32; fp32 operands as three TF32 products (plain TF32 can flip the sign of a
    score near 0, which softpick turns into a weight of 0 instead of almost 1)."""
    if a.dtype == tl.float32:
        result = tl.dot(a, b, acc, input_precision="tf32x3")
    else:
        result = tl.dot(a, b, acc)
    return result


@triton.jit
def _key_ranges(first_row, q_len, kv_len, CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Keys for query rows [first_row, first_row + BLOCK_M): [0, unmasked_end) in whole blocks that
    every row sees, then [unmasked_end, end) under the causal mask (query i sees key j when
    j <= i + kv_len - q_len: bottom-right aligned)."""
    if CAUSAL:
        offset = kv_len - q_len
        unmasked_end = tl.minimum(tl.maximum(first_row + offset + 1, 0), kv_len) // BLOCK_N * BLOCK_N
        end = tl.minimum(tl.maximum(first_row + BLOCK_M + offset, 0), kv_len)
    else:
        unmasked_end = kv_len
        end = kv_len
    return unmasked_end, end


@triton.jit
def _query_ranges(first_col, q_len, kv_len, CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Queries that see keys [first_col, first_col + BLOCK_N): [start, unmasked_start) under the
    causal mask, then [unmasked_start, q_len), which see the whole key block."""
    if CAUSAL:
        offset = kv_len - q_len
        start = tl.minimum(tl.maximum(first_col - offset, 0), q_len)
        sees_all = tl.minimum(tl.maximum(first_col + BLOCK_N - 1 - offset, 0), q_len)
        unmasked_start = start + tl.cdiv(sees_all - start, BLOCK_M) * BLOCK_M
    else:
        start = 0
        unmasked_start = 0
    return start, unmasked_start


@triton.jit
def _reciprocal(den):
    """1 / den, and 0 where den = 0: a row that sees no key (or only scores of 0) with eps = 0 has
    acc = 0 and den = 0, and its output and gradients are 0, as softpick's."""
    return tl.where(den > 0, 1.0 / den, 0.0)


@triton.jit
def _score_grad(s, e, dp, delta):
    """dS = e * (1[s > 0] * dP - sign(s) * Delta), with e = exp(s) / D (docs/design.md, "Jacobian")."""
    return e * tl.where(s > 0, dp - delta, tl.where(s < 0, delta, 0.0))


# ----------------------------------------------------------------------------------------- forward


@triton.jit
def _forward_blocks(acc, den, shift, q, K, V, rows, dims, start, end, kv_len, qk_scale, offset,
                    HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr, MASKED: tl.constexpr):
    """The online update (module docstring) over key blocks [start, end); shift in log2 units."""
    for first_col in range(start, end, BLOCK_N):
        cols = first_col + tl.arange(0, BLOCK_N)
        k = _load_rows(K, cols, kv_len, dims, HEAD_DIM)
        s = _dot(q, tl.trans(k), None)  # unscaled: qk_scale > 0 keeps signs and the row max
        if MASKED:
            s = tl.where(cols[None, :] <= rows[:, None] + offset, s, 0.0)  # a 0 score weighs nothing
        new_shift = tl.maximum(shift, tl.max(s, 1) * qk_scale)
        rescale = tl.exp2(shift - new_shift)
        p = tl.exp2(s * qk_scale - new_shift[:, None]) - tl.exp2(-new_shift)[:, None]
        den = den * rescale + tl.sum(tl.abs(p), 1)
        v = _load_rows(V, cols, kv_len, dims, HEAD_DIM)
        acc = _dot(tl.maximum(p, 0.0).to(v.dtype), v, acc * rescale[:, None])
        shift = new_shift
    return acc, den, shift


@triton.jit(do_not_specialize=LENGTH_ARGS)
def _forward_kernel(Q, K, V, Out, Shift, Den, scale, eps, q_len, kv_len, group, q_bucket, kv_bucket,
                    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, CAUSAL: tl.constexpr,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    first_row = (tl.num_programs(0) - 1 - tl.program_id(0)) * BLOCK_M  # longest causal rows first
    head = tl.program_id(1).to(tl.int64)  # batch * Hq + query head; its key/value head is head // group
    Q += head * q_len * HEAD_DIM
    Out += head * q_len * HEAD_DIM
    K += head // group * kv_len * HEAD_DIM
    V += head // group * kv_len * HEAD_DIM
    rows = first_row + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, BLOCK_D)
    q = _load_rows(Q, rows, q_len, dims, HEAD_DIM)
    qk_scale = scale * LOG2E

    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    den = tl.zeros([BLOCK_M], tl.float32)
    shift = tl.zeros([BLOCK_M], tl.float32)
    unmasked_end, end = _key_ranges(first_row, q_len, kv_len, CAUSAL, BLOCK_M, BLOCK_N)
    acc, den, shift = _forward_blocks(acc, den, shift, q, K, V, rows, dims, 0, unmasked_end, kv_len,
                                      qk_scale, kv_len - q_len, HEAD_DIM, BLOCK_N, MASKED=False)
    if CAUSAL:
        acc, den, shift = _forward_blocks(acc, den, shift, q, K, V, rows, dims, unmasked_end, end, kv_len,
                                          qk_scale, kv_len - q_len, HEAD_DIM, BLOCK_N, MASKED=True)

    den += eps * tl.exp2(-shift)
    _store_rows(Out, acc * _reciprocal(den)[:, None], rows, q_len, dims, HEAD_DIM)
    tl.store(Shift + head * q_len + rows, shift * LN2, mask=rows < q_len)
    tl.store(Den + head * q_len + rows, den, mask=rows < q_len)


# ---------------------------------------------------------------------------------------- backward


@triton.jit
def _dq_blocks(dq, q, do, shift, delta, K, V, rows, dims, start, end, kv_len, qk_scale, offset,
               HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr, MASKED: tl.constexpr):
    """dq += (dS * den) @ K over key blocks [start, end); the caller divides by den once, at the end."""
    for first_col in range(start, end, BLOCK_N):
        cols = first_col + tl.arange(0, BLOCK_N)
        k = _load_rows(K, cols, kv_len, dims, HEAD_DIM)
        v = _load_rows(V, cols, kv_len, dims, HEAD_DIM)
        s = _dot(q, tl.trans(k), None)
        if MASKED:
            s = tl.where(cols[None, :] <= rows[:, None] + offset, s, 0.0)
        x = tl.exp2(s * qk_scale - shift[:, None])
        dp = _dot(do, tl.trans(v), None)
        ds = _score_grad(s, x, dp, delta[:, None])
        dq = _dot(ds.to(k.dtype), k, dq)
    return dq


@triton.jit(do_not_specialize=LENGTH_ARGS)
def _dq_kernel(Q, K, V, Out, DOut, Shift, Den, Delta, DQ, scale, q_len, kv_len, group, q_bucket, kv_bucket,
               HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, CAUSAL: tl.constexpr,
               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    first_row = (tl.num_programs(0) - 1 - tl.program_id(0)) * BLOCK_M
    head = tl.program_id(1).to(tl.int64)
    Q += head * q_len * HEAD_DIM
    Out += head * q_len * HEAD_DIM
    DOut += head * q_len * HEAD_DIM
    DQ += head * q_len * HEAD_DIM
    Shift += head * q_len
    Den += head * q_len
    Delta += head * q_len
    K += head // group * kv_len * HEAD_DIM
    V += head // group * kv_len * HEAD_DIM
    rows = first_row + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, BLOCK_D)
    q = _load_rows(Q, rows, q_len, dims, HEAD_DIM)
    do = _load_rows(DOut, rows, q_len, dims, HEAD_DIM)
    delta = tl.sum(_load_rows(Out, rows, q_len, dims, HEAD_DIM).to(tl.float32) * do.to(tl.float32), 1)
    tl.store(Delta + rows, delta, mask=rows < q_len)  # for the dK/dV kernel
    shift = tl.load(Shift + rows, mask=rows < q_len, other=0.0) * LOG2E
    den = tl.load(Den + rows, mask=rows < q_len, other=1.0)
    qk_scale = scale * LOG2E

    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    unmasked_end, end = _key_ranges(first_row, q_len, kv_len, CAUSAL, BLOCK_M, BLOCK_N)
    dq = _dq_blocks(dq, q, do, shift, delta, K, V, rows, dims, 0, unmasked_end, kv_len, qk_scale,
                    kv_len - q_len, HEAD_DIM, BLOCK_N, MASKED=False)
    if CAUSAL:
        dq = _dq_blocks(dq, q, do, shift, delta, K, V, rows, dims, unmasked_end, end, kv_len, qk_scale,
                        kv_len - q_len, HEAD_DIM, BLOCK_N, MASKED=True)
    _store_rows(DQ, dq * (scale * _reciprocal(den))[:, None], rows, q_len, dims, HEAD_DIM)


@triton.jit
def _dkdv_blocks(dk, dv, k, v, Q, DOut, Shift, Den, Delta, cols, dims, start, end, q_len, qk_scale, offset,
                 HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, MASKED: tl.constexpr, KEY_ROWS: tl.constexpr):
    """dv += P^T @ dO and dk += dS^T @ Q over query blocks [start, end).

    Tiles are [queries, keys], or [keys, queries] with KEY_ROWS. Which is faster depends on the head
    dim, so it is autotuned: with KEY_ROWS, k and v are left operands and stay in registers (beside
    the dk and dv accumulators); without, P and dS go through shared memory to be transposed."""
    for first_row in range(start, end, BLOCK_M):
        rows = first_row + tl.arange(0, BLOCK_M)
        q = _load_rows(Q, rows, q_len, dims, HEAD_DIM)
        do = _load_rows(DOut, rows, q_len, dims, HEAD_DIM)
        shift = tl.load(Shift + rows, mask=rows < q_len, other=0.0) * LOG2E
        inv_den = _reciprocal(tl.load(Den + rows, mask=rows < q_len, other=1.0))
        delta = tl.load(Delta + rows, mask=rows < q_len, other=0.0)
        floor = tl.exp2(-shift) * inv_den  # exp(-c) / den
        if KEY_ROWS:
            s = _dot(k, tl.trans(q), None)
            visible = cols[:, None] <= rows[None, :] + offset
            shift, inv_den, floor, delta = shift[None, :], inv_den[None, :], floor[None, :], delta[None, :]
        else:
            s = _dot(q, tl.trans(k), None)
            visible = cols[None, :] <= rows[:, None] + offset
            shift, inv_den, floor, delta = shift[:, None], inv_den[:, None], floor[:, None], delta[:, None]
        if MASKED:
            s = tl.where(visible, s, 0.0)
        e = tl.exp2(s * qk_scale - shift) * inv_den  # exp(s) / D
        p = tl.where(s > 0, e - floor, 0.0)
        if KEY_ROWS:
            dv = _dot(p.to(do.dtype), do, dv)
            dp = _dot(v, tl.trans(do), None)
            ds = _score_grad(s, e, dp, delta)
            dk = _dot(ds.to(q.dtype), q, dk)
        else:
            dv = _dot(tl.trans(p.to(do.dtype)), do, dv)
            dp = _dot(do, tl.trans(v), None)
            ds = _score_grad(s, e, dp, delta)
            dk = _dot(tl.trans(ds.to(q.dtype)), q, dk)
    return dk, dv


@triton.jit(do_not_specialize=LENGTH_ARGS)
def _dkdv_kernel(Q, K, V, DOut, Shift, Den, Delta, DK, DV, scale, q_len, kv_len, group, q_bucket, kv_bucket,
                 HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, CAUSAL: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, KEY_ROWS: tl.constexpr):
    first_col = tl.program_id(0) * BLOCK_N
    kv_head = tl.program_id(1).to(tl.int64)  # batch * Hkv + key/value head
    K += kv_head * kv_len * HEAD_DIM
    V += kv_head * kv_len * HEAD_DIM
    DK += kv_head * kv_len * HEAD_DIM
    DV += kv_head * kv_len * HEAD_DIM
    cols = first_col + tl.arange(0, BLOCK_N)
    dims = tl.arange(0, BLOCK_D)
    k = _load_rows(K, cols, kv_len, dims, HEAD_DIM)
    v = _load_rows(V, cols, kv_len, dims, HEAD_DIM)
    qk_scale = scale * LOG2E

    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    start, unmasked_start = _query_ranges(first_col, q_len, kv_len, CAUSAL, BLOCK_M, BLOCK_N)
    for g in range(group):  # the query heads that share this key/value head
        head = kv_head * group + g
        Qh, DOh = Q + head * q_len * HEAD_DIM, DOut + head * q_len * HEAD_DIM
        Shifth, Denh, Deltah = Shift + head * q_len, Den + head * q_len, Delta + head * q_len
        if CAUSAL:
            dk, dv = _dkdv_blocks(dk, dv, k, v, Qh, DOh, Shifth, Denh, Deltah, cols, dims, start, unmasked_start,
                                  q_len, qk_scale, kv_len - q_len, HEAD_DIM, BLOCK_M, MASKED=True, KEY_ROWS=KEY_ROWS)
        dk, dv = _dkdv_blocks(dk, dv, k, v, Qh, DOh, Shifth, Denh, Deltah, cols, dims, unmasked_start, q_len,
                              q_len, qk_scale, kv_len - q_len, HEAD_DIM, BLOCK_M, MASKED=False, KEY_ROWS=KEY_ROWS)
    _store_rows(DK, dk * scale, cols, kv_len, dims, HEAD_DIM)
    _store_rows(DV, dv, cols, kv_len, dims, HEAD_DIM)


# fmt: on
# ------------------------------------------------------------------------------------- autotuning


class Tile(NamedTuple):
    """One launch configuration the autotuner may pick."""

    block_m: int  # query rows per tile
    block_n: int  # keys per tile
    num_warps: int
    num_stages: int  # software-pipelining depth of the loads in the key (or query) loop
    key_rows: bool | None = None  # dK/dV only: [keys, queries] tiles (True) or [queries, keys]

    def config(self) -> triton.Config:
        meta = {"BLOCK_M": self.block_m, "BLOCK_N": self.block_n}
        if self.key_rows is not None:
            meta["KEY_ROWS"] = self.key_rows
        return triton.Config(meta, num_warps=self.num_warps, num_stages=self.num_stages)


class KernelTiles(NamedTuple):
    """A kernel's choices: ``safe`` fits shared memory for every dtype and head dim and is the only one
    the interpreter runs (it cannot benchmark) and the one for short sequences; on a GPU the
    autotuner also times ``tuned``."""

    safe: Tile
    tuned: tuple[Tile, ...]


def _configs(tiles: KernelTiles) -> list[triton.Config]:
    chosen = [tiles.safe] if interpreting() else [tiles.safe, *tiles.tuned]
    return [tile.config() for tile in chosen]


# Host-side integer helpers in plain Python: triton.next_power_of_2 and triton.cdiv are constexpr
# functions in Triton 3.7 and cost about 10 us a call on the host (bench/NOTES.md), and the launchers
# call them for every launch.


def _next_power_of_2(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


SHORT = 512  # sequences up to this long take the safe tile: tuning costs more than it can win


def length_bucket(n: int) -> int:
    """The autotune key of a sequence length: the next power of two, so that T = 1000 and T = 1024
    share one tuning and a new length retunes only when it crosses a power of two."""
    return _next_power_of_2(n)


def _safe_tile_when_short(configs, named_args, **kwargs):
    return configs[:1] if max(named_args["q_bucket"], named_args["kv_bucket"]) <= SHORT else configs


def _autotune(tiles: KernelTiles):
    return triton.autotune(
        configs=_configs(tiles),
        key=["q_bucket", "kv_bucket", "HEAD_DIM", "CAUSAL"],  # and the dtypes, which Triton adds
        prune_configs_by={"early_config_prune": _safe_tile_when_short},
    )


# Measured on an H200 (bench/bench_tiles.py, bench/NOTES.md): the 8-warp tiles with 2 stages are the
# head dim 256 winners (dQ's 128 x 32, dK/dV's 128 x 32 and 64 x 32 there); dK/dV's 64 x 64 with 2 stages
# won at 64 and 128.
FORWARD_TILES = KernelTiles(
    safe=Tile(64, 32, 4, 1),
    tuned=(
        Tile(64, 64, 4, 3),
        Tile(128, 64, 8, 3),
        Tile(128, 128, 8, 3),
        Tile(128, 64, 8, 4),
        Tile(128, 64, 8, 2),
    ),
)
DQ_TILES = KernelTiles(
    safe=Tile(32, 32, 4, 1),
    tuned=(
        Tile(64, 64, 4, 3),
        Tile(128, 64, 8, 3),
        Tile(128, 64, 8, 4),
        Tile(128, 128, 8, 3),
        Tile(128, 32, 8, 2),
        Tile(128, 32, 8, 3),
    ),
)
DKDV_TILES = KernelTiles(
    safe=Tile(32, 32, 4, 1, key_rows=True),
    tuned=(
        Tile(16, 128, 4, 3, key_rows=True),
        Tile(32, 64, 4, 3, key_rows=True),
        Tile(32, 128, 4, 3, key_rows=True),
        Tile(64, 64, 4, 3, key_rows=False),
        Tile(64, 64, 4, 2, key_rows=False),
        Tile(64, 64, 8, 2, key_rows=False),
        Tile(64, 128, 8, 3, key_rows=False),
        Tile(128, 64, 8, 2, key_rows=False),
        Tile(128, 32, 8, 2, key_rows=False),
        Tile(64, 32, 4, 2, key_rows=False),
    ),
)
forward_kernel = _autotune(FORWARD_TILES)(_forward_kernel)
dq_kernel = _autotune(DQ_TILES)(_dq_kernel)
dkdv_kernel = _autotune(DKDV_TILES)(_dkdv_kernel)


# ------------------------------------------------------------------------------ launchers, autograd


def _head_block(head_dim: int) -> int:
    """tl.dot needs power-of-two tiles of at least 16: other head dims are padded (and masked)."""
    return max(16, _next_power_of_2(head_dim))


def _lengths(tq: int, tk: int, group: int) -> tuple[int, ...]:
    """The runtime ints every kernel takes after its tensors and floats: lengths, GQA group, buckets."""
    return tq, tk, group, length_bucket(tq), length_bucket(tk)


def softpick_attention_forward(
    q: Tensor, k: Tensor, v: Tensor, causal: bool, scale: float, eps: float
) -> tuple[Tensor, ...]:
    """Launch the forward kernel on contiguous q, k, v; return out and each row's shift c and den."""
    b, hq, tq, d = q.shape
    hkv, tk = k.shape[1], k.shape[2]
    out = torch.empty_like(q)
    shift = torch.empty(b, hq, tq, device=q.device, dtype=torch.float32)
    den = torch.empty_like(shift)
    grid = lambda meta: (_cdiv(tq, meta["BLOCK_M"]), b * hq)  # noqa: E731
    forward_kernel[grid](
        q, k, v, out, shift, den, scale, eps, *_lengths(tq, tk, hq // hkv),
        HEAD_DIM=d, BLOCK_D=_head_block(d), CAUSAL=causal,
    )  # fmt: skip
    return out, shift, den


def softpick_attention_backward(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    out: Tensor,
    shift: Tensor,
    den: Tensor,
    dout: Tensor,
    causal: bool,
    scale: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """Launch the dQ kernel (which also writes Delta), then the dK/dV kernel; all inputs contiguous.
    eps needs no passing: it is inside den."""
    b, hq, tq, d = q.shape
    hkv, tk = k.shape[1], k.shape[2]
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    delta = torch.empty_like(shift)
    lengths = _lengths(tq, tk, hq // hkv)
    constants = dict(HEAD_DIM=d, BLOCK_D=_head_block(d), CAUSAL=causal)
    dq_grid = lambda meta: (_cdiv(tq, meta["BLOCK_M"]), b * hq)  # noqa: E731
    dq_kernel[dq_grid](q, k, v, out, dout, shift, den, delta, dq, scale, *lengths, **constants)
    dkdv_grid = lambda meta: (_cdiv(tk, meta["BLOCK_N"]), b * hkv)  # noqa: E731
    dkdv_kernel[dkdv_grid](q, k, v, dout, shift, den, delta, dk, dv, scale, *lengths, **constants)
    return dq, dk, dv


class FlashSoftpickFunction(torch.autograd.Function):
    """Autograd wrapper: saves q, k, v, out and two fp32 numbers per query row, nothing T x T.
    First derivatives only: the backward is not itself differentiable."""

    @staticmethod
    def forward(ctx, q, k, v, causal, scale, eps):
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        out, shift, den = softpick_attention_forward(q, k, v, causal, scale, eps)
        ctx.save_for_backward(q, k, v, out, shift, den)
        ctx.causal, ctx.scale = causal, scale
        return out

    @staticmethod
    def backward(ctx, dout):
        if torch.is_grad_enabled():  # backward(create_graph=True) runs with grad mode on
            raise RuntimeError(
                "flash_softpick_attention has no double backward: its gradients cannot be part of a "
                "graph, so create_graph=True (a gradient penalty, a Hessian) would be silently wrong; "
                "use minisoftpick.naive_attention for higher derivatives"
            )
        q, k, v, out, shift, den = ctx.saved_tensors
        grads = softpick_attention_backward(
            q, k, v, out, shift, den, dout.contiguous(), ctx.causal, ctx.scale
        )
        return *grads, None, None, None


def _check_kernel_inputs(q: Tensor) -> None:
    """What the kernel needs beyond check_attention_inputs; ValueError/TypeError before any launch."""
    if q.dtype not in SUPPORTED_DTYPES:
        raise TypeError(
            f"q, k, v must be float16, bfloat16 or float32 for the kernel, got {q.dtype} "
            "(use minisoftpick.naive_attention for float64)"
        )
    if not 1 <= q.shape[3] <= MAX_HEAD_DIM:
        raise ValueError(f"head_dim (q.shape[3]) must be between 1 and {MAX_HEAD_DIM}, got {q.shape[3]}")
    if interpreting():
        check_interpreter_ready()
    elif q.device.type != "cuda":
        raise ValueError(
            f"q, k, v must be on a CUDA device, got {q.device}; to run the kernel on the CPU "
            "set TRITON_INTERPRET=1 before importing minisoftpick"
        )
    if q.shape[0] * q.shape[1] > MAX_GRID_HEADS:
        raise ValueError(
            f"batch * query heads must be at most {MAX_GRID_HEADS}, got {q.shape[0] * q.shape[1]}"
        )


def flash_softpick_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    causal: bool = True,
    scale: float | None = None,
    eps: float = DEFAULT_EPS,
) -> Tensor:
    """Softpick attention with the Triton kernels: naive_attention(q, k, v, causal=, scale=) without
    the T x T matrix, differentiable in q, k and v (first derivatives only).

    q [B, Hq, Tq, D], k and v [B, Hkv, Tk, D] with Hq a multiple of Hkv (GQA), any Tq and Tk, head
    dim 1..256, float16, bfloat16 or float32 on a CUDA GPU (on the CPU through the Triton
    interpreter). Causal masks are bottom-right aligned; ``scale`` (> 0) defaults to 1/sqrt(D);
    ``eps`` (>= 0) is softpick's, added to each row's denominator (docs/design.md, "Stable form").
    A row that sees no key gives zeros, also with eps = 0. Non-contiguous inputs are copied once.
    """
    scale, _, eps = check_attention_inputs(q, k, v, causal=causal, scale=scale, eps=eps)
    _check_kernel_inputs(q)
    if interpreting() and q.dtype == torch.bfloat16:  # the interpreter gets bf16 wrong: compute in fp32
        out = FlashSoftpickFunction.apply(q.float(), k.float(), v.float(), causal, scale, eps)
        return out.to(torch.bfloat16)
    return FlashSoftpickFunction.apply(q, k, v, causal, scale, eps)
