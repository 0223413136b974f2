"""Every exercise check accepts the reference and rejects plausible wrong answers."""

import math

import pytest
import torch

import minisoftpick as msp
from minisoftpick import solutions
from minisoftpick.checks import CheckFailed

# ---- softpick: fn(x, dim=-1) ------------------------------------------------------------------


def softmax(x, dim=-1):
    return torch.softmax(x, dim)


def no_relu(x, dim=-1):
    c = x.amax(dim, keepdim=True).clamp(min=0)
    e = torch.exp(x - c) - torch.exp(-c)
    return e / (e.abs().sum(dim, keepdim=True) + 1e-6 * torch.exp(-c))


def no_abs(x, dim=-1):
    c = x.amax(dim, keepdim=True).clamp(min=0)
    e = torch.exp(x - c) - torch.exp(-c)
    return torch.relu(e) / (e.sum(dim, keepdim=True) + 1e-6 * torch.exp(-c))


def unstable(x, dim=-1):
    e = torch.exp(x) - 1
    return torch.relu(e) / (e.abs().sum(dim, keepdim=True) + 1e-6)


def shift_by_max_alone(x, dim=-1):  # the paper's code: exp(-m) overflows when m << 0
    m = x.amax(dim, keepdim=True)
    e = torch.exp(x - m) - torch.exp(-m)
    return torch.relu(e) / (e.abs().sum(dim, keepdim=True) + 1e-6 * torch.exp(-m))


def assumes_shift_invariance(x, dim=-1):
    e = torch.exp(x - x.amax(dim, keepdim=True)) - 1
    return torch.relu(e) / (e.abs().sum(dim, keepdim=True) + 1e-6)


def ignores_dim(x, dim=-1):
    return msp.softpick(x, dim=-1)


def returns_float32(x, dim=-1):
    return msp.softpick(x.float(), dim=dim)


def breaks_gradient(x, dim=-1):
    return msp.softpick(x.detach(), dim=dim)


@pytest.mark.parametrize(
    ("wrong", "property_name"),
    [
        (softmax, "zero weight where x <= 0"),
        (no_relu, "zero weight where x <= 0"),
        (no_abs, "negative scores count in the denominator"),
        (ignores_dim, "respects dim"),
        (assumes_shift_invariance, "negative scores count in the denominator"),
        (unstable, "stable for large scores"),
        (shift_by_max_alone, "stable for scores far below zero"),
        (returns_float32, "half precision"),
        (breaks_gradient, "gradient"),
    ],
)
def test_softpick_check_rejects(wrong, property_name, capsys):
    with pytest.raises(CheckFailed, match=property_name) as failure:
        msp.checks.softpick(wrong)
    message = str(failure.value)
    assert "failed on" in message and "Hint:" in message
    assert f"\u2717 {property_name}" in capsys.readouterr().out


@pytest.mark.parametrize("right", [solutions.softpick, lambda x, dim=-1: msp.softpick(x, dim=dim)])
def test_softpick_check_accepts(right):
    assert msp.checks.softpick(right) is right


# ---- softpick Jacobian: fn(x) -> J[i, j] = d p_i / d x_j ----------------------------------------


def softmax_jacobian(x):
    p = torch.softmax(x, -1)
    return torch.diag(p) - torch.outer(p, p)


def jacobian_from(numerator_slope, denominator_slope, shift=lambda x: x.max().clamp(min=0)):
    """(diag(numerator_slope(x, e)) - outer(p, denominator_slope(x, e))) / D, e = e^(x - c), c = shift(x)."""

    def jacobian(x):
        c = shift(x)
        e = torch.exp(x - c)
        den = (e - torch.exp(-c)).abs().sum() + 1e-6 * torch.exp(-c)
        p = torch.relu(e - torch.exp(-c)) / den
        return (torch.diag(numerator_slope(x, e)) - torch.outer(p, denominator_slope(x, e))) / den

    return jacobian


def right_numerator(x, e):
    return (x > 0) * e


def right_denominator(x, e):
    return torch.sign(x) * e


@pytest.mark.parametrize(
    ("wrong", "property_name"),
    [
        (softmax_jacobian, "rows where x_i <= 0 are zero"),
        (jacobian_from(lambda x, e: e, right_denominator), "rows where x_i <= 0 are zero"),
        (jacobian_from(right_numerator, lambda x, e: e), "negative scores move the denominator"),
        (lambda x: solutions.softpick_jacobian(x).mT, "transposed"),
        (jacobian_from(right_numerator, right_denominator, shift=lambda x: 0.0 * x.max()), "large scores"),
        (lambda x: torch.autograd.functional.jacobian(shift_by_max_alone, x), "far below zero"),
    ],
)
def test_softpick_jacobian_check_rejects(wrong, property_name):
    with pytest.raises(CheckFailed, match=property_name):
        msp.checks.softpick_jacobian(wrong)


@pytest.mark.parametrize(
    "right",
    [
        solutions.softpick_jacobian,
        jacobian_from(right_numerator, right_denominator),
        lambda x: torch.autograd.functional.jacobian(msp.softpick, x),
    ],
)
def test_softpick_jacobian_check_accepts(right):
    assert msp.checks.softpick_jacobian(right) is right


# ---- naive attention: fn(q, k, v, causal=True) -----------------------------------------------


