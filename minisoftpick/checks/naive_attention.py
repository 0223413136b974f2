"""Notebook 02's exercise: naive softpick attention (docs/design.md, "Masking")."""

from __future__ import annotations

import torch

from .. import tolerances
from ..attention import causal_mask as reference_causal_mask
from ..attention import naive_attention as reference_attention
from ..normalizers import softpick as reference_softpick
from .cases import (
    HIDDEN_HINT,
    LARGE_HIDDEN_SCORES,
    LARGE_HINT,
    LARGE_SCORES,
    only_key_zero_visible,
    qkv,
    qkv_with_scores,
    randn,
    scores_case,
)
from .core import Exercise, Property, call, gradients, plain, zeros

naive_attention = Exercise(
    name="naive_attention",
    contract="fn(q, k, v, causal=True): softpick attention, scale 1/sqrt(D), causal mask bottom-right aligned",
    reference=reference_attention,
    seed=1,
    properties=[
        Property(
            "shape",
            "q, k, v of shape [2, 3, 6, 8]",
            lambda g: call(*qkv(g, 2, 3, 6, 6, 8), causal=True),
            "return weights @ v, shaped like q",
            layout=True,
        ),
        Property(
            "rows of negative scores attend to nothing",
            "non-causal, every score < 0",
            lambda g: call(
                *qkv_with_scores(g, -torch.rand(6, generator=g, dtype=torch.float64) * 3 - 0.01, 6, 8),
                causal=False,
            ),
            "softpick, not softmax: an all-negative row has weight zero everywhere, so its output is 0",
            expected=zeros,
        ),
        Property(
            "causal mask",
            "causal, query 0 sees only key 0 (score 2): is its output all zeros? (1 = yes)",
            only_key_zero_visible,
            "query i sees keys j <= i: the diagonal is included",
            observe=lambda fn, q, k, v, causal: (fn(q, k, v, causal=causal)[..., 0, :] == 0).all().double(),
            expected=lambda *args, **kwargs: torch.tensor(0.0),
        ),
        Property(
            "masked keys stay out of the denominator",
            "causal, query 0 sees only key 0 (score 2)",
            only_key_zero_visible,
            "exp(-inf) - 1 = -1 adds 1 per masked key to sum |exp(s) - 1|: zero masked entries before summing",
            observe=lambda fn, q, k, v, causal: fn(q, k, v, causal=causal)[..., 0, :],
            expected=lambda q, k, v, causal: reference_attention(q, k, v)[..., 0, :],
        ),
        Property(
            "scores scaled by 1/sqrt(D)",
            "causal=False, D = 64",
            lambda g: call(*qkv(g, 1, 2, 6, 6, 64), causal=False),
            "divide q @ k^T by sqrt(D) before softpick",
        ),
        Property(
            "causal mask",
            "causal=True, T = 7",
            lambda g: call(*qkv(g, 2, 2, 7, 7, 8, std=1.5), causal=True),
            "query i sees keys j <= i (the diagonal included)",
        ),
        Property(
            "Tq != Tk, bottom-right causal mask",
            "Tq = 3, Tk = 8",
            lambda g: call(*qkv(g, 1, 2, 3, 8, 8, std=1.5), causal=True),
            "query i sees keys j <= i + Tk - Tq (the last query sees every key)",
        ),
        Property(
            "stable for large scores",
            f"causal, float32, every query scores {LARGE_SCORES} on keys 0-5",
            scores_case(LARGE_SCORES, 6, torch.float32, causal=True),
            LARGE_HINT,
            tolerance=tolerances.FLOAT32,
        ),
        Property(
            "large hidden scores stay hidden",
            f"causal, float32, every query scores {LARGE_HIDDEN_SCORES}: queries 0-3 cannot see the 400s",
            scores_case(LARGE_HIDDEN_SCORES, 6, torch.float32, causal=True),
            HIDDEN_HINT,
            tolerance=tolerances.FLOAT32,
        ),
        Property(
            "gradient",
            "d loss / d (q, k, v), causal, T = 4",
            lambda g: call(*qkv(g, 1, 1, 4, 4, 8, std=1.5)),
            "use differentiable torch ops only",
            observe=gradients,
            expected=lambda q, k, v: gradients(reference_attention, q, k, v),
        ),
    ],
)


def mask_case(tq: int, tk: int):
    return lambda g: call(tq, tk)


def as_numbers(fn, tq, tk):
    mask = fn(tq, tk)
    return mask.double() if isinstance(mask, torch.Tensor) else mask


