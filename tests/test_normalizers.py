"""softpick and the other normalizers against float64 formulas, edge cases, gradients, bad input."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import minisoftpick as msp
from minisoftpick.normalizers import DEFAULT_EPS


def softpick_formula(x: torch.Tensor, dim: int = -1, eps: float = DEFAULT_EPS) -> torch.Tensor:
    """The paper's definition, unshifted, in float64: only valid where exp(x) does not overflow."""
    e = torch.expm1(x.double())
    return torch.relu(e) / (e.abs().sum(dim, keepdim=True) + eps)


rows = st.lists(st.floats(-30, 30, allow_nan=False, width=64), min_size=1, max_size=24)


# The stable form's numerator exp(x - c) - exp(-c) cancels: it is off by up to an ulp of 1
# (2.2e-16 in float64), so when every |x| is far below eps a weight is off by up to 2.2e-16 / eps.
CANCELLATION = 4 * torch.finfo(torch.float64).eps / DEFAULT_EPS


@settings(max_examples=200, deadline=None, derandomize=True)
@given(rows)
def test_softpick_matches_definition(values):
    x = torch.tensor(values, dtype=torch.float64)
    torch.testing.assert_close(msp.softpick(x), softpick_formula(x), rtol=1e-10, atol=CANCELLATION)


def test_softpick_of_scores_far_below_eps_is_off_by_at_most_the_cancellation():
    x = torch.tensor([1.339459984288309e-16], dtype=torch.float64)  # found by hypothesis
    torch.testing.assert_close(msp.softpick(x), softpick_formula(x), rtol=0, atol=CANCELLATION)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(rows)
def test_softpick_properties(values):
    x = torch.tensor(values, dtype=torch.float64)
    p = msp.softpick(x)
    assert torch.all(p >= 0)
    assert p.sum() <= 1 + 1e-12
    assert torch.all(p[x <= 0] == 0)


def test_all_nonpositive_row_is_zero_and_has_finite_zero_gradient():
    x = torch.tensor([[-5.0, -1e-3, 0.0, -700.0]], dtype=torch.float64, requires_grad=True)
    p = msp.softpick(x)
    assert torch.equal(p, torch.zeros_like(p))
    p.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_not_shift_invariant():
    x = torch.tensor([0.5, 1.0, -0.2], dtype=torch.float64)
    assert not torch.allclose(msp.softpick(x), msp.softpick(x + 3))


@pytest.mark.parametrize("big", [88.0, 500.0, 1e4])
def test_stable_for_large_scores(big):
    x = torch.tensor([[big, big - 1.0, -3.0, 0.5]])
    p = msp.softpick(x)
    assert torch.isfinite(p).all()
    # with exp(big) dominating, the terms are ~ exp(x - big): softpick ~ softmax over the large entries
    expected = torch.tensor([1.0, math.exp(-1.0), 0.0, 0.0]) / (1 + math.exp(-1.0))
    torch.testing.assert_close(p[0], expected, rtol=1e-5, atol=1e-6)


def test_stable_for_scores_far_below_zero():
    x = torch.full((2, 5), -1e4)
    assert torch.equal(msp.softpick(x), torch.zeros_like(x))


def test_mask_removes_entries_from_the_denominator():
    x = torch.tensor([[1.0, -2.0, 0.5, 3.0]], dtype=torch.float64)
    mask = torch.tensor([[True, False, True, False]])
    expected = torch.zeros_like(x)
    expected[0, [0, 2]] = softpick_formula(x[0, [0, 2]])
    torch.testing.assert_close(msp.softpick(x, mask=mask), expected)


def test_fully_masked_row_is_zero_with_finite_gradient():
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    mask = torch.ones(3, 4, dtype=torch.bool)
    mask[1] = False
    p = msp.softpick(x, mask=mask)
    assert torch.equal(p[1], torch.zeros(4, dtype=torch.float64))
    p.sum().backward()
    assert torch.isfinite(x.grad).all() and torch.equal(x.grad[1], torch.zeros(4, dtype=torch.float64))