def attention_with(normalize, keep_rule=lambda i, j, tq, tk: j <= i + tk - tq, scale_by_sqrt_d=True):
    def attention(q, k, v, causal=True):
        tq, tk, d = q.shape[-2], k.shape[-2], q.shape[-1]
        s = q @ k.transpose(-1, -2) / (math.sqrt(d) if scale_by_sqrt_d else 1.0)
        i = torch.arange(tq)[:, None]
        j = torch.arange(tk)[None, :]
        keep = keep_rule(i, j, tq, tk) if causal else torch.ones(tq, tk, dtype=torch.bool)
        return normalize(s, keep) @ v

    return attention


def masked_in_denominator(s, keep):
    return msp.softpick(s.masked_fill(~keep, float("-inf")))  # exp(-inf) - 1 = -1 per masked key


@pytest.mark.parametrize(
    ("wrong", "property_name"),
    [
        (attention_with(lambda s, keep: msp.masked_softmax(s, mask=keep)), "attend to nothing"),
        (attention_with(masked_in_denominator), "masked keys stay out"),
        (
            attention_with(lambda s, keep: msp.softpick(s, mask=keep), lambda i, j, tq, tk: j < i + tk - tq),
            "causal mask",
        ),
        (
            attention_with(lambda s, keep: msp.softpick(s, mask=keep), lambda i, j, tq, tk: j <= i + 1),
            "causal mask",
        ),
        (
            attention_with(lambda s, keep: msp.softpick(s, mask=keep), scale_by_sqrt_d=False),
            "scaled by 1/sqrt",
        ),
        (attention_with(lambda s, keep: msp.softpick(s, mask=keep), lambda i, j, tq, tk: j <= i), "Tq != Tk"),
        (lambda q, k, v, causal=True: msp.naive_attention(q.detach(), k, v, causal=causal), "gradient"),
    ],
)
def test_naive_attention_check_rejects(wrong, property_name):
    with pytest.raises(CheckFailed, match=property_name):
        msp.checks.naive_attention(wrong)


@pytest.mark.parametrize(
    "right",
    [
        solutions.naive_attention,
        attention_with(lambda s, keep: msp.softpick(s, mask=keep)),
        lambda q, k, v, causal=True: msp.naive_attention(q, k, v, causal=causal),
    ],
)
def test_naive_attention_check_accepts(right):
    assert msp.checks.naive_attention(right) is right


# ---- online softpick: fn(q, k, v, causal=True, block_size=16) --------------------------------


def online_with(start_shift_at_first_max=False, rescale_denominator=True, rescale_output=True):
    def attention(q, k, v, causal=True, block_size=16):
        tq, tk, d = q.shape[-2], k.shape[-2], q.shape[-1]
        fill = float("-inf") if start_shift_at_first_max else 0.0
        c = torch.full((*q.shape[:-1], 1), fill, dtype=q.dtype)
        den = torch.zeros_like(q[..., :1])
        acc = torch.zeros_like(q)
        keep_all = msp.causal_mask(tq, tk) if causal else torch.ones(tq, tk, dtype=torch.bool)
        for start in range(0, tk, block_size):
            s = q @ k[..., start : start + block_size, :].transpose(-1, -2) / math.sqrt(d)
            keep = keep_all[:, start : start + block_size]
            c_new = torch.maximum(c, s.masked_fill(~keep, float("-inf")).amax(-1, keepdim=True))
            r = torch.exp(c - c_new)
            p = (torch.exp(s - c_new) - torch.exp(-c_new)).masked_fill(~keep, 0.0)
            den = (den * r if rescale_denominator else den) + p.abs().sum(-1, keepdim=True)
            acc = (acc * r if rescale_output else acc) + torch.relu(p) @ v[..., start : start + block_size, :]
            c = c_new
        return acc / (den + 1e-6 * torch.exp(-c))

    return attention


@pytest.mark.parametrize(
    ("wrong", "property_name"),
    [
        (online_with(rescale_denominator=False), "every block size"),
        (online_with(rescale_output=False), "every block size"),
        (online_with(start_shift_at_first_max=True), "far below zero"),
        (lambda q, k, v, causal=True, block_size=16: msp.naive_attention(q, k, v, causal=True), "non-causal"),
    ],
)
def test_online_check_rejects(wrong, property_name):
    with pytest.raises(CheckFailed, match=property_name):
        msp.checks.online_softpick_attention(wrong)


@pytest.mark.parametrize("right", [solutions.online_softpick_attention, online_with()])
def test_online_check_accepts(right):
    assert msp.checks.online_softpick_attention(right) is right


# ---- the exercise machinery ---------------------------------------------------------------------


def test_unfinished_stub_falls_back_to_the_solution(capsys):
    def stub(x, dim=-1):
        raise NotImplementedError

    assert msp.checks.softpick(stub) is solutions.softpick
    assert "not implemented yet" in capsys.readouterr().out


def test_solutions_mode_checks_the_solution(monkeypatch, capsys):
    monkeypatch.setenv("MSP_SOLUTIONS", "1")
    assert msp.checks.softpick(softmax) is solutions.softpick
    assert "MSP_SOLUTIONS=1" in capsys.readouterr().out


def test_check_failed_is_an_assertion_error():
    assert issubclass(CheckFailed, AssertionError)


def test_check_needs_a_callable():
    with pytest.raises(TypeError, match="pass your function"):
        msp.checks.softpick(torch.zeros(3))
