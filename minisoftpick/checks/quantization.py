"""Notebook 09's exercises: round-to-nearest weight quantization, HQQ's half-quadratic step, activation fake-quant."""

from __future__ import annotations

import torch

from .. import quant, tolerances
from ..quant import quantize_rtn as reference_rtn
from .core import Exercise, Mismatch, Property, call, plain

RTN_HINT = (
    "q = clamp(round(w / s) + z, 0, 2**bits - 1), w_hat = s * (q - z) with s = (max - min) / (2**bits - 1) "
    "and z = round(-min / s) rounded to an integer"
)
GRID_STEPS, GRID_ZEROS = [2.0**-3, 2.0**-5, 2.0**-2, 2.0**-6], [3, 12, 0, 15]
GRID_CASE = (
    f"bits=4, each group already on its own grid s * (k - z), k = 0..15, s = {GRID_STEPS}, z = {GRID_ZEROS}"
)
TIE = [[-1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 1.5]]  # s = 1, -min / s = 1.5: a tie


def on_grid(g: torch.Generator, bits: int = 4, group_size: int = 64):
    """(w, k): one row per group, w = s * (k - z) with every level k in 0..2**bits - 1 used: the group's own grid."""
    k = torch.stack(
        [(torch.arange(group_size) % 2**bits)[torch.randperm(group_size, generator=g)] for _ in GRID_STEPS]
    )
    w = torch.tensor(GRID_STEPS, dtype=torch.float64)[:, None] * (k - torch.tensor(GRID_ZEROS)[:, None])
    return w.float(), k


def nudged(g: torch.Generator):
    """On-grid weights with every interior value lowered by 0.3 step: they must round back up."""
    w, k = on_grid(g)
    interior = (k > 0) & (k < 2**4 - 1)
    return call(
        torch.where(interior, w - 0.3 * torch.tensor(GRID_STEPS)[:, None], w), 4, group_size=64, grid=w
    )


def other_groups(fn, w, bits, group_size):
    """How fn's answer outside the first group moves when w's first group is made 100x larger (0: not at all)."""
    bumped = w.clone()
    bumped[0, :group_size] *= 100
    moved = fn(bumped, bits, group_size=group_size) - fn(w, bits, group_size=group_size)
    return moved.reshape(-1)[group_size:]


def most_levels(fn, w, bits, group_size):
    """The most distinct values any group of fn's answer takes, or a Mismatch naming the group."""
    counts = [
        len(torch.unique(group))
        for group in fn(w, bits, group_size=group_size).detach().reshape(-1, group_size)
    ]
    worst = max(range(len(counts)), key=counts.__getitem__)
    if counts[worst] > 2**bits:
        raise Mismatch(f"group {worst} takes {counts[worst]} distinct values, expected at most {2**bits}")
    return torch.zeros(())


def random_with_outliers(bits: int, group_size: int):
    def inputs(g: torch.Generator):
        w = torch.randn(3, 2, 256, generator=g)
        w[torch.rand(w.shape, generator=g) < 0.01] *= 10  # a few outliers, as in trained weights
        return call(w, bits, group_size=group_size)

    return inputs


def up_to_ties(reference):
    """An observer: fn's answer, where it differs from ``reference``'s only at a tie (the input half-way
    between two levels, where round(w / s) + z and round(w / s + z), or x / s and x * (1 / s), may part by
    float rounding) replaced by the reference's."""

    def observe(fn, x, *args, **kwargs):
        yours = fn(x, *args, **kwargs)
        if not isinstance(yours, torch.Tensor) or yours.shape != x.shape:
            return yours
        expected = reference(x, *args, **kwargs)
        tie = ((x - yours).abs() - (x - expected).abs()).abs() <= 1e-5 * (yours - expected).abs()
        return torch.where(tie & (yours != expected), expected, yours)

    return observe


def unchanged(w, *args, **kwargs):
    """The expected answer of an on-grid case: the grid given (or the input itself, already on it)."""
    return kwargs.get("grid", w)


