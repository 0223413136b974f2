"""Notebook 06's exercise: the gradient of softpick attention's scores (docs/design.md, "Backward")."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import tolerances
from ..normalizers import softpick as reference_softpick
from .core import Exercise, Property, call

EPS = 1e-6  # msp.softpick's default eps, which the forward's saved den includes


def forward_saved(s: Tensor) -> tuple[Tensor, Tensor]:
    """The per-row pair the forward saves for scores s [M, N]: c = max(rowmax, 0), den = D * exp(-c)."""
    shift = s.amax(-1).clamp_min(0.0)
    floor = torch.exp(-shift)
    den = (torch.exp(s - shift[:, None]) - floor[:, None]).abs().sum(-1) + EPS * floor
    return shift, den


def block_case(make):
    """Inputs (s, shift, den, dp, delta) for scores make(g) [M, N], random V [N, 8] and dO [M, 8]."""

    def inputs(g: torch.Generator):
        s = make(g)
        v = torch.randn(s.shape[1], 8, generator=g, dtype=torch.float64)
        dout = torch.randn(s.shape[0], 8, generator=g, dtype=torch.float64)
        out = reference_softpick(s) @ v
        return call(s, *forward_saved(s), dout @ v.T, (dout * out).sum(-1), v=v, dout=dout)

    return inputs


def autograd_ds(s, shift, den, dp, delta, v, dout) -> Tensor:
    """dL/ds for L = sum(softpick(s) @ v * dout), as autograd finds it."""
    s = s.detach().requires_grad_(True)
    (ds,) = torch.autograd.grad(((reference_softpick(s) @ v) * dout).sum(), s)
    return ds


def score_grad_property(name: str, case: str, make, hint: str) -> Property:
    return Property(
        name,
        case,
        block_case(make),
        hint,
        observe=lambda fn, s, shift, den, dp, delta, v, dout: fn(s, shift, den, dp, delta),
    )


def rand(*shape, low=0.0, high=1.0):
    return lambda g: low + (high - low) * torch.rand(*shape, generator=g, dtype=torch.float64)


softpick_score_grad = Exercise(
    name="softpick_score_grad",
    contract="fn(s, shift, den, dp, delta) -> ds for one block of scores s [M, N] (float64), the forward's "
    "saved shift c [M] and den [M], dp = dO @ V^T [M, N] and delta = rowsum(dO * O) [M]",
    reference=autograd_ds,
    seed=7,
    tolerance=tolerances.FLOAT64,
    properties=[
        score_grad_property(
            "matches autograd on random scores",
            "s = 2 * randn(6, 10)",
            lambda g: 2 * torch.randn(6, 10, generator=g, dtype=torch.float64),
            "dS_j = exp(s_j) / D * (1[s_j > 0] * dP_j - sign(s_j) * Delta), and exp(s_j) / D = "
            "exp(s_j - c) / den: the saved den already carries the factor exp(-c)",
        ),
        score_grad_property(
            "negative scores get gradient through the denominator",
            "s: one positive score per row, the rest in (-3, 0)",
            lambda g: torch.cat([rand(4, 1, low=0.5, high=1.5)(g), rand(4, 7, low=-3.0, high=0.0)(g)], 1),
            "a negative score has zero weight but moves D = sum |exp(s) - 1|: its gradient is "
            "-exp(s_j) / D * sign(s_j) * Delta = +exp(s_j) / D * Delta, not 0",
        ),
        score_grad_property(
            "scores exactly 0 get zero gradient",
            "s = [[1.2, 0, -0.7, 0, 0.4], [0, 0, 0, 0, 0]] (masked scores are set to 0 in the kernels)",
            lambda g: torch.tensor([[1.2, 0.0, -0.7, 0.0, 0.4], [0.0] * 5], dtype=torch.float64),
            "at s = 0 both 1[s > 0] and sign(s) are 0: use s > 0 (not >=) and torch.sign",
        ),
        score_grad_property(
            "rows of negative scores give zero gradient",
            "s = -(3 * rand(3, 8) + 0.01)",
            rand(3, 8, low=-3.01, high=-0.01),
            "with every weight 0 the output is 0, so Delta = 0 and every term of dS vanishes",
        ),
        score_grad_property(
            "stable for large scores",
            "s = [[800, 790, -3, 5], [60, -900, 0.5, 1]]",
            lambda g: torch.tensor(
                [[800.0, 790.0, -3.0, 5.0], [60.0, -900.0, 0.5, 1.0]], dtype=torch.float64
            ),
            "exp(800) overflows float64: compute exp(s - c) / den with the saved shift c, never exp(s)",
        ),
    ],
)