def test_mask_broadcasts():
    x = torch.randn(2, 3, 5, dtype=torch.float64)
    mask = torch.rand(1, 3, 5) > 0.3
    p = msp.softpick(x, mask=mask)
    for b in range(2):
        for r in range(3):
            keep = mask[0, r]
            torch.testing.assert_close(p[b, r, keep], softpick_formula(x[b, r, keep]))
            assert torch.all(p[b, r, ~keep] == 0)


@pytest.mark.parametrize("dim", [0, 1, -1, -2])
def test_any_dim(dim):
    x = torch.randn(3, 4, 5, dtype=torch.float64)
    torch.testing.assert_close(msp.softpick(x, dim=dim), softpick_formula(x, dim=dim))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_computed_in_fp32(dtype):
    x = (torch.randn(4, 64) * 4).to(dtype)
    p = msp.softpick(x)
    assert p.dtype == dtype
    torch.testing.assert_close(p.double(), softpick_formula(x.double()), atol=4e-3, rtol=1e-2)


def test_gradcheck_mixed_signs():
    x = (torch.randn(3, 6, dtype=torch.float64) * 2).requires_grad_()
    mask = torch.rand(3, 6) > 0.2
    assert torch.autograd.gradcheck(lambda t: msp.softpick(t, mask=mask), (x,))


def test_jacobian_matches_design_formula():
    """dp_i/dx_j = (delta_ij 1[x_i > 0] e^{x_i} - p_i sign(x_j) e^{x_j}) / D (docs/design.md, "Jacobian")."""
    x = torch.tensor([1.2, -0.7, 0.3, 2.0, -1.5], dtype=torch.float64)
    p = msp.softpick(x)
    d = torch.expm1(x).abs().sum() + DEFAULT_EPS
    expected = (torch.diag((x > 0) * x.exp()) - p[:, None] * (x.sign() * x.exp())[None, :]) / d
    torch.testing.assert_close(torch.autograd.functional.jacobian(msp.softpick, x), expected)


def test_masked_softmax_zero_for_fully_masked_rows():
    x = torch.randn(2, 4)
    mask = torch.tensor([[True, True, False, True], [False] * 4])
    p = msp.masked_softmax(x, mask=mask)
    torch.testing.assert_close(p[0, [0, 1, 3]], torch.softmax(x[0, [0, 1, 3]], -1))
    assert p[0, 2] == 0 and torch.equal(p[1], torch.zeros(4))


def test_softmax1_and_sink_softmax():
    x = torch.randn(3, 7, dtype=torch.float64) * 3
    torch.testing.assert_close(msp.softmax1(x), x.exp() / (1 + x.exp().sum(-1, keepdim=True)))
    sink = torch.tensor([[0.5], [-1.0], [2.0]], dtype=torch.float64)
    torch.testing.assert_close(
        msp.sink_softmax(x, sink), x.exp() / (sink.exp() + x.exp().sum(-1, keepdim=True))
    )
    big = torch.full((1, 3), 1000.0)
    assert torch.isfinite(msp.softmax1(big)).all()


def test_registry_names_and_errors():
    assert {"softpick", "softmax", "softmax1"} <= set(msp.NORMALIZERS)
    with pytest.raises(ValueError, match="already registered"):
        msp.register_normalizer("softpick")(lambda s, m: s)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: msp.softpick([1.0, 2.0]), TypeError, "x must be a torch.Tensor"),
        (lambda: msp.softpick(torch.arange(3)), TypeError, "x must be a floating tensor"),
        (lambda: msp.softpick(torch.tensor(1.0)), ValueError, "at least one dimension"),
        (lambda: msp.softpick(torch.randn(2, 3), dim=2), ValueError, "dim must be in"),
        (lambda: msp.softpick(torch.randn(2, 3), eps=-1.0), ValueError, "eps must be >= 0"),
        (lambda: msp.softpick(torch.randn(2, 3), mask=torch.ones(2, 3)), TypeError, "mask must be a bool"),
        (
            lambda: msp.softpick(torch.randn(2, 3), mask=torch.ones(4, 3, dtype=torch.bool)),
            ValueError,
            "broadcast",
        ),
    ],
)
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()
