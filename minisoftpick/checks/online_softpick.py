"""Notebook 03's exercise: the online (flash) algorithm in PyTorch (docs/design.md, "Online recurrence")."""

from __future__ import annotations

import torch

from .. import tolerances
from ..attention import naive_attention as reference_attention
from .cases import (
    HIDDEN_HINT,
    LARGE_HIDDEN_SCORES,
    LARGE_HINT,
    LARGE_SCORES,
    qkv,
    qkv_with_scores,
    scores_case,
)
from .core import Exercise, Property, call, zeros

FAR_BELOW = [-200.0] * 6 + [0.5, 1.0, 2.0, -1.0, 0.3, 1.5]  # the first block of 6 keys far below zero

online_softpick_attention = Exercise(
    name="online_softpick_attention",
    contract="fn(q, k, v, causal=True, block_size=16): softpick attention one key block at a time",
    reference=lambda q, k, v, causal=True, block_size=None: reference_attention(q, k, v, causal=causal),
    seed=2,
    properties=[
        Property(
            "shape",
            "q, k, v of shape [2, 2, 20, 8], block_size=7",
            lambda g: call(*qkv(g, 2, 2, 20, 20, 8), causal=True, block_size=7),
            "return acc / den, shaped like q",
            layout=True,
        ),
        *(
            Property(
                "equals naive attention for every block size",
                f"causal, T = 20, block_size={block}",
                lambda g, block=block: call(*qkv(g, 2, 2, 20, 20, 8, std=1.5), causal=True, block_size=block),
                "rescale both the running denominator and the output by r = exp(c_old - c_new)",
            )
            for block in (1, 7, 16, 64)
        ),
        Property(
            "non-causal and Tq != Tk",
            "causal=False, Tq = 5, Tk = 13, block_size=4",
            lambda g: call(*qkv(g, 1, 2, 5, 13, 8), causal=False, block_size=4),
            "without a causal mask every key counts",
        ),
        Property(
            "non-causal and Tq != Tk",
            "causal=True, Tq = 5, Tk = 13, block_size=4",
            lambda g: call(*qkv(g, 1, 2, 5, 13, 8), causal=True, block_size=4),
            "query i sees keys j <= i + Tk - Tq; blocks past a row's last key must add nothing",
        ),
        Property(
            "first key block far below zero",
            "non-causal, keys 0-5 score -200, later keys up to 2, block_size=6 (float32)",
            scores_case(FAR_BELOW, 4, torch.float32, causal=False, block_size=6),
            "start the running shift c at 0, not at the first block's max: exp(-m) overflows when m << 0",
            tolerance=tolerances.FLOAT32,
        ),
        Property(
            "rows of negative scores give zeros",
            "every score < 0, causal, block_size=4",
            lambda g: call(
                *qkv_with_scores(g, -torch.rand(9, generator=g, dtype=torch.float64) * 3 - 0.01, 9, 8),
                causal=True,
                block_size=4,
            ),
            "an all-negative row has no positive numerator: its output is 0",
            expected=zeros,
        ),
        Property(
            "stable for large scores",
            f"causal, float32, every query scores {LARGE_SCORES}, block_size=4",
            scores_case(LARGE_SCORES, 6, torch.float32, causal=True, block_size=4),
            LARGE_HINT + ", updated block by block: c_new = max(c, rowmax of the block)",
            tolerance=tolerances.FLOAT32,
        ),
        Property(
            "large hidden scores stay hidden",
            f"causal, float32, every query scores {LARGE_HIDDEN_SCORES}, block_size=4: queries 0-3 cannot see "
            "the 400s, which lie in their second block",
            scores_case(LARGE_HIDDEN_SCORES, 6, torch.float32, causal=True, block_size=4),
            "a hidden key must not raise the running max c: " + HIDDEN_HINT,
            tolerance=tolerances.FLOAT32,
        ),
    ],
)
