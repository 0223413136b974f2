"""Notebook 06's exercises: the gradient of softpick attention's scores (docs/design.md, "Backward"), the
inner loops of the two backward kernels in Triton, and a roofline.

``flash_dq`` and ``flash_dkdv`` take the learner's launcher ``fn(q, k, v, out, dout, shift, den, causal=True,
scale=None)``, as notebook 05's checks do: the learner's Triton kernel runs through the interpreter on the CPU
(on the GPU when there is one). Its inputs are float32: q, k, v and dout random, out and the per-row shift c
and den the forward state of the package's online algorithm (``return_state=True``, what the kernel saves),
computed in float64. The reference is autograd through float64 naive attention.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import tolerances
from ..attention import naive_attention as reference_attention
from ..normalizers import DEFAULT_EPS
from ..normalizers import softpick as reference_softpick
from ..online import online_softpick_attention
from .cases import (
    KERNEL_HEAD_DIM,
    LARGE_HIDDEN_SCORES,
    LARGE_SCORES,
    kernel_tolerance,
    launcher_tensors,
    on_kernel_device,
    qkv_with_scores,
    randn,
)
from .core import Exercise, Mismatch, Property, call

TOLERANCE = kernel_tolerance()
D = KERNEL_HEAD_DIM
on_device = on_kernel_device


def forward_saved(s: Tensor) -> tuple[Tensor, Tensor]:
    """The per-row pair the forward saves for scores s [M, N]: c = max(rowmax, 0), den = D * exp(-c)."""
    shift = s.amax(-1).clamp_min(0.0)
    floor = torch.exp(-shift)
    den = (torch.exp(s - shift[:, None]) - floor[:, None]).abs().sum(-1) + DEFAULT_EPS * floor
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
H200_ROOFS = {"peak_flops": 7.7e14, "bandwidth": 4.3e12}  # results/bench_roofs_h200.json, rounded


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
    return lambda g: call(b, h, t, d, mode, **(roofs or H200_ROOFS))


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


# ---- the backward kernels' inner loops ----------------------------------------------------------------


def with_forward_state(q, k, v, g: torch.Generator, **kwargs):
    """The launchers' arguments: q, k, v, a random dout, and out, shift, den of the float64 forward."""
    dout = randn(g, *q.shape)
    causal, scale = kwargs.get("causal", True), kwargs.get("scale")
    state = online_softpick_attention(q, k, v, causal=causal, scale=scale, return_state=True)
    return call(*on_device(q, k, v, state.out, dout, state.shift, state.denominator), **kwargs)


def backward_case(hq: int, hkv: int, tq: int, tk: int, std: float = 1.0, **kwargs):
    """B = 1, Hq query heads over Hkv key/value heads, scores about std^2 N(0, 1)."""

    def inputs(g: torch.Generator):
        q = randn(g, 1, hq, tq, D, std=std)
        k, v = randn(g, 1, hkv, tk, D, std=std), randn(g, 1, hkv, tk, D)
        return with_forward_state(q, k, v, g, **kwargs)

    return inputs


def backward_scores_case(scores, tq: int):
    """Causal, one head, every query scoring scores[j] on key j."""
    return lambda g: with_forward_state(*qkv_with_scores(g, torch.tensor(scores), tq, D), g)


def autograd_gradients(q, k, v, out, dout, shift, den, causal=True, scale=None) -> tuple[Tensor, ...]:
    """(dq, dk, dv) of naive attention for the upstream gradient dout, as autograd finds them."""
    q, k, v = (x.detach().requires_grad_(True) for x in (q, k, v))
    return torch.autograd.grad(reference_attention(q, k, v, causal=causal, scale=scale), (q, k, v), dout)


def reference_dq(*args, **kwargs) -> Tensor:
    return autograd_gradients(*args, **kwargs)[0]


def reference_dkdv(*args, **kwargs) -> tuple[Tensor, Tensor]:
    return autograd_gradients(*args, **kwargs)[1:]


def gradient_pair(fn, *args, **kwargs) -> tuple[Tensor, Tensor]:
    """fn's (dk, dv), checked to be two tensors."""
    return launcher_tensors(fn(*args, **kwargs), "dk, dv")


def one_of_pair(index: int):
    """For a layout row: observe dk (0) or dv (1) of fn and of the reference."""
    return {
        "observe": lambda fn, *args, **kwargs: gradient_pair(fn, *args, **kwargs)[index],
        "expected": lambda *args, **kwargs: reference_dkdv(*args, **kwargs)[index],
    }


# In the large-score cases keys are about 1200 long (score 300 times sqrt(D)), and dq = scale * dS K sums
# terms of that size to results near 0: float32 rounding leaves about 1e-4 there (measured 1.4e-4).
LARGE_KEYS = tolerances.Tolerance(atol=max(1e-3, TOLERANCE.atol), rtol=TOLERANCE.rtol)

CAUSAL_HINT = (
    "under CAUSAL, s = tl.where(cols[None, :] <= rows[:, None] + offset, s, 0.0): a score of exactly 0 gets "
    "exactly zero gradient (1[s > 0] = sign(s) = 0), and offset = Tk - Tq aligns the mask bottom-right"
)
STABLE_HINT = (
    "exp(s) / D = exp(s - c) / den with the saved shift c: never exp(s) (inf in float32 above 88.7), nor "
    "exp(s) * exp(-c) (inf * 0 = NaN)"
)
HIDDEN_HINT = (
    "set hidden scores to 0 with tl.where before any exp: exp(400 - c) is inf, and multiplying by the mask "
    "after it gives inf * 0 = NaN"
)