causal_mask = Exercise(
    name="causal_mask",
    contract="fn(tq, tk) -> bool [tq, tk], True where query i sees key j: j <= i + tk - tq",
    reference=reference_causal_mask,
    observe=as_numbers,
    seed=0,
    tolerance=tolerances.EXACT,
    properties=[
        Property(
            "a bool tensor [Tq, Tk]",
            "tq = tk = 5",
            mask_case(5, 5),
            "return torch.arange(tk)[None, :] <= ... : a comparison gives a bool tensor",
            observe=plain,
            layout=True,
        ),
        Property(
            "Tq = Tk: query i sees keys j <= i",
            "tq = tk = 6",
            mask_case(6, 6),
            "row i is query i, column j key j; the diagonal is visible (a query sees itself)",
        ),
        Property(
            "Tq < Tk is bottom-right aligned",
            "tq = 3, tk = 8",
            mask_case(3, 8),
            "the queries are the last tq positions: query i sees keys j <= i + tk - tq, the last query every key",
        ),
        Property(
            "Tq > Tk: the first queries see no key",
            "tq = 7, tk = 3",
            mask_case(7, 3),
            "with tk - tq < 0 the first tq - tk rows are all False: use the same formula, no special case",
        ),
    ],
)


def scores_and_mask(make, keep):
    """Inputs (scores, keep) for scores make(g) and a fixed bool mask."""
    return lambda g: call(make(g), torch.as_tensor(keep))


def hidden_weights(fn, scores, keep):
    weights = fn(scores, keep)
    return weights * ~keep if isinstance(weights, torch.Tensor) else weights


LARGE_HIDDEN_ROW = [[1.0, -0.5, 400.0, 2.0, 400.0]]  # the 400s are hidden
LARGE_HIDDEN_KEEP = [[True, True, False, True, False]]

masked_softpick = Exercise(
    name="masked_softpick",
    contract="fn(scores, keep) -> weights: softpick over the last dim of the entries where the bool keep is True; "
    "the others get weight 0 and stay out of the denominator",
    reference=lambda scores, keep: reference_softpick(scores, mask=keep),
    seed=13,
    properties=[
        Property(
            "shape and dtype",
            "scores = randn(4, 6) (float64), keep = causal_mask(4, 6)",
            scores_and_mask(lambda g: randn(g, 4, 6), reference_causal_mask(4, 6)),
            "return weights shaped like scores, in their dtype",
            layout=True,
        ),
        Property(
            "hidden entries get weight 0",
            "scores = 2 + randn(5, 5), keep = causal_mask(5, 5)",
            scores_and_mask(lambda g: 2 + randn(g, 5, 5), reference_causal_mask(5, 5)),
            "set hidden entries of exp(s - c) - exp(-c) to 0 with masked_fill(~keep, 0.0) before relu and the sum",
            observe=hidden_weights,
            expected=lambda scores, keep: torch.zeros_like(scores),
            tolerance=tolerances.EXACT,
        ),
        Property(
            "hidden entries stay out of the denominator",
            "scores = [[2, -3, 1, 0.5]], keep = [[True, False, True, False]]",
            scores_and_mask(
                lambda g: torch.tensor([[2.0, -3.0, 1.0, 0.5]], dtype=torch.float64),
                [[True, False, True, False]],
            ),
            "filling hidden scores with -inf gives exp(-inf) - 1 = -1, and |-1| adds 1 per hidden entry to the "
            "denominator: zero them after the exp instead",
        ),
        Property(
            "matches softpick on random rows with a causal mask",
            "scores = 3 * randn(6, 6), keep = causal_mask(6, 6)",
            scores_and_mask(lambda g: randn(g, 6, 6, std=3.0), reference_causal_mask(6, 6)),
            "weights = relu(e) / (sum |e| + 1e-6 exp(-c)), e = exp(s - c) - exp(-c) at visible entries, 0 elsewhere",
        ),
        Property(
            "a row that sees nothing is all zeros",
            "scores = 2 + randn(2, 4), row 1 all hidden",
            scores_and_mask(lambda g: 2 + randn(g, 2, 4), [[True, True, False, True], [False] * 4]),
            "the max of a row with no visible entry is -inf: clamp it to c = max(m, 0) = 0, and the row is 0 / eps = 0",
        ),
        Property(
            "large hidden scores stay hidden",
            f"scores = {LARGE_HIDDEN_ROW} (float32), keep = {LARGE_HIDDEN_KEEP}",
            scores_and_mask(lambda g: torch.tensor(LARGE_HIDDEN_ROW), LARGE_HIDDEN_KEEP),
            HIDDEN_HINT,
            tolerance=tolerances.FLOAT32,
        ),
        Property(
            "stable for large scores",
            "scores = [[300, 250, -5, 299.5]] (float32), every entry visible",
            scores_and_mask(lambda g: torch.tensor([[300.0, 250.0, -5.0, 299.5]]), [[True] * 4]),
            LARGE_HINT,
            tolerance=tolerances.FLOAT32,
        ),
    ],
)