def without_grid(fn, *args, grid, **kwargs):
    """What fn returns for the inputs of a nudged case (its ``grid`` is for the expected answer only)."""
    return fn(*args, **kwargs)


quantize_rtn = Exercise(
    name="quantize_rtn",
    contract="fn(w, bits, group_size=64): RTN, asymmetric min-max per group of the last dim, dequantized, w's dtype",
    reference=reference_rtn,
    reference_in_float64=False,  # rounding ties fall differently in float64
    seed=9,
    tolerance=tolerances.FLOAT32,
    properties=[
        *(
            Property(
                "shape and dtype",
                f"w = randn(8, 128) in {dtype}, bits=4",
                lambda g, dtype=dtype: call(torch.randn(8, 128, generator=g).to(dtype), 4, group_size=64),
                "return the dequantized weights shaped like w, in w's dtype",
                layout=True,
            )
            for dtype in (torch.float32, torch.bfloat16)
        ),
        Property(
            "one group per group_size consecutive elements of the last dim",
            "w = randn(4, 256), bits=4, group_size=64, then w[0, :64] *= 100: no other group may change",
            lambda g: call(torch.randn(4, 256, generator=g), 4, 64),
            "take min and max per group: w.reshape(*w.shape[:-1], -1, group_size), then amin/amax over the "
            "last axis with keepdim=True (not over the whole tensor, a whole row, or dim 0)",
            observe=other_groups,
            expected=lambda w, bits, group_size: torch.zeros(w.numel() - group_size),
            tolerance=tolerances.EXACT,
        ),
        *(
            Property(
                "at most 2**bits levels per group",
                case,
                inputs,
                "the levels are the integers 0 .. 2**bits - 1: step = (max - min) / (2**bits - 1), and clamp "
                "round(w / step) + zero to that range (when -min / step ends in .5, the group's top value rounds "
                "one level past it)",
                observe=most_levels,
                expected=lambda *args: torch.zeros(()),
            )
            for case, inputs in (
                ("w = randn(4, 128), bits=2", lambda g: call(torch.randn(4, 128, generator=g), 2, 64)),
                (f"w = {TIE}, bits=2, group_size=8", lambda g: call(torch.tensor(TIE), 2, 8)),
            )
        ),
        Property(
            "asymmetric min-max grid: weights on it come back unchanged",
            GRID_CASE,
            lambda g: call(on_grid(g)[0], 4, group_size=64),
            "asymmetric min-max: step = (max - min) / (2**bits - 1), integer zero point z = round(-min / step), "
            "so min -> level 0 and max -> level 2**bits - 1 (a symmetric grid wastes levels on a group not "
            "centred on 0; 2**bits steps instead of 2**bits - 1 misses the max)",
            expected=unchanged,
        ),
        Property(
            "rounds to the nearest level",
            GRID_CASE + ", interior values lowered by 0.3 step",
            nudged,
            "use torch.round, not floor or int() (which truncate)",
            observe=without_grid,
            expected=unchanged,
        ),
        Property(
            "a constant group comes back unchanged (no NaN)",
            "rows of 64 equal values: 0.37, 0, -2.5",
            lambda g: call(
                torch.tensor([0.37, 0.0, -2.5])[:, None].expand(3, 64).contiguous(), 4, group_size=64
            ),
            "when max == min the step is 0 and 0 / 0 is NaN: use step |min| "
            "(1 when min = 0), which puts the value exactly on a level, or return such groups unchanged",
            expected=unchanged,
        ),
        *(
            Property(
                "matches RTN on random weights",
                f"w = randn(3, 2, 256) with outliers, bits={bits}, group_size={group_size}",
                random_with_outliers(bits, group_size),
                RTN_HINT,
                observe=up_to_ties(reference_rtn),
            )
            for bits in range(2, 9)
            for group_size in (32, 64, 128)
        ),
    ],
)


# ---- HQQ's half-quadratic step: fn(groups, step, zero, bits, beta, p=0.7) -> the new zero point -------

