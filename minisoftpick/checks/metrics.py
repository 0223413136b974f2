"""Checks for the exercises of notebook 08: the sink rate and the kurtosis of hidden states."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .. import metrics, solutions
from .core import Report, compare, run_exercise


def _number(report: Report, prop: str, case: str, value: object, hint: str) -> torch.Tensor:
    """``value`` (a Python number or a one-element tensor) as a float64 scalar tensor, else fail."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.detach().double().reshape(())
    if isinstance(value, int | float) and not isinstance(value, bool):
        return torch.tensor(float(value), dtype=torch.float64)
    report.fail(prop, case, f"your function returned {type(value).__name__}, expected a number", hint)


def _attention_maps(to_first: torch.Tensor, row_sum: torch.Tensor | float = 1.0) -> torch.Tensor:
    """Causal maps [B, H, T, T]: row i puts to_first[b, h, i] on key 0 and the rest of its row_sum
    evenly on keys 1..i (row 0 sees key 0 only, so it holds to_first alone)."""
    b, h, t = to_first.shape
    row_sum = torch.as_tensor(row_sum, dtype=torch.float64).expand(b, h, t)
    w = torch.zeros(b, h, t, t, dtype=torch.float64)
    w[..., 0] = to_first
    for i in range(1, t):
        w[..., i, 1 : i + 1] = ((row_sum[..., i] - to_first[..., i]) / i)[..., None]
    return w


def sink_rate(fn: Callable) -> Callable:
    """Check ``fn(weights, threshold=0.3)``: the fraction of heads that put > threshold on token 0."""
    return run_exercise("sink_rate", fn, solutions.sink_rate, _sink_rate_properties)


def _sink_rate_properties(fn: Callable, report: Report) -> None:
    hint = (
        "average w[..., 0] over batch and query rows per head, count heads above threshold, divide by heads"
    )
    maps = _attention_maps(torch.tensor([0.9, 0.1]).double().reshape(1, 2, 1).expand(1, 2, 5))
    _number(
        report, "returns a number", "one layer [1, 2, 5, 5]", fn([maps]), "return a float (or a 0-dim tensor)"
    )
    report.ok("returns a number")

    to_first = torch.tensor([0.9, 0.02]).double().reshape(1, 2, 1).expand(1, 2, 6)
    first_sinks = _attention_maps(to_first)
    last_heavy = torch.zeros(1, 2, 6, 6, dtype=torch.float64)
    last_heavy[..., 0, 0] = 1.0
    rows = torch.arange(1, 6)
    last_heavy[..., rows, rows] = 0.9  # each query's newest key, the diagonal
    last_heavy[..., rows, 0] = 0.1
    for maps, expected, what in (
        (first_sinks, 0.5, "head 0 puts 0.9 on token 0, head 1 0.02"),
        (last_heavy, 0.0, "both heads put 0.9 on the diagonal and 0.1 on token 0"),
    ):
        compare(
            report,
            "the first token is the sink",
            what,
            _number(report, "the first token is the sink", what, fn([maps]), hint),
            torch.tensor(expected, dtype=torch.float64),
            "the sink is key 0, the first column w[..., 0], in every query row (not the last key, "
            "not the first query row)",
        )
    report.ok("the first token is the sink")

    to_first = torch.tensor([[1.0, 0.5, 0.5, 0.0], [1.0, 0.75, 0.75, 0.5]]).double()[None]
    case = "threshold=0.5; head 0's mean attention to token 0 is exactly 0.5, head 1's is 0.75"
    compare(
        report,
        "a head must exceed the threshold",
        case,
        _number(
            report,
            "a head must exceed the threshold",
            case,
            fn([_attention_maps(to_first)], threshold=0.5),
            hint,
        ),
        torch.tensor(0.5, dtype=torch.float64),
        "a sink head's mean attention to token 0 is strictly greater than the threshold (>, not >=)",
    )
    report.ok("a head must exceed the threshold")

    t = 8
    attends_nowhere = (torch.arange(t) % 2 == 0).double()  # even rows all zero, as softpick allows
    to_first = torch.stack([0.8 * (1 - attends_nowhere), torch.full((t,), 0.4), torch.full((t,), 0.9)])[None]
    row_sum = torch.stack([1 - attends_nowhere, torch.full((t,), 0.4), torch.ones(t)])[None]
    maps = _attention_maps(to_first, row_sum)
    case = (
        "threshold=0.5, softpick-like rows: head 0 has half its rows all zero and 0.8 on token 0 in the "
        "others, head 1's rows sum to 0.4, all on token 0, head 2 puts 0.9 on token 0"
    )
    yours = _number(report, "rows that attend nowhere are no sink", case, fn([maps], threshold=0.5), hint)
    compare(
        report,
        "rows that attend nowhere are no sink",
        case,
        yours,
        torch.tensor(1 / 3, dtype=torch.float64),
        "average over every query row, zero rows included, without renormalising rows: a row of zeros puts "
        "0 on token 0, and a row summing to 0.4 gives token 0 at most 0.4",
    )
    report.ok("rows that attend nowhere are no sink")

    to_first = torch.stack([torch.full((2, 6), 0.9), torch.zeros(2, 6)])
    case = "threshold=0.5, batch of 2: both heads put 0.9 on token 0 in sample 0 and 0 in sample 1"
    compare(
        report,
        "averaged over the batch",
        case,
        _number(
            report,
            "averaged over the batch",
            case,
            fn([_attention_maps(to_first, to_first)], threshold=0.5),
            hint,
        ),
        torch.tensor(0.0, dtype=torch.float64),
        "average over the batch dimension too: a head that sinks in one sample of two averages 0.45",
    )
    report.ok("averaged over the batch")

    g = torch.Generator().manual_seed(8)
    masses = torch.tensor([0.05, 0.2, 0.35, 0.45, 0.6, 0.9])
    layers = [
        _attention_maps(masses[torch.randint(0, 6, (2, 4, 1), generator=g)].double().expand(2, 4, 8))
        for _ in range(3)
    ]
    case = "3 layers of softmax-like maps [2, 4, 8, 8], heads putting 0.05-0.9 on token 0"
    compare(
        report,
        "a fraction of all heads",
        case,
        _number(report, "a fraction of all heads", case, fn(layers), hint),
        torch.tensor(metrics.sink_rate(layers), dtype=torch.float64),
        hint + " (the default threshold is 0.3)",
    )
    compare(
        report,
        "a fraction of all heads",
        case + ", threshold=0.5",
        _number(report, "a fraction of all heads", case, fn(layers, threshold=0.5), hint),
        torch.tensor(metrics.sink_rate(layers, threshold=0.5), dtype=torch.float64),
        hint,
    )
    report.ok("a fraction of all heads")


