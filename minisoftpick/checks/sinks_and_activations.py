"""Notebook 08's exercises: the sink rate of attention maps and the kurtosis of hidden states."""

from __future__ import annotations

import torch

from .. import metrics, tolerances
from .core import Exercise, Property, call, number

RATE_HINT = (
    "average w[..., 0] over batch and query rows per head, count heads above threshold, divide by heads"
)


def attention_maps(to_first: torch.Tensor, row_sum: torch.Tensor | float = 1.0) -> torch.Tensor:
    """Causal maps [B, H, T, T]: row i puts to_first[b, h, i] on key 0 and the rest of its row_sum
    evenly on keys 1..i (row 0 sees key 0 only, so it holds to_first alone)."""
    b, h, t = to_first.shape
    row_sum = torch.as_tensor(row_sum, dtype=torch.float64).expand(b, h, t)
    w = torch.zeros(b, h, t, t, dtype=torch.float64)
    w[..., 0] = to_first
    for i in range(1, t):
        w[..., i, 1 : i + 1] = ((row_sum[..., i] - to_first[..., i]) / i)[..., None]
    return w


def per_head(*masses: float, t: int) -> torch.Tensor:
    """to_first [1, H, t]: head h puts masses[h] on token 0 in every row."""
    return torch.tensor(masses, dtype=torch.float64).reshape(1, -1, 1).expand(1, len(masses), t)


def diagonal_heavy(g: torch.Generator):
    """Both heads put 0.9 on each query's newest key (the diagonal) and 0.1 on token 0."""
    w = torch.zeros(1, 2, 6, 6, dtype=torch.float64)
    w[..., 0, 0] = 1.0
    rows = torch.arange(1, 6)
    w[..., rows, rows] = 0.9
    w[..., rows, 0] = 0.1
    return call([w])


def softpick_like(g: torch.Generator):
    t = 8
    nowhere = (torch.arange(t) % 2 == 0).double()  # even rows all zero, as softpick allows
    to_first = torch.stack([0.8 * (1 - nowhere), torch.full((t,), 0.4), torch.full((t,), 0.9)])[None]
    row_sum = torch.stack([1 - nowhere, torch.full((t,), 0.4), torch.ones(t)])[None]
    return call([attention_maps(to_first, row_sum)], threshold=0.5)


def half_the_batch(g: torch.Generator):
    to_first = torch.stack([torch.full((2, 6), 0.9), torch.zeros(2, 6)])
    return call([attention_maps(to_first, to_first)], threshold=0.5)


def softmax_like_layers(threshold: float | None):
    def inputs(g: torch.Generator):
        masses = torch.tensor([0.05, 0.2, 0.35, 0.45, 0.6, 0.9])
        layers = [
            attention_maps(masses[torch.randint(0, 6, (2, 4, 1), generator=g)].double().expand(2, 4, 8))
            for _ in range(3)
        ]
        return call(layers) if threshold is None else call(layers, threshold=threshold)

    return inputs


def rate(value: float):
    return lambda *args, **kwargs: torch.tensor(value, dtype=torch.float64)


def reference_sink_rate(weights, threshold=0.3) -> torch.Tensor:
    return torch.tensor(metrics.sink_rate(weights, threshold=threshold), dtype=torch.float64)


