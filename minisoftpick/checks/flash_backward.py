"""Notebook 06's exercise: the gradient of softpick attention's scores (docs/design.md, "Backward")."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import tolerances
from ..normalizers import softpick as reference_softpick
from .core import Exercise, Mismatch, Property, call

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


BF16_BYTES = 2
FORWARD_TENSORS, TRAINING_TENSORS = 4, 12  # q, k, v, out; and dO, dq, dk, dv, q, k, v, out again
TRAINING_OVER_FORWARD = 3.5  # forward + backward FLOPs over the forward's, as bench/bench_attention.py counts
H100_ROOFS = {"peak_flops": 7.5e14, "bandwidth": 3.0e12}  # round numbers of the measured roofs' size


def roofline_reference(b, h, t, d, mode, peak_flops, bandwidth) -> Tensor:
    forward = 2 * b * h * t * t * d  # two T x T x D matmuls, 2 FLOPs per multiply-add, half of them causal
    flops = forward * (1 if mode == "fwd" else TRAINING_OVER_FORWARD)
    moved = (FORWARD_TENSORS if mode == "fwd" else TRAINING_TENSORS) * b * h * t * d * BF16_BYTES
    return torch.tensor([flops, moved, min(peak_flops, flops / moved * bandwidth)], dtype=torch.float64)


def three_numbers(fn, *args, **kwargs) -> Tensor:
    value = fn(*args, **kwargs)
    if not isinstance(value, tuple | list) or len(value) != 3:
        raise Mismatch(f"your function returned {type(value).__name__}, expected (flops, bytes, attainable)")
    try:
        return torch.tensor([float(x) for x in value], dtype=torch.float64)
    except (TypeError, ValueError) as error:
        raise Mismatch(f"your function returned {value!r}, expected three numbers") from error


def shape(b, h, t, d, mode, **roofs):
    return lambda g: call(b, h, t, d, mode, **(roofs or H100_ROOFS))


def part(index: int):
    """Observe one of the three numbers; the reference's same one."""
    return {
        "observe": lambda fn, *args, **kwargs: three_numbers(fn, *args, **kwargs)[index],
        "expected": lambda *args, **kwargs: roofline_reference(*args, **kwargs)[index],
    }


attention_roofline = Exercise(
    name="attention_roofline",
    contract="fn(b, h, t, d, mode, peak_flops, bandwidth) -> (FLOPs, bytes, attainable FLOP/s) of causal bf16 "
    "attention, mode 'fwd' or 'fwd+bwd', on the roofline min(peak, intensity * bandwidth)",
    reference=roofline_reference,
    observe=three_numbers,
    seed=0,
    tolerance=tolerances.FLOAT64,
    properties=[
        Property(
            "causal forward FLOPs",
            "B = 2, H = 16, T = 4096, D = 128, mode 'fwd'",
            shape(2, 16, 4096, 128, "fwd"),
            "S = Q K^T and O = P V are two T x T x D matmuls, 2 FLOPs per multiply-add: 4 B H T^2 D, of which "
            "the causal mask keeps half",
            **part(0),
        ),
        Property(
            "forward+backward FLOPs",
            "B = 2, H = 16, T = 4096, D = 128, mode 'fwd+bwd'",
            shape(2, 16, 4096, 128, "fwd+bwd"),
            "the backward recomputes S and computes dV, dP, dQ, dK: five matmuls to the forward's two, so "
            "forward+backward is 3.5 times the forward (as bench/bench_attention.py counts it)",
            **part(0),
        ),
        *(
            Property(
                "minimum bytes moved",
                f"B = 1, H = 8, T = 1024, D = 64, mode {mode!r}",
                shape(1, 8, 1024, 64, mode),
                "bf16 is 2 bytes; the forward reads q, k, v and writes out once (4 tensors of B H T D); "
                "forward+backward also reads dO, q, k, v, out again and writes dq, dk, dv (12 in all)",
                **part(1),
            )
            for mode in ("fwd", "fwd+bwd")
        ),
        Property(
            "memory-bound below the ridge",
            "B = 1, H = 1, T = 64, D = 64, mode 'fwd': intensity under peak / bandwidth",
            shape(1, 1, 64, 64, "fwd"),
            "attainable = min(peak, intensity * bandwidth), intensity = FLOPs / bytes: a short sequence is "
            "limited by memory",
            **part(2),
        ),
        Property(
            "compute-bound above the ridge",
            "B = 2, H = 16, T = 16384, D = 128, mode 'fwd+bwd'",
            shape(2, 16, 16384, 128, "fwd+bwd"),
            "attainable = min(peak, intensity * bandwidth): a long sequence hits the flat roof, the peak",
            **part(2),
        ),
        Property(
            "reads the roofs it is given",
            "B = 1, H = 4, T = 2048, D = 64, mode 'fwd', peak 1e15, bandwidth 1e12",
            shape(1, 4, 2048, 64, "fwd", peak_flops=1e15, bandwidth=1e12),
            "use the peak_flops and bandwidth arguments, not numbers of one machine",
        ),
    ],
)
