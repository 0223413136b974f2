"""Notebook 01's exercises: softpick (docs/design.md, "Definition" and "Stable form"), its Jacobian and VJP."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import tolerances
from ..normalizers import softpick as reference_softpick
from .cases import randn
from .core import Exercise, Property, call, difference, fixed, gradients, zeros

SHIFT_HINT = "multiply numerator and denominator by exp(-c) with c = max(m, 0), m the row max"


softpick = Exercise(
    name="softpick",
    contract="fn(x, dim=-1) = relu(exp(x) - 1) / (sum |exp(x) - 1| + 1e-6) along dim, stable, x's dtype",
    reference=reference_softpick,
    seed=0,
    properties=[
        Property(
            "shape and dtype",
            "x = torch.randn(3, 5) (float64)",
            lambda g: call(randn(g, 3, 5)),
            "return a tensor shaped like x, in x's dtype",
            layout=True,
        ),
        Property(
            "zero weight where x <= 0",
            "x = [[1.5, -0.5, 0.0, 2.0, -3.0]]",
            fixed([[1.5, -0.5, 0.0, 2.0, -3.0]]),
            "the numerator is relu(exp(x) - 1): scores <= 0 get exactly zero (softmax gives every key some weight)",
            expected=zeros,
            observe=lambda fn, x: fn(x) * (x <= 0),
            tolerance=tolerances.EXACT,
        ),
        Property(
            "a row of negative scores is all zeros",
            "x = -(4 * rand(2, 6) + 0.1)",
            lambda g: call(-torch.rand(2, 6, generator=g, dtype=torch.float64) * 4 - 0.1),
            "softpick rows may sum to less than one: that is how a head attends to nothing",
            expected=zeros,
        ),
        Property(
            "negative scores count in the denominator",
            "x = [[2, -3, -3, -3]]",
            fixed([[2.0, -3.0, -3.0, -3.0]]),
            "the denominator is sum |exp(x_j) - 1|: keep the absolute value",
        ),
        Property(
            "matches softpick on random scores",
            "x = 3 * torch.randn(4, 9) (float64)",
            lambda g: call(randn(g, 4, 9, std=3.0)),
            "compare your formula with relu(exp(x) - 1) / (sum |exp(x) - 1| + 1e-6)",
        ),
        *(
            Property(
                "respects dim",
                f"x = 2 * torch.randn(3, 4, 5), dim={dim}",
                lambda g, dim=dim: call(randn(g, 3, 4, 5, std=2.0), dim=dim),
                "reduce (amax, sum) along dim with keepdim=True",
            )
            for dim in (0, 1)
        ),
        Property(
            "stable for large scores",
            "x = [[500, 400, -3, 80]] (float32)",
            fixed([[500.0, 400.0, -3.0, 80.0]], dtype=torch.float32),
            f"exp(500) overflows float32: {SHIFT_HINT}",
            tolerance=tolerances.FLOAT32,
        ),
        Property(
            "one shift per row",
            "x = [[200, 150, -3, 80], [1, 2, -1, 0.5]] (float32)",
            fixed([[200.0, 150.0, -3.0, 80.0], [1.0, 2.0, -1.0, 0.5]], dtype=torch.float32),
            "take c per row (amax along dim, keepdim=True), not one c = x.max() for the whole tensor: in the "
            "second row exp(x - 200) and exp(-200) both underflow to 0 in float32, and 0 / 0 is NaN",
            tolerance=tolerances.FLOAT32,
        ),
        Property(
            "stable for scores far below zero",
            "x = [[-1000, -990, -2000]] (float32)",
            fixed([[-1000.0, -990.0, -2000.0]], dtype=torch.float32),
            "a row of scores <= 0 is all zeros: exp(-m) overflows when m << 0, so shift by c = max(m, 0), "
            "never by m alone without at least detaching it",
            expected=zeros,
        ),
        Property(
            "half precision",
            "x = 4 * randn(2, 8) in float16",
            lambda g: call(4 * torch.randn(2, 8, generator=g).half()),
            "return the input dtype; compute in float32 inside",
            layout=True,
        ),
        Property(
            "half precision",
            "x = 4 * randn(2, 8) in float16",
            lambda g: call(4 * torch.randn(2, 8, generator=g).half()),
            "compute in float32 inside, then cast back",
            tolerance=tolerances.HALF,
        ),
        Property(
            "gradient",
            "x = 2 * randn(3, 7) (float64), loss = sum(softpick(x) * w)",
            lambda g: call(randn(g, 3, 7, std=2.0)),
            "build the result from differentiable torch ops (no .detach() or numpy except on the shift c)",
            expected=lambda x: gradients(reference_softpick, x),
            observe=gradients,
        ),
        Property(
            "gradient far below zero",
            "x = [[-1000, -990, -2000]] (float64), the gradient of sum(softpick(x) * w)",
            fixed([[-1000.0, -990.0, -2000.0]]),
            "the row attends to nothing, so its gradient is exactly 0; differentiating through a shift by m "
            "gives inf * 0 = NaN: detach the shift (it cancels), and use c = max(m, 0)",
            expected=zeros,
            observe=lambda fn, x: gradients(fn, x)[0],
        ),
    ],
)


def _jacobian(x: Tensor) -> Tensor:
    return torch.autograd.functional.jacobian(reference_softpick, x)


def _transposed(fn, x: Tensor) -> str | None:
    """A word on orientation when ``fn(x)`` is the Jacobian at ``x`` transposed."""
    yours = fn(x)
    if isinstance(yours, Tensor) and yours.shape == (len(x), len(x)):
        if difference(yours.mT, _jacobian(x), tolerances.CHECK) is None:
            return "J[i, j] = d p_i / d x_j: rows are outputs, columns are inputs (yours is transposed)"
    return None


softpick_jacobian = Exercise(
    name="softpick_jacobian",
    contract="fn(x) for a 1-D x: J[i, j] = d softpick(x)_i / d x_j, as torch.autograd finds it",
    reference=_jacobian,
    seed=3,
    diagnose=_transposed,
    properties=[
        Property(
            "shape",
            "x = torch.randn(5) (float64)",
            lambda g: call(randn(g, 5)),
            "one row per output p_i, one column per input x_j",
            layout=True,
        ),
        Property(
            "rows where x_i <= 0 are zero",
            "x = [1.5, -0.5, 2.0, -3.0, 0.7]",
            fixed([1.5, -0.5, 2.0, -3.0, 0.7]),
            "where x_i <= 0, p_i stays 0 under small changes of x: d relu(e^x_i - 1)/dx_i = 1[x_i > 0] e^x_i",
            expected=lambda x: torch.zeros(5, 5, dtype=torch.float64),
            observe=lambda fn, x: fn(x) * (x <= 0)[:, None],
            tolerance=tolerances.EXACT,
        ),
        Property(
            "negative scores move the denominator",
            "x = [2, -1, 1, -2.5]",
            fixed([2.0, -1.0, 1.0, -2.5]),
            "d|e^x - 1|/dx = sign(x) e^x: as a negative score rises toward 0 the denominator shrinks",
        ),
        Property(
            "matches torch.autograd on random scores",
            "x = 2 * randn(7) (float64)",
            lambda g: call(randn(g, 7, std=2.0)),
            "J = (diag(1[x > 0] e^x) - outer(p, sign(x) e^x)) / D with D = sum |e^x - 1| + 1e-6",
        ),
        Property(
            "stable for large scores",
            "x = [800, 790, -3, 5] (float64)",
            fixed([800.0, 790.0, -3.0, 5.0]),
            "exp(800) overflows float64: e^x_j / D = e^(x_j - c) / (D e^-c) with c = max(max(x), 0)",
        ),
        Property(
            "stable for scores far below zero",
            "x = [-1000, -990, -2000] (float64)",
            fixed([-1000.0, -990.0, -2000.0]),
            "shifting by the row max m alone makes exp(-m) overflow when m << 0: use c = max(m, 0)",
        ),
    ],
)


def _vjp(x: Tensor, grad: Tensor) -> Tensor:
    x = x.detach().requires_grad_(True)
    (dx,) = torch.autograd.grad(reference_softpick(x), x, grad)
    return dx


def with_grad(make):
    """Inputs (x, grad) for scores make(g) and a random upstream gradient grad = dL/dp of x's shape."""

    def inputs(g: torch.Generator):
        x = make(g)
        return call(x, torch.randn(x.shape, generator=g, dtype=torch.float64))

    return inputs