HQQ_HINT = (
    "q = clamp(round(w / s + z), 0, 2**bits - 1); W_e = sign(e) * relu(|e| - |e|**(p - 1) / beta) for the "
    "error e = w - s * (q - z); new z = mean over the group (last dim, keepdim) of q - (w - W_e) / s"
)
HQQ_GROUPS = "w = randn(2, 3, 64) float64 with outliers, min-max step, zero = -min / step + U(-0.4, 0.4)"


def hqq_groups(bits: int, beta: float, p: float = 0.7, zero_offset: float = 0.0):
    """Grouped float64 weights with a few outliers, their min-max step and a real-valued zero point near
    -min / step (every w / s + z rounds inside 0 .. 2**bits - 1), moved by ``zero_offset`` levels."""

    def inputs(g: torch.Generator):
        w = torch.randn(2, 3, 64, generator=g, dtype=torch.float64)
        w[torch.rand(w.shape, generator=g) < 0.03] *= 6
        lo, hi = w.amin(-1, keepdim=True), w.amax(-1, keepdim=True)
        step = (hi - lo) / (2**bits - 1)
        jitter = 0.8 * torch.rand(lo.shape, generator=g, dtype=torch.float64) - 0.4
        return call(w, step, -lo / step + jitter + zero_offset, bits, beta, p=p)

    return inputs


hqq_zero_step = Exercise(
    name="hqq_zero_step",
    contract="fn(groups, step, zero, bits, beta, p=0.7) -> the new zero point [..., n_groups, 1]: one "
    "half-quadratic step of HQQ (shrink the error, refit the zero point)",
    reference=quant.hqq_zero_step,
    seed=10,
    tolerance=tolerances.FLOAT32,  # float64 groups; an answer computed in float32 passes too
    properties=[
        Property(
            "one zero point per group",
            HQQ_GROUPS + ", bits=4, beta=10",
            hqq_groups(4, 10.0),
            "average over the last dim only, keepdim=True: one zero point [..., n_groups, 1] per group",
            layout=True,
        ),
        Property(
            "beta -> infinity: the shrinkage keeps the whole error and z stays",
            HQQ_GROUPS + ", bits=4, beta=1e12",
            hqq_groups(4, 1e12),
            "shrink_lp(e) = sign(e) * relu(|e| - |e|**(p - 1) / beta) tends to e as beta grows (divide by beta, "
            "do not multiply), and then q - (w - W_e) / s = z for every weight: z = mean(q - (w - W_e) / s)",
        ),
        Property(
            "beta -> 0: the shrinkage removes every error, z is the least-squares fit",
            HQQ_GROUPS + ", bits=4, beta=1e-9",
            hqq_groups(4, 1e-9),
            "as beta -> 0 the threshold |e|**(p - 1) / beta is huge and relu(|e| - threshold) = 0: subtract "
            "the threshold (sign(e) * relu(|e| - t), not |e| + t), and then z = mean(q - w / s) with q the "
            "levels round(w / s + z) of the current zero point",
        ),
        Property(
            "p = 1: soft thresholding at 1 / beta",
            HQQ_GROUPS + ", bits=4, beta=10, p=1",
            hqq_groups(4, 10.0, p=1.0),
            "the threshold is |e|**(p - 1) / beta: at p = 1 that is 1 / beta for every error (a power of p, "
            "not p - 1, would scale with |e|)",
        ),
        Property(
            "p < 1: the threshold |e|**(p - 1) / beta",
            HQQ_GROUPS + ", bits=4, beta=10, p=0.7",
            hqq_groups(4, 10.0),
            "the proximal step of |e|**p: threshold |e|**(p - 1) / beta, smaller for large errors (which the "
            "lp norm lets pass), not 1 / beta nor |e|**(1 - p) / beta",
        ),
        *(
            Property(
                "q from the current zero point, clamped to 0 .. 2**bits - 1",
                HQQ_GROUPS + f" then moved {offset:+g} levels, bits=3, beta=10",
                hqq_groups(3, 10.0, zero_offset=offset),
                "q = clamp(round(w / s + z), 0, 2**bits - 1): a zero point away from -min / s pushes some "
                "w / s + z out of range, and the levels stop there",
            )
            for offset in (2.5, -2.5)
        ),
        *(
            Property(
                "matches quant.hqq_zero_step on random groups",
                HQQ_GROUPS + f", bits={bits}, beta={beta:g}",
                hqq_groups(bits, beta),
                HQQ_HINT,
            )
            for bits in (2, 3, 4, 8)
            for beta in (1.0, 10.0, 100.0)
        ),
    ],
)


