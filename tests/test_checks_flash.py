"""Notebooks 05 and 06's checks accept the reference solutions and reject plausible wrong answers.

The wrong flash kernels are one kernel with constexpr switches, each switch one mistake, run through
the Triton interpreter on the CPU (or on the GPU when there is one) at the checks' tiny sizes.
"""

import pytest
import torch

from minisoftpick import checks, solutions
from minisoftpick.checks import CheckFailed

triton = pytest.importorskip("triton")
tl = pytest.importorskip("triton.language")


def assert_rejected(check, wrong, property_name, capsys):
    with pytest.raises(CheckFailed, match=property_name) as failure:
        check(wrong)
    assert "failed on" in str(failure.value) and "Hint:" in str(failure.value)
    assert f"\u2717 {property_name}" in capsys.readouterr().out


# ---- flash_forward: fn(q, k, v, causal=True, scale=None) -> out ----------------------------------


# fmt: off
@triton.jit
def flash_forward_variant(Q, K, V, Out, scale, q_len, kv_len,
                          HEAD_DIM: tl.constexpr, CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                          RESCALE_DEN: tl.constexpr, RESCALE_ACC: tl.constexpr, C_START: tl.constexpr,
                          HIDDEN_SCORE: tl.constexpr, SCALE: tl.constexpr, INCLUSIVE: tl.constexpr):
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
        if CAUSAL:
            if INCLUSIVE:
                visible = cols[None, :] <= rows[:, None] + offset
            else:
                visible = cols[None, :] < rows[:, None] + offset
            s = tl.where(visible, s, HIDDEN_SCORE)
        c_new = tl.maximum(c, tl.max(s, 1))
        r = tl.exp(c - c_new)
        p = tl.exp(s - c_new[:, None]) - tl.exp(-c_new)[:, None]
        den = (den * r if RESCALE_DEN else den) + tl.sum(tl.abs(p), 1)
        acc = (acc * r[:, None] if RESCALE_ACC else acc) + tl.dot(tl.maximum(p, 0.0), v, input_precision="ieee")
        c = c_new
    den += 1e-6 * tl.exp(-c)
    tl.store(Out + rows[:, None] * HEAD_DIM + dims[None, :], acc / den[:, None], mask=rows[:, None] < q_len)
# fmt: on


def flash_forward_with(
    rescale_den=True, rescale_acc=True, c_start=0.0, hidden_score=0.0, scale_scores=True, inclusive=True
):
    def launch(q, k, v, causal=True, scale=None):
        b, h, tq, d = q.shape
        out = torch.empty_like(q)
        flash_forward_variant[(triton.cdiv(tq, 16), b * h)](
            q, k, v, out, d**-0.5 if scale is None else scale, tq, k.shape[2],
            HEAD_DIM=d, CAUSAL=causal, BLOCK_M=16, BLOCK_N=16, RESCALE_DEN=rescale_den, RESCALE_ACC=rescale_acc,
            C_START=c_start, HIDDEN_SCORE=hidden_score, SCALE=scale_scores, INCLUSIVE=inclusive,
        )  # fmt: skip
        return out

    return launch


@pytest.mark.parametrize(
    ("wrong", "property_name"),
    [
        (flash_forward_with(rescale_den=False, rescale_acc=False), "matches naive attention"),
        (flash_forward_with(rescale_acc=False), "matches naive attention"),
        (flash_forward_with(rescale_den=False), "matches naive attention"),
        (flash_forward_with(scale_scores=False), "matches naive attention"),
        (flash_forward_with(hidden_score=float("-inf")), "causal mask, ragged T"),
        (flash_forward_with(inclusive=False), "causal mask, ragged T"),
        (flash_forward_with(c_start=float("-inf")), "first key block far below zero"),
        (
            lambda q, k, v, causal=True, scale=None: solutions.flash_forward(q, k, v, causal, 0.25),
            "uses scale",
        ),
        (
            lambda q, k, v, causal=True, scale=None: solutions.flash_forward(q, k, v, causal, scale).double(),
            "shape and dtype",
        ),
    ],
)
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy's overflow warnings in the interpreter
def test_flash_forward_check_rejects(wrong, property_name, capsys):
    assert_rejected(checks.flash_forward, wrong, property_name, capsys)


def test_flash_forward_check_accepts_the_solution_and_a_kernel_visiting_every_block():
    assert checks.flash_forward(solutions.flash_forward) is solutions.flash_forward
    right = flash_forward_with()  # visits the causal blocks past the diagonal too: only slower
    assert checks.flash_forward(right) is right


def test_unfinished_launcher_falls_back_to_the_solution(capsys):
    def unfinished(q, k, v, causal=True, scale=None):
        raise NotImplementedError

    assert checks.flash_forward(unfinished) is solutions.flash_forward
    assert "not implemented yet" in capsys.readouterr().out


# ---- softpick_score_grad: fn(s, shift, den, dp, delta) -> ds -------------------------------------


def score_grad_with(indicator=lambda s: s > 0, sign=torch.sign, shifted=True):
    def ds(s, shift, den, dp, delta):
        e = torch.exp(s - shift[:, None] if shifted else s) / den[:, None]
        return e * (indicator(s) * dp - sign(s) * delta[:, None])

    return ds


def softmax_style(s, shift, den, dp, delta):
    p = torch.relu(torch.exp(s - shift[:, None]) - torch.exp(-shift)[:, None]) / den[:, None]
    return p * (dp - delta[:, None])


@pytest.mark.parametrize(
    ("wrong", "property_name"),
    [
        (softmax_style, "matches autograd on random scores"),
        (score_grad_with(shifted=False), "matches autograd on random scores"),
        (score_grad_with(sign=lambda s: torch.ones_like(s)), "matches autograd on random scores"),
        (score_grad_with(indicator=lambda s: torch.ones_like(s)), "matches autograd on random scores"),
        (score_grad_with(indicator=lambda s: s >= 0), "scores exactly 0 get zero gradient"),
        (score_grad_with(sign=lambda s: (s > 0).double()), "matches autograd on random scores"),
    ],
)
def test_softpick_score_grad_check_rejects(wrong, property_name, capsys):
    assert_rejected(checks.softpick_score_grad, wrong, property_name, capsys)


def test_softpick_score_grad_check_accepts_the_solution():
    assert checks.softpick_score_grad(solutions.softpick_score_grad) is solutions.softpick_score_grad
    right = score_grad_with()
    assert checks.softpick_score_grad(right) is right