def kurtosis(fn: Callable) -> Callable:
    """Check ``fn(x)``: Pearson kurtosis E[(x - mean)^4] / E[(x - mean)^2]^2 over all elements of x."""
    return run_exercise("kurtosis", fn, solutions.kurtosis, _kurtosis_properties)


def _kurtosis_properties(fn: Callable, report: Report) -> None:
    g = torch.Generator().manual_seed(9)

    def check(prop: str, case: str, x: torch.Tensor, hint: str, rtol: float = 1e-6) -> None:
        yours = _number(report, prop, case, fn(x), hint)
        compare(
            report,
            prop,
            case,
            yours,
            torch.tensor(metrics.kurtosis(x), dtype=torch.float64),
            hint,
            atol=0.0,
            rtol=rtol,
        )

    check(
        "Pearson kurtosis: about 3 for a Gaussian",
        "x = torch.randn(100_000) (float64)",
        torch.randn(100_000, generator=g, dtype=torch.float64),
        "Pearson kurtosis keeps the 3: do not subtract 3 (that is excess kurtosis, 0 for a Gaussian)",
        rtol=1e-3,
    )
    report.ok("Pearson kurtosis: about 3 for a Gaussian")

    check(
        "population moments",
        "x = [0, 1, 1, 2, 9, -3] (float64)",
        torch.tensor([0.0, 1.0, 1.0, 2.0, 9.0, -3.0], dtype=torch.float64),
        "divide by n in both moments: torch.var divides by n - 1 unless correction=0",
    )
    report.ok("population moments")

    x = torch.randn(4, 50, generator=g, dtype=torch.float64) * torch.tensor([[1.0], [1.0], [1.0], [20.0]])
    check(
        "over all elements",
        "x = randn(4, 50) with row 3 twenty times larger",
        x,
        "flatten x: one mean and one pair of moments over every element, not one per row",
    )
    report.ok("over all elements")

    x = torch.randn(64, 128, generator=g)
    x[3, 7] = 500.0
    check(
        "a massive activation",
        "x = randn(64, 128) float32 with x[3, 7] = 500",
        x,
        "compute the moments in float64 (x.double()) about the mean",
        rtol=1e-4,
    )
    report.ok("a massive activation")