# ---- activation fake-quant: fn(x, bits=8, granularity="per_token") ------------------------------------

ACT_HINT = (
    "qmax = 2**(bits - 1) - 1, s = max|x| / qmax per token (amax over the last dim, keepdim) or over the "
    "whole tensor, x_hat = s * clamp(round(x / s), -qmax, qmax), in x's dtype"
)


def symmetric_grid(g: torch.Generator, bits: int, granularity: str):
    """(x, k, step): x = step * k float32, codes k in -qmax..qmax with +-qmax in every token, a power-of-two
    step per token (per token) or one for the tensor (per tensor), so x / step = k exactly."""
    qmax = 2 ** (bits - 1) - 1
    k = torch.randint(-qmax, qmax + 1, (4, 6, 32), generator=g)
    k[..., 0], k[..., 1] = qmax, -qmax
    step = 2.0 ** -torch.randint(1, 8, (4, 6, 1) if granularity == "per_token" else (), generator=g)
    return (step * k).float(), k, step.float()


def on_symmetric_grid(bits: int, granularity: str):
    return lambda g: call(symmetric_grid(g, bits, granularity)[0], bits, granularity=granularity)


def nudged_activations(bits: int, granularity: str):
    """On-grid activations with every code strictly inside -qmax..qmax lowered by 0.3 step: they must
    round back (the codes +-qmax, which set the scale, stay)."""

    def inputs(g: torch.Generator):
        x, k, step = symmetric_grid(g, bits, granularity)
        interior = k.abs() < 2 ** (bits - 1) - 1
        return call(torch.where(interior, x - 0.3 * step, x), bits, granularity=granularity, grid=x)

    return inputs


GRID_HINT = (
    "s = max|x| / (2**(bits - 1) - 1): the largest |x| is code +-qmax exactly (not the mean |x|, and not "
    "2**bits - 1 or 2**(bits - 1) levels each side)"
)
PER_TENSOR = "per tensor: one scale shared by every token"
PER_TENSOR_HINT = (
    'granularity="per_tensor": one max|x| over the whole tensor, x.abs().amax(): a massive activation then '
    "sets every token's step"
)


def other_tokens(fn, x, bits, granularity):
    """How fn's answer for every token but the first moves when the first token is made 100x larger."""
    bumped = x.clone()
    bumped[0, 0] *= 100
    moved = fn(bumped, bits, granularity=granularity) - fn(x, bits, granularity=granularity)
    return moved.reshape(-1, x.shape[-1])[1:]


def with_massive_activation(g: torch.Generator, bits: int, granularity: str):
    x = torch.randn(2, 16, 64, generator=g)
    x[0, 5, 17] = 300.0
    return call(x, bits, granularity=granularity)


def with_zero_tokens(g: torch.Generator):
    x = torch.randn(3, 4, 32, generator=g)
    x[0, 1] = 0.0
    x[2, 3] = 0.0
    return call(x, 8, granularity="per_token")


def random_activations(bits: int, granularity: str):
    def inputs(g: torch.Generator):
        x = torch.randn(3, 7, 64, generator=g)
        x[torch.rand(x.shape, generator=g) < 0.01] *= 20  # a few large features, as in trained models
        return call(x, bits, granularity=granularity)

    return inputs


