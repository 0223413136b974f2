"""Notebook 08's exercises: the backcopy task's sink, drain and peak; the sink rate of attention maps and
the kurtosis of hidden states."""

from __future__ import annotations

import torch

from .. import metrics, tolerances
from .core import Exercise, Property, call, number

# ---- bos_attention: fn(w, queries) -> [H] -----------------------------------------------------------


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


def causal_maps(g: torch.Generator, b: int, h: int, t: int, nowhere: float = 0.0) -> torch.Tensor:
    """Random causal maps [b, h, t, t]: softmax rows of random scores, and (softpick-like) each row scaled
    by a random mass in [0, 1], a fraction ``nowhere`` of the rows all zero."""
    scores = torch.randn(b, h, t, t, generator=g, dtype=torch.float64)
    hidden = torch.ones(t, t, dtype=torch.bool).triu(1)
    w = scores.masked_fill(hidden, float("-inf")).softmax(-1)
    if nowhere:
        mass = torch.rand(b, h, t, 1, generator=g, dtype=torch.float64)
        mass[torch.rand(b, h, t, 1, generator=g) < nowhere] = 0.0
        w = w * mass
    return w


def roles(g: torch.Generator, b: int, t: int, share: float = 0.7) -> torch.Tensor:
    """Random selected queries [b, t] (about ``share`` of them), never position 0, at least one per row."""
    queries = torch.rand(b, t, generator=g) < share
    queries[:, 0] = False
    queries[:, -1] = True
    return queries


def bos_heavy_at_selected(g: torch.Generator):
    """Softmax rows that put 0.8 on BOS at the selected queries and 0.1 elsewhere."""
    t = 6
    queries = torch.tensor([[False, True, False, True, True, False]])
    to_first = torch.where(queries, 0.8, 0.1).double()[:, None].expand(1, 2, t)
    return call(attention_maps(to_first), queries)


def mass_is_not_one(g: torch.Generator):
    """Softpick-like rows at the selected queries: half all zero, the others sum to 0.5, 0.4 of it on BOS."""
    t = 8
    queries = torch.ones(1, t, dtype=torch.bool)
    queries[:, 0] = False
    zero = (torch.arange(t) % 2 == 0).double()
    to_first, row_sum = 0.4 * (1 - zero), 0.5 * (1 - zero)
    w = attention_maps(to_first[None, None].expand(1, 2, t), row_sum[None, None].expand(1, 2, t))
    return call(w, queries)


def unequal_sequences(g: torch.Generator):
    """Two sequences: the first selects 1 query with 0.9 on BOS, the second 4 queries with 0.1 on BOS."""
    t = 6
    queries = torch.tensor(
        [[False, True, False, False, False, False], [False, True, True, True, True, False]]
    )
    to_first = torch.stack([torch.full((t,), 0.9), torch.full((t,), 0.1)]).double()[:, None].expand(2, 3, t)
    return call(attention_maps(to_first), queries)


def first_key_apart(g: torch.Generator):
    """Every query from 1 on selected: each row puts 0.6 on BOS (key 0) and 0.4 on its newest key."""
    t = 6
    w = torch.zeros(1, 2, t, t, dtype=torch.float64)
    w[..., 0] = 0.6
    rows = torch.arange(1, t)
    w[..., rows, rows] = 0.4
    queries = torch.ones(1, t, dtype=torch.bool)
    queries[:, 0] = False
    return call(w, queries)


def random_roles(nowhere: float):
    return lambda g: call(causal_maps(g, 3, 4, 12, nowhere), roles(g, 3, 12))


bos_attention = Exercise(
    name="bos_attention",
    contract="fn(w, queries) -> [H]: each head's weight on key 0 (BOS), averaged over the selected queries",
    reference=metrics.bos_attention,
    seed=10,
    properties=[
        Property(
            "one number per head",
            "w [1, 2, 6, 6] float64, 3 queries selected",
            bos_heavy_at_selected,
            "return a float tensor of shape [H]: average over the batch and the selected query positions, "
            "keep the head dimension",
            layout=True,
        ),
        Property(
            "the weight on key 0",
            "every query from 1 on selected; rows put 0.6 on key 0 and 0.4 on the newest key",
            first_key_apart,
            "BOS is key 0: the first column w[b, h, i, 0] of every selected query row i (not the last key, "
            "not the first query row w[b, h, 0, :])",
        ),
        Property(
            "only the selected queries",
            "queries 1, 3, 4 selected: they put 0.8 on BOS, the other rows 0.1",
            bos_heavy_at_selected,
            "average over the positions where queries is True only (the dormant ones), not over every row",
        ),
        Property(
            "rows as they are, not renormalised",
            "softpick-like rows: half of them all zero, the others summing to 0.5 with 0.4 on BOS",
            mass_is_not_one,
            "a softpick row may sum to less than 1 or to 0: take w[..., 0] as it is, a row of zeros adds 0, "
            "never divide by the row sum",
        ),
        Property(
            "pooled over the batch",
            "batch of 2: sequence 0 selects 1 query (0.9 on BOS), sequence 1 selects 4 (0.1 on BOS)",
            unequal_sequences,
            "one average over every selected (sequence, query) pair: sum the selected weights and divide by "
            "queries.sum(), not a mean of per-sequence means",
        ),
        *(
            Property(
                "random maps and roles",
                f"w [3, 4, 12, 12] of {kind} rows, about 70% of the queries selected",
                random_roles(nowhere),
                "sum w[..., 0] over the selected queries per head and divide by how many are selected",
            )
            for nowhere, kind in ((0.0, "softmax"), (0.3, "softpick-like"))
        ),
    ],
)

