"""Notebook 09's exercise: round-to-nearest weight quantization."""

from __future__ import annotations

import torch

from .. import tolerances
from ..quant import quantize_rtn as reference_rtn
from .core import Exercise, Mismatch, Property, call

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


def up_to_ties(fn, w, bits, group_size):
    """fn's answer, where it differs from the reference only at a tie (w half-way between the two levels:
    round(w / s) + z and round(w / s + z) may part there by float rounding) replaced by the reference's."""
    yours = fn(w, bits, group_size=group_size)
    if not isinstance(yours, torch.Tensor) or yours.shape != w.shape:
        return yours
    expected = reference_rtn(w, bits, group_size)
    tie = ((w - yours).abs() - (w - expected).abs()).abs() <= 1e-5 * (yours - expected).abs()
    return torch.where(tie & (yours != expected), expected, yours)


def unchanged(w, *args, **kwargs):
    return kwargs.get("grid", w)


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
            observe=lambda fn, w, bits, group_size, grid: fn(w, bits, group_size=group_size),
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
                observe=up_to_ties,
            )
            for bits in range(2, 9)
            for group_size in (32, 64, 128)
        ),
    ],
)
