"""Check for the exercise of notebook 09: round-to-nearest weight quantization."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .. import solutions
from ..quant import quantize_rtn as reference_rtn
from .core import Report, compare, run_exercise


def quantize_rtn(fn: Callable) -> Callable:
    """Check ``fn(w, bits, group_size=64)``: RTN, asymmetric min-max per group along the last dim."""
    return run_exercise("quantize_rtn", fn, solutions.quantize_rtn, _rtn_properties)


def _grid_weights(bits: int, group_size: int, steps: list[float], zeros: list[int], g: torch.Generator):
    """(w, k): one row per group, w = s * (k - z) with every level k in 0..2**bits - 1 used: the group's own grid."""
    k = torch.stack(
        [(torch.arange(group_size) % 2**bits)[torch.randperm(group_size, generator=g)] for _ in steps]
    )
    w = torch.tensor(steps, dtype=torch.float64)[:, None] * (k - torch.tensor(zeros)[:, None])
    return w.float(), k


def _most_levels(out: torch.Tensor, group_size: int) -> tuple[int, int]:
    """(group index, distinct values) of the group of ``out`` taking the most distinct values."""
    counts = [len(torch.unique(group)) for group in out.detach().reshape(-1, group_size)]
    worst = max(range(len(counts)), key=counts.__getitem__)
    return worst, counts[worst]


def _rtn_properties(fn: Callable, report: Report) -> None:
    g = torch.Generator().manual_seed(9)
    for dtype in (torch.float32, torch.bfloat16):
        w = torch.randn(8, 128, generator=g).to(dtype)
        out = fn(w, 4, group_size=64)
        if not isinstance(out, torch.Tensor) or out.shape != w.shape or out.dtype != dtype:
            got = f"{tuple(out.shape)} {out.dtype}" if isinstance(out, torch.Tensor) else type(out).__name__
            report.fail(
                "shape and dtype",
                f"w = randn(8, 128) in {dtype}, bits=4",
                f"got {got}, expected {tuple(w.shape)} {dtype}",
                "return the dequantized weights shaped like w, in w's dtype",
            )
    report.ok("shape and dtype")

    w = torch.randn(4, 256, generator=g)
    bumped = w.clone()
    bumped[0, :64] *= 100
    compare(
        report,
        "one group per group_size consecutive elements of the last dim",
        "w = randn(4, 256), bits=4, group_size=64, then w[0, :64] *= 100: no other group may change",
        fn(bumped, 4, group_size=64).reshape(-1)[64:],
        fn(w, 4, group_size=64).reshape(-1)[64:],
        "take min and max per group: w.reshape(*w.shape[:-1], -1, group_size), then amin/amax over the "
        "last axis with keepdim=True (not over the whole tensor, a whole row, or dim 0)",
    )
    report.ok("one group per group_size consecutive elements of the last dim")

    tie = torch.tensor([[-1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 1.5]])  # s = 1, -min / s = 1.5: a tie
    for case, w, bits, group_size in (
        ("w = randn(4, 128), bits=2", torch.randn(4, 128, generator=g), 2, 64),
        (f"w = {tie.tolist()}, bits=2, group_size=8", tie, 2, 8),
    ):
        group, count = _most_levels(fn(w, bits, group_size=group_size), group_size)
        if count > 2**bits:
            report.fail(
                "at most 2**bits levels per group",
                case,
                f"group {group} takes {count} distinct values, expected at most {2**bits}",
                "the levels are the integers 0 .. 2**bits - 1: step = "
                "(max - min) / (2**bits - 1), and clamp round(w / step) + zero to that range (when "
                "-min / step ends in .5, the group's top value rounds one level past it)",
            )
    report.ok("at most 2**bits levels per group")

    steps, zeros = [2.0**-3, 2.0**-5, 2.0**-2, 2.0**-6], [3, 12, 0, 15]
    w, k = _grid_weights(4, 64, steps, zeros, g)
    case = f"bits=4, each group already on its own grid s * (k - z), k = 0..15, s = {steps}, z = {zeros}"
    compare(
        report,
        "asymmetric min-max grid: weights on it come back unchanged",
        case,
        fn(w, 4, group_size=64),
        w,
        "asymmetric min-max: step = (max - min) / (2**bits - 1), integer zero point z = round(-min / step), "
        "so min -> level 0 and max -> level 2**bits - 1 (a symmetric grid wastes levels on a group not "
        "centred on 0; 2**bits steps instead of 2**bits - 1 misses the max)",
    )
    report.ok("asymmetric min-max grid: weights on it come back unchanged")

    interior = (k > 0) & (k < 2**4 - 1)
    nudged = torch.where(interior, w - 0.3 * torch.tensor(steps)[:, None], w)
    compare(
        report,
        "rounds to the nearest level",
        case + ", interior values lowered by 0.3 step",
        fn(nudged, 4, group_size=64),
        w,
        "use torch.round, not floor or int() (which truncate)",
    )
    report.ok("rounds to the nearest level")

    w = torch.tensor([0.37, 0.0, -2.5])[:, None].expand(3, 64).contiguous()
    compare(
        report,
        "a constant group comes back unchanged (no NaN)",
        "rows of 64 equal values: 0.37, 0, -2.5",
        fn(w, 4, group_size=64),
        w,
        "when max == min the step is 0 and 0 / 0 is NaN: use step |min| "
        "(1 when min = 0), which puts the value exactly on a level, or return such groups unchanged",
    )
    report.ok("a constant group comes back unchanged (no NaN)")

    w = torch.randn(3, 2, 256, generator=g)
    w[torch.rand(w.shape, generator=g) < 0.01] *= 10  # a few outliers, as in trained weights
    for bits in range(2, 9):
        for group_size in (32, 64, 128):
            compare(
                report,
                "matches RTN on random weights",
                f"w = randn(3, 2, 256) with outliers, bits={bits}, group_size={group_size}",
                fn(w, bits, group_size=group_size),
                reference_rtn(w, bits, group_size),
                "q = clamp(round(w / s) + z, 0, 2**bits - 1), w_hat = s * (q - z) with s = (max - min) / "
                "(2**bits - 1) and z = round(-min / s) rounded to an integer",
            )
    report.ok("matches RTN on random weights")