quantize_activations = Exercise(
    name="quantize_activations",
    contract='fn(x, bits=8, granularity="per_token"): symmetric int-bits fake-quant of activations, scale '
    "max|x| / (2**(bits-1) - 1) per token (row of the last dim) or per tensor, dequantized, x's dtype",
    reference=quant.quantize_activations,
    reference_in_float64=False,  # rounding ties fall differently in float64
    observe=up_to_ties(quant.quantize_activations),
    seed=11,
    tolerance=tolerances.FLOAT32,
    properties=[
        *(
            Property(
                "shape and dtype",
                f"x = randn(2, 5, 32) in {dtype}, bits=8, per token",
                lambda g, dtype=dtype: call(
                    torch.randn(2, 5, 32, generator=g).to(dtype), 8, granularity="per_token"
                ),
                "return the dequantized activations (s * code, not the integer codes) shaped like x, in x's dtype",
                layout=True,
            )
            for dtype in (torch.float32, torch.bfloat16)
        ),
        Property(
            "per token: one scale per row of the last dim",
            "x = randn(4, 8, 64), bits=8, per token, then x[0, 0] *= 100: no other token may change",
            lambda g: call(torch.randn(4, 8, 64, generator=g), 8, granularity="per_token"),
            'granularity="per_token": max|x| over the last dim only, x.abs().amax(-1, keepdim=True)',
            observe=other_tokens,
            expected=lambda x, bits, granularity: torch.zeros(x.numel() // x.shape[-1] - 1, x.shape[-1]),
            tolerance=tolerances.EXACT,
        ),
        *(
            Property(
                "symmetric grid from max|x|: values on it come back unchanged",
                f"x = s * k, codes k in -{2 ** (bits - 1) - 1}..{2 ** (bits - 1) - 1} reaching both ends in "
                f"every token, bits={bits}, per token",
                on_symmetric_grid(bits, "per_token"),
                GRID_HINT,
                expected=unchanged,
                observe=plain,
            )
            for bits in (8, 4)
        ),
        Property(
            "rounds to the nearest level",
            "x on the symmetric grid, interior codes lowered by 0.3 step, bits=4, per token",
            nudged_activations(4, "per_token"),
            "use torch.round, not floor or int() (which truncate)",
            observe=without_grid,
            expected=unchanged,
        ),
        Property(
            "a token of zeros stays zero (no NaN)",
            "x = randn(3, 4, 32) with tokens [0, 1] and [2, 3] all zero, bits=8, per token",
            with_zero_tokens,
            "max|x| = 0 gives step 0 and 0 / 0 = NaN: use any positive step there (torch.where(amax > 0, "
            "amax / qmax, 1)), which keeps the zeros exactly",
        ),
        *(
            Property(
                PER_TENSOR,
                f"x = randn(2, 16, 64) with x[0, 5, 17] = 300, bits={bits}, per tensor",
                lambda g, bits=bits: with_massive_activation(g, bits, "per_tensor"),
                PER_TENSOR_HINT,
            )
            for bits in (8, 4)
        ),
        Property(
            PER_TENSOR,
            "x = s * k, one step s for the tensor, codes k in -7..7 reaching both ends, bits=4, per tensor",
            on_symmetric_grid(4, "per_tensor"),
            PER_TENSOR_HINT,
            expected=unchanged,
            observe=plain,
        ),
        Property(
            PER_TENSOR,
            "x on that grid, interior codes lowered by 0.3 step, bits=4, per tensor",
            nudged_activations(4, "per_tensor"),
            PER_TENSOR_HINT,
            observe=without_grid,
            expected=unchanged,
        ),
        *(
            Property(
                "matches quant.quantize_activations on random activations",
                f"x = randn(3, 7, 64) with a few 20x features, bits={bits}, {granularity.replace('_', ' ')}",
                random_activations(bits, granularity),
                ACT_HINT,
            )
            for bits in range(2, 9)
            for granularity in quant.GRANULARITIES
        ),
    ],
)
