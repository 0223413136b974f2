"""Notebook 05's exercise: a flash softpick forward kernel (docs/design.md, "Online recurrence").

``flash_forward`` takes the learner's launcher ``fn(q, k, v, causal=True, scale=None) -> out``. A Triton
kernel cannot take a Python callback, so the learner writes the whole small kernel in the notebook and
passes its launcher; an unfinished launcher or kernel raises NotImplementedError. Inputs are float32 on
the GPU when there is one, else on the CPU for the Triton interpreter, and tiny (the interpreter is
slow); the reference is naive attention in float64.
"""

from __future__ import annotations

import torch

from .. import tolerances
from ..attention import naive_attention as reference_attention
from ..kernels import interpreting, kernel_device
from .cases import LARGE_HIDDEN_SCORES, LARGE_SCORES, qkv, qkv_with_scores
from .core import Exercise, Property, call

TOLERANCE = tolerances.kernel(interpreting())
D = 16  # the head dim of every case: the smallest tl.dot takes on a GPU


def on_device(*tensors):
    return tuple(x.float().to(kernel_device()) for x in tensors)


def kernel_case(tq: int, tk: int, heads: int = 1, std: float = 1.0, **kwargs):
    return lambda g: call(*on_device(*qkv(g, 1, heads, tq, tk, D, std)), **kwargs)


def scores_case(scores, tq: int, **kwargs):
    scores = torch.as_tensor(scores, dtype=torch.float64)
    return lambda g: call(*on_device(*qkv_with_scores(g, scores, tq, D)), **kwargs)


def far_below(g: torch.Generator):
    """Keys 0-15 (the first key block) score -200, keys 16-39 about 2 N(0, 1); non-causal, Tq = 4."""
    scores = torch.cat([torch.full((16,), -200.0), 2 * torch.randn(24, generator=g)]).double()
    return call(*on_device(*qkv_with_scores(g, scores, 4, D)), causal=False)


flash_forward = Exercise(
    name="flash_forward",
    contract="fn(q, k, v, causal=True, scale=None) -> out: softpick attention of float32 q [B, H, Tq, D], k and "
    "v [B, H, Tk, D] (D = 16) on the kernel's device, scale defaulting to 1/sqrt(D)",
    reference=reference_attention,
    seed=6,
    tolerance=TOLERANCE,
    properties=[
        Property(
            "shape and dtype",
            "q, k, v = randn(1, 1, 16, 16)",
            kernel_case(16, 16),
            "return a new float32 tensor shaped like q, on q's device",
            layout=True,
        ),
        Property(
            "matches naive attention, several key blocks",
            "non-causal, B = 1, H = 2, Tq = Tk = 48, D = 16, scores about 2 * N(0, 1)",
            kernel_case(48, 48, heads=2, std=2**0.5, causal=False),
            "each key block: c_new = max(c, rowmax(s)), r = exp(c - c_new), p = exp(s - c_new) - exp(-c_new); "
            "rescale BOTH den and acc by r before adding the block's sum |p| and relu(p) @ v",
        ),
        Property(
            "uses scale",
            "non-causal, Tq = Tk = 32, scale = 0.7",
            kernel_case(32, 32, causal=False, scale=0.7),
            "multiply the dot product q @ k^T by scale (the launcher passes 1/sqrt(D) when scale is None)",
        ),
        Property(
            "causal mask, ragged T",
            "causal, H = 2, Tq = Tk = 37 (not a multiple of the block)",
            kernel_case(37, 37, heads=2, std=2**0.5),
            "row i sees key j <= i + Tk - Tq; set hidden scores to exactly 0 with tl.where (0, not -inf: "
            "exp(-inf - c) - exp(-c) = -exp(-c) would add |.| to the denominator)",
        ),
        Property(
            "causal with Tq != Tk is bottom-right aligned",
            "causal, Tq = 5, Tk = 40",
            kernel_case(5, 40),
            "offset = Tk - Tq: the last query sees every key; keys past a row's last visible key add nothing",
        ),
        Property(
            "queries that see no key give zeros",
            "causal, Tq = 20, Tk = 9: the first 11 queries see no key at all",
            kernel_case(20, 9),
            "a row that sees no key keeps c = 0, den = 0, acc = 0 and outputs 0 (the loop may not run at all)",
        ),
        Property(
            "rows of negative scores give zeros",
            "every score in (-3, 0), causal, T = 20",
            lambda g: scores_case(-3 * torch.rand(20, generator=g, dtype=torch.float64) - 0.01, 20)(g),
            "softpick gives scores <= 0 zero weight: relu(p) in the output, |p| in the denominator",
        ),
        Property(
            "first key block far below zero",
            "non-causal, keys 0-15 score -200, keys 16-39 score 2 * N(0, 1), Tq = 4 (float32)",
            far_below,
            "start c at 0 (tl.zeros), not at -inf: shifting by the row max m alone makes exp(-m) overflow in "
            "the first block, and the next block's rescale gives inf * 0 = NaN",
        ),
        Property(
            "stable for large scores",
            f"causal, every query scores {LARGE_SCORES} on keys 0-5 (float32)",
            scores_case(LARGE_SCORES, 6),
            "exp overflows float32 above 88.7: update c = max(c, rowmax(s)) in every block and use exp(s - c_new)",
        ),
        Property(
            "large hidden scores stay hidden",
            f"causal, every query scores {LARGE_HIDDEN_SCORES} (float32): queries 0-3 cannot see the 400s",
            scores_case(LARGE_HIDDEN_SCORES, 6),
            "apply the causal mask to s (tl.where(visible, s, 0.0)) before the row max: a hidden 400 must not "
            "raise c, and p * visible after exp(400) is inf * 0 = NaN",
        ),
    ],
)