sink_rate = Exercise(
    name="sink_rate",
    contract="fn(weights, threshold=0.3): the fraction of heads, over a list of [B, H, T, T] maps, whose mean "
    "attention to token 0 exceeds threshold",
    reference=reference_sink_rate,
    observe=number,
    seed=8,
    properties=[
        Property(
            "returns a number",
            "one layer [1, 2, 6, 6]",
            lambda g: call([attention_maps(per_head(0.9, 0.1, t=6))]),
            "return a float (or a 0-dim tensor)",
            expected=rate(0.0),
            layout=True,
        ),
        Property(
            "the first token is the sink",
            "head 0 puts 0.9 on token 0, head 1 0.02",
            lambda g: call([attention_maps(per_head(0.9, 0.02, t=6))]),
            "the sink is key 0, the first column w[..., 0], in every query row (not the last key, "
            "not the first query row)",
            expected=rate(0.5),
        ),
        Property(
            "the first token is the sink",
            "both heads put 0.9 on the diagonal and 0.1 on token 0",
            diagonal_heavy,
            "the sink is key 0, the first column w[..., 0], in every query row (not the last key, "
            "not the first query row)",
            expected=rate(0.0),
        ),
        Property(
            "a head must exceed the threshold",
            "threshold=0.5; head 0's mean attention to token 0 is exactly 0.5, head 1's is 0.75",
            lambda g: call(
                [attention_maps(torch.tensor([[1.0, 0.5, 0.5, 0.0], [1.0, 0.75, 0.75, 0.5]]).double()[None])],
                threshold=0.5,
            ),
            "a sink head's mean attention to token 0 is strictly greater than the threshold (>, not >=)",
            expected=rate(0.5),
        ),
        Property(
            "rows that attend nowhere are no sink",
            "threshold=0.5, softpick-like rows: head 0 has half its rows all zero and 0.8 on token 0 in the "
            "others, head 1's rows sum to 0.4, all on token 0, head 2 puts 0.9 on token 0",
            softpick_like,
            "average over every query row, zero rows included, without renormalising rows: a row of zeros puts "
            "0 on token 0, and a row summing to 0.4 gives token 0 at most 0.4",
            expected=rate(1 / 3),
        ),
        Property(
            "averaged over the batch",
            "threshold=0.5, batch of 2: both heads put 0.9 on token 0 in sample 0 and 0 in sample 1",
            half_the_batch,
            "average over the batch dimension too: a head that sinks in one sample of two averages 0.45",
            expected=rate(0.0),
        ),
        *(
            Property(
                "a fraction of all heads",
                f"3 layers of softmax-like maps [2, 4, 8, 8], heads putting 0.05-0.9 on token 0, {when}",
                softmax_like_layers(threshold),
                RATE_HINT,
            )
            for threshold, when in ((None, "default threshold"), (0.5, "threshold=0.5"))
        ),
    ],
)


def reference_kurtosis(x) -> torch.Tensor:
    return torch.tensor(metrics.kurtosis(x), dtype=torch.float64)


def massive_activation(g: torch.Generator):
    x = torch.randn(64, 128, generator=g)
    x[3, 7] = 500.0
    return call(x)


kurtosis = Exercise(
    name="kurtosis",
    contract="fn(x): Pearson kurtosis E[(x - mean)^4] / E[(x - mean)^2]^2 over all elements of x",
    reference=reference_kurtosis,
    observe=number,
    seed=9,
    tolerance=tolerances.STATISTIC,
    properties=[
        Property(
            "Pearson kurtosis: about 3 for a Gaussian",
            "x = torch.randn(100_000) (float64)",
            lambda g: call(torch.randn(100_000, generator=g, dtype=torch.float64)),
            "Pearson kurtosis keeps the 3: do not subtract 3 (that is excess kurtosis, 0 for a Gaussian)",
            tolerance=tolerances.STATISTIC_OF_1E5,
        ),
        Property(
            "population moments",
            "x = [0, 1, 1, 2, 9, -3] (float64)",
            lambda g: call(torch.tensor([0.0, 1.0, 1.0, 2.0, 9.0, -3.0], dtype=torch.float64)),
            "divide by n in both moments: torch.var divides by n - 1 unless correction=0",
        ),
        Property(
            "over all elements",
            "x = randn(4, 50) with row 3 twenty times larger",
            lambda g: call(
                torch.randn(4, 50, generator=g, dtype=torch.float64)
                * torch.tensor([[1.0], [1.0], [1.0], [20.0]])
            ),
            "flatten x: one mean and one pair of moments over every element, not one per row",
        ),
        Property(
            "a massive activation",
            "x = randn(64, 128) float32 with x[3, 7] = 500",
            massive_activation,
            "compute the moments in float64 (x.double()) about the mean",
            expected=lambda x: reference_kurtosis(x),
        ),
    ],
)