# ---- first_token_norm_ratio: fn(states) -> [...] -------------------------------------------------------


def states_with_norms(g: torch.Generator, norms: list[list[float]], d: int = 4) -> torch.Tensor:
    """Residual states [B, T, d] whose position t of sequence b has L2 norm norms[b][t], in a random direction."""
    directions = torch.randn(len(norms), len(norms[0]), d, generator=g, dtype=torch.float64)
    return (
        directions
        / directions.norm(dim=-1, keepdim=True)
        * torch.tensor(norms, dtype=torch.float64)[..., None]
    )


def equal_norm_mean(g: torch.Generator):
    """Norms 5 at BOS, then 6, 4 and 5 (mean 5): the ratio is 1; squared or L1 norms give other ratios."""
    states = torch.tensor([[[3.0, 4.0], [6.0, 0.0], [0.0, 4.0], [5.0, 0.0]]], dtype=torch.float64)
    return call(states)


def ratio_norms(norms):
    return lambda g: call(states_with_norms(g, norms))


def per_head_values(g: torch.Generator):
    """Value states [2, 3, 5, 8]: head 0 drained (small BOS value), head 1 even, head 2 a large BOS value."""
    states = torch.randn(2, 3, 5, 8, generator=g, dtype=torch.float64)
    states[:, 0, 0] *= 0.05
    states[:, 2, 0] *= 20.0
    return call(states)


first_token_norm_ratio = Exercise(
    name="first_token_norm_ratio",
    contract="fn(states [B, ..., T, D]) -> [...]: the L2 norm of position 0's state over the mean norm of the "
    "other positions' states, norms averaged over the batch first",
    reference=metrics.first_token_norm_ratio,
    seed=11,
    properties=[
        Property(
            "one ratio per head",
            "value states [2, 3, 5, 8] float64 (3 heads)",
            per_head_values,
            "keep every dimension between the batch and the positions: [B, H, T, D] gives [H], the residual "
            "stream [B, T, D] a 0-dim tensor; norm over the last dimension, mean over the batch",
            layout=True,
        ),
        Property(
            "one ratio per head",
            "residual stream [1, 4, 2] float64",
            equal_norm_mean,
            "keep every dimension between the batch and the positions: [B, H, T, D] gives [H], the residual "
            "stream [B, T, D] a 0-dim tensor; norm over the last dimension, mean over the batch",
            layout=True,
        ),
        Property(
            "the L2 norm of each position's state",
            "[1, 4, 2]: BOS (3, 4), then (6, 0), (0, 4) and (5, 0): L2 norms 5, 6, 4 and 5",
            equal_norm_mean,
            "a state's size is its L2 norm over the features, states.norm(dim=-1): not squared, not the sum "
            "of absolute values",
        ),
        Property(
            "over the other positions' mean",
            "one sequence whose positions have norms 10 (BOS), 1, 4, 2",
            ratio_norms([[10.0, 1.0, 4.0, 2.0]]),
            "divide by the mean norm of positions 1..T-1, the tokens other than BOS: not all positions "
            "(BOS included), not the last one, not position 1",
        ),
        Property(
            "averaged over the batch before dividing",
            "two sequences with norms 10, 1, 1 and 2, 4, 4",
            ratio_norms([[10.0, 1.0, 1.0], [2.0, 4.0, 4.0]]),
            "average BOS's norm over the batch, and the others' norms over batch and positions, then divide "
            "once: not a mean of per-sequence ratios",
        ),
        Property(
            "random states",
            "value states [2, 3, 5, 8] with a drained head and a peaked one",
            per_head_values,
            "norms over the features, position 0 against the mean of positions 1.., averaged over the batch",
        ),
    ],
)

# ---- sink_rate and kurtosis ----------------------------------------------------------------------------

RATE_HINT = (
    "average w[..., 0] over batch and query rows per head, count heads above threshold, divide by heads"
)


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