def shared_properties(layout: list[Property], matches_hint: str, gqa_hint: str) -> list[Property]:
    """The table both backward loops are checked on; ``layout`` first, the hints that differ given."""
    return [
        *layout,
        Property(
            "matches autograd, several blocks",
            "non-causal, B = 1, H = 2, Tq = Tk = 48, D = 16, scores about 2 * N(0, 1)",
            backward_case(2, 2, 48, 48, std=2**0.5, causal=False),
            matches_hint,
        ),
        Property(
            "uses scale",
            "non-causal, Tq = Tk = 32, scale = 0.7",
            backward_case(1, 1, 32, 32, causal=False, scale=0.7),
            "s = scale * q k^T, and scale again in dQ = scale * dS K, dK = scale * dS^T Q (the launcher passes "
            "1/sqrt(D) when scale is None)",
        ),
        Property(
            "causal mask, ragged T",
            "causal, H = 2, Tq = Tk = 37 (not a multiple of the block)",
            backward_case(2, 2, 37, 37),
            CAUSAL_HINT,
        ),
        Property(
            "causal with Tq != Tk is bottom-right aligned",
            "causal, Tq = 20, Tk = 45",
            backward_case(1, 1, 20, 45),
            CAUSAL_HINT,
        ),
        Property(
            "grouped-query heads",
            "causal, Hq = 4, Hkv = 2, Tq = Tk = 33",
            backward_case(4, 2, 33, 33),
            gqa_hint,
        ),
        Property(
            "queries that see no key add nothing",
            "causal, Tq = 20, Tk = 9: the first 11 queries see no key",
            backward_case(1, 1, 20, 9),
            "a row that sees no key has every score 0 (hidden): its weights, dS and gradients are exactly 0",
        ),
        Property(
            "stable for large scores",
            f"causal, every query scores {LARGE_SCORES} on keys 0-5 (float32)",
            backward_scores_case(LARGE_SCORES, 6),
            STABLE_HINT,
            tolerance=LARGE_KEYS,
        ),
        Property(
            "large hidden scores stay hidden",
            f"causal, every query scores {LARGE_HIDDEN_SCORES} (float32): queries 0-3 cannot see the 400s",
            backward_scores_case(LARGE_HIDDEN_SCORES, 6),
            HIDDEN_HINT,
            tolerance=LARGE_KEYS,
        ),
    ]


LAUNCHER = "(q, k, v, out, dout, shift, den, causal=True, scale=None)"
INPUTS = (
    "float32 q, out, dout [B, Hq, Tq, D], k, v [B, Hkv, Tk, D] (D = 16, Hq a multiple of Hkv) and the forward's "
    "shift c and den [B, Hq, Tq] on the kernel's device, scale defaulting to 1/sqrt(D)"
)

flash_dq = Exercise(
    name="flash_dq",
    contract=f"fn{LAUNCHER} -> dq [B, Hq, Tq, D]: the gradient of softpick attention with respect to q, for {INPUTS}",
    reference=reference_dq,
    seed=16,
    tolerance=TOLERANCE,
    properties=shared_properties(
        [
            Property(
                "shape and dtype",
                "q, k, v = randn(1, 1, 16, 16)",
                backward_case(1, 1, 16, 16),
                "return a new float32 tensor shaped like q, on q's device",
                layout=True,
            )
        ],
        matches_hint="per key block: s = scale * q k^T, e = exp(s - c) / den, dp = dO v^T, dS = e * (1[s > 0] * dp - "
        "sign(s) * Delta) (tl.where(s > 0, dp - delta, tl.where(s < 0, delta, 0))), dq += scale * dS @ k",
        gqa_hint="query head bh reads key/value head bh // group (the set-up does it): check the loop uses K and V "
        "as offset there",
    ),
)

flash_dkdv = Exercise(
    name="flash_dkdv",
    contract=f"fn{LAUNCHER} -> (dk, dv), each [B, Hkv, Tk, D]: the gradients of softpick attention with respect to "
    f"k and v, summed over the query heads of each key/value head, for {INPUTS}",
    reference=reference_dkdv,
    observe=gradient_pair,
    seed=17,
    tolerance=TOLERANCE,
    properties=shared_properties(
        [
            Property(
                "shape and dtype",
                f"q, k, v = randn(1, 1, 16, 16), {part}",
                backward_case(1, 1, 16, 16),
                "return (dk, dv), two new float32 tensors shaped like k and v, on k's device",
                layout=True,
                **one_of_pair(i),
            )
            for i, part in enumerate(("dk", "dv"))
        ],
        matches_hint="per query block: s = scale * q k^T, p = relu(exp(s - c) - exp(-c)) / den (the forward's "
        "weights), dv += p^T @ dO; dp = dO v^T, dS = exp(s - c) / den * (1[s > 0] * dp - sign(s) * Delta), "
        "dk += scale * dS^T @ q (input 0 is dk, input 1 is dv)",
        gqa_hint="key/value head bkv was read by query heads bkv * group + g for g < group: loop over all of them "
        "and add their gradients into the same dk and dv (repeat_interleave order, not tile order)",
    ),
)