softpick_vjp = Exercise(
    name="softpick_vjp",
    contract="fn(x, grad) -> dL/dx for p = softpick(x) along the last dim and grad = dL/dp, without building J",
    reference=_vjp,
    seed=10,
    properties=[
        Property(
            "shape",
            "x, grad = randn(4, 7) (float64)",
            with_grad(lambda g: randn(g, 4, 7)),
            "one gradient per score: shaped like x",
            layout=True,
        ),
        Property(
            "matches autograd on random rows",
            "x = 2 * randn(5, 9)",
            with_grad(lambda g: randn(g, 5, 9, std=2.0)),
            "dL/dx_j = e^x_j / D * (1[x_j > 0] * grad_j - sign(x_j) * Delta), Delta = sum_i grad_i p_i, per row",
        ),
        Property(
            "negative scores get gradient through the denominator",
            "x: one positive score per row, the rest in (-3, 0)",
            with_grad(
                lambda g: torch.cat(
                    [
                        torch.rand(3, 1, generator=g, dtype=torch.float64) + 0.5,
                        -3 * torch.rand(3, 6, generator=g),
                    ],
                    1,
                )
            ),
            "a negative score has zero weight but moves D: its gradient is -e^x_j / D * sign(x_j) * Delta = "
            "+e^x_j / D * Delta, not 0",
        ),
        Property(
            "scores exactly 0 get zero gradient",
            "x = [[1.2, 0, -0.7, 0, 0.4], [0, 0, 0, 0, 0]]",
            with_grad(lambda g: torch.tensor([[1.2, 0.0, -0.7, 0.0, 0.4], [0.0] * 5], dtype=torch.float64)),
            "at x = 0 both 1[x > 0] and sign(x) are 0: use x > 0 (not >=) and torch.sign",
        ),
        Property(
            "stable for large scores",
            "x = [[800, 790, -3, 5], [60, -900, 0.5, 1]]",
            with_grad(
                lambda g: torch.tensor(
                    [[800.0, 790.0, -3.0, 5.0], [60.0, -900.0, 0.5, 1.0]], dtype=torch.float64
                )
            ),
            "exp(800) overflows float64: e^x / D = e^(x - c) / (D e^-c) with c = max(m, 0) per row",
        ),
    ],
)
