"""Notebook 04's Triton checks accept the reference kernels and reject plausible wrong kernels.

The wrong kernels are one kernel per exercise with constexpr switches, each switch one mistake.
They keep their stores masked: an unmasked store would write past the output for real.
"""

import subprocess
import sys

import pytest
import torch

import minisoftpick as msp
from minisoftpick import solutions
from minisoftpick.checks import CheckFailed

triton = pytest.importorskip("triton")
tl = pytest.importorskip("triton.language")


# ---- softpick_rows: fn(x) -> y ------------------------------------------------------------------


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
            x,
            y,
            x.shape[1],
            x.stride(0),
            y.stride(0),
            BLOCK=triton.next_power_of_2(x.shape[1]),
            MASK_LOAD=mask_load,
            OTHER=other,
            DROP_MASKED=drop_masked,
            SHIFT=shift,
            USE_STRIDE=use_stride,
            RELU=relu,
        )
        return y

    return launch


@pytest.mark.parametrize(
    ("wrong", "property_name"),
    [
        (softpick_rows_with(relu=False), "matches softpick"),
        (softpick_rows_with(shift=False), "stable for large scores"),
        (softpick_rows_with(drop_masked=False), "masked columns stay out of the denominator"),
        (softpick_rows_with(mask_load=False), "ragged rows read only their own columns"),
        (softpick_rows_with(use_stride=False), "any row stride"),
        (lambda x: torch.softmax(x, -1), "matches softpick"),
        (lambda x: msp.softpick(x).double(), "shape and dtype"),
    ],
)
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy's overflow warnings from the unshifted kernel
def test_softpick_rows_check_rejects(wrong, property_name, capsys):
    with pytest.raises(CheckFailed, match=property_name) as failure:
        msp.checks.softpick_rows(wrong)
    assert "failed on" in str(failure.value) and "Hint:" in str(failure.value)
    assert f"\u2717 {property_name}" in capsys.readouterr().out


@pytest.mark.parametrize(
    "right",
    [
        solutions.softpick_rows,
        softpick_rows_with(),
        softpick_rows_with(other=0.0, drop_masked=False),  # a 0 score adds exp(0 - c) - exp(-c) = 0
        lambda x: msp.softpick(x),
    ],
)
def test_softpick_rows_check_accepts(right):
    assert msp.checks.softpick_rows(right) is right


# ---- score_tile: fn(q, k, scale) -> s -----------------------------------------------------------


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
            q,
            k,
            s,
            m,
            n,
            d,
            s_scale,
            *q.stride(),
            *k.stride(),
            *s.stride(),
            BLOCK_M=16,
            BLOCK_N=16,
            BLOCK_D=max(16, triton.next_power_of_2(d)),
            SCALE=scale,
            STRIDES=strides,
            MASK_DIMS=mask_dims,
            TRANSPOSE_K=transpose_k,
            BOTH_PROGRAM_IDS=both_program_ids,
            ROWS_WITH_M=rows_with_m,
        )
        return s

    return launch


@pytest.mark.parametrize(
    ("wrong", "property_name"),
    [
        (score_tile_with(transpose_k=False), "one tile"),
        (score_tile_with(scale=False), "scores multiplied by scale"),
        (score_tile_with(both_program_ids=False), "every tile of the grid"),
        (score_tile_with(rows_with_m=False), "ragged M and N"),
        (score_tile_with(mask_dims=False), "D not a power of two"),
        (score_tile_with(strides=False), "any strides"),
        (lambda q, k, scale: (q @ k.T * scale).double(), "shape and dtype"),
    ],
)
def test_score_tile_check_rejects(wrong, property_name, capsys):
    with pytest.raises(CheckFailed, match=property_name) as failure:
        msp.checks.score_tile(wrong)
    assert "failed on" in str(failure.value) and "Hint:" in str(failure.value)
    assert f"\u2717 {property_name}" in capsys.readouterr().out


@pytest.mark.parametrize(
    "right", [solutions.score_tile, score_tile_with(), lambda q, k, scale: q @ k.T * scale]
)
def test_score_tile_check_accepts(right):
    assert msp.checks.score_tile(right) is right


# ---- the exercise machinery ---------------------------------------------------------------------


@pytest.mark.parametrize("check", [msp.checks.softpick_rows, msp.checks.score_tile])
def test_unfinished_launcher_falls_back_to_the_solution(check, capsys):
    def stub(*args):
        raise NotImplementedError("write the kernel body, then delete this line")

    assert check(stub) is getattr(solutions, check.__name__)
    assert f"minisoftpick.solutions.{check.__name__}" in capsys.readouterr().out


def test_solutions_mode_checks_the_solution(monkeypatch):
    monkeypatch.setenv("MSP_SOLUTIONS", "1")
    assert msp.checks.softpick_rows(softpick_rows_with(shift=False)) is solutions.softpick_rows


def test_importing_the_package_defines_no_kernel():
    """`import minisoftpick` works without Triton (macOS): kernel modules load on first use."""
    code = "import sys, minisoftpick; print(sorted(m for m in sys.modules if m.split('.')[0] == 'triton'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
