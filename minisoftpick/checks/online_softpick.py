"""Notebook 03's exercise: the online (flash) algorithm in PyTorch (docs/design.md, "Online recurrence")."""

from __future__ import annotations

import torch

from .. import tolerances
from ..attention import naive_attention as reference_attention
from ..normalizers import softpick as reference_softpick
from .cases import (
    HIDDEN_HINT,
    LARGE_HIDDEN_SCORES,
    LARGE_HINT,
    LARGE_SCORES,
    qkv,
    qkv_with_scores,
    randn,
    scores_case,
)
from .core import Exercise, Mismatch, Property, call, zeros

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


def partial_state(s: torch.Tensor, v: torch.Tensor, c: torch.Tensor):
    """(c, den, acc) of scores s [M, N] and values v [N, D] with shift c [M, 1]: den without eps."""
    p = torch.exp(s - c) - torch.exp(-c)
    return c, p.abs().sum(-1, keepdim=True), torch.relu(p) @ v


def two_halves(level1: float, level2: float, dtype=torch.float64):
    """Two partial states of the same 4 rows over 5 keys each, scores about N(level, 1), each with its
    own shift max(rowmax, 0); the keyword arguments s and v carry all 10 keys for the end-to-end check."""

    def inputs(g: torch.Generator):
        s = torch.cat([level1 + randn(g, 4, 5), level2 + randn(g, 4, 5)], 1)
        v = randn(g, 10, 8)
        states = [
            partial_state(s[:, half], v[half], s[:, half].amax(-1, keepdim=True).clamp(min=0))
            for half in (slice(0, 5), slice(5, 10))
        ]
        return call(*(x.to(dtype) for state in states for x in state), s=s, v=v)

    return inputs


def neutral_second(g: torch.Generator):
    c1, den1, acc1 = partial_state(randn(g, 3, 6, std=2.0), randn(g, 6, 8), torch.full((3, 1), 1.5))
    return call(c1, den1, acc1, torch.zeros(3, 1), torch.zeros(3, 1), torch.zeros(3, 8))


def stacked(out, c, den, acc) -> torch.Tensor:
    """A returned state (c, den, acc), checked against the shapes of the given one, as one [M, 2 + D] tensor."""
    if (
        not isinstance(out, tuple | list)
        or len(out) != 3
        or not all(isinstance(x, torch.Tensor) for x in out)
    ):
        raise Mismatch(
            f"your function returned {type(out).__name__}, expected a tuple (c, den, acc) of tensors"
        )
    if tuple(x.shape for x in out) != (c.shape, den.shape, acc.shape):
        got = ", ".join(str(tuple(x.shape)) for x in out)
        raise Mismatch(
            f"shapes {got}, expected those of c, den, acc: {tuple(c.shape)}, {tuple(den.shape)}, {tuple(acc.shape)}"
        )
    return torch.cat(list(out), -1)


def merged(fn, c1, den1, acc1, c2, den2, acc2, **_):
    return stacked(fn(c1, den1, acc1, c2, den2, acc2), c1, den1, acc1)


def reference_merge(c1, den1, acc1, c2, den2, acc2, **_):
    c = torch.maximum(c1, c2)
    r1, r2 = torch.exp(c1 - c), torch.exp(c2 - c)
    return torch.cat([c, den1 * r1 + den2 * r2, acc1 * r1 + acc2 * r2], -1)


def finished(fn, *args, s, v):
    """The output acc / (den + eps e^-c) of fn's merged state."""
    state = merged(fn, *args)
    c, den, acc = state[:, :1], state[:, 1:2], state[:, 2:]
    return acc / (den + 1e-6 * torch.exp(-c))


merge_partials = Exercise(
    name="merge_partials",
    contract="fn(c1, den1, acc1, c2, den2, acc2) -> (c, den, acc): one online state of the same rows from two over "
    "disjoint keys, each with its own shift; c = max(c1, c2)",
    reference=reference_merge,
    observe=merged,
    seed=11,
    properties=[
        Property(
            "rescales den and acc to the common shift",
            "4 rows, two halves of 5 keys, scores about N(1, 1) and N(3, 1)",
            two_halves(1.0, 3.0),
            "c = max(c1, c2); multiply den1 and acc1 by r1 = exp(c1 - c), den2 and acc2 by r2 = exp(c2 - c), then add",
        ),
        Property(
            "the merged state finishes to attention over all keys",
            "as above, out = acc / (den + 1e-6 exp(-c)) against softpick attention over the 10 keys",
            two_halves(1.0, 3.0),
            "the rescale identity: den and acc carry the same factor exp(-c), so change both by the same r",
            observe=finished,
            expected=lambda *args, s, v: reference_softpick(s) @ v,
        ),
        Property(
            "a state that saw no key changes nothing",
            "second state c2 = 0, den2 = 0, acc2 = 0",
            neutral_second,
            "a state of no keys has den = acc = 0 and c = 0; merged with it, the first comes back unchanged",
        ),
        Property(
            "stable when the shifts are far apart",
            "float32, first half's scores about N(-50, 1) (c1 = 0), second half's about N(300, 1)",
            two_halves(-50.0, 300.0, dtype=torch.float32),
            "rescale toward the larger shift, r = exp(c_i - c) <= 1: exp(c - c_i) overflows float32",
            tolerance=tolerances.FLOAT32,
        ),
    ],
)


def reference_update(c, den, acc, s, v, keep):
    c_new = torch.maximum(c, s.masked_fill(~keep, float("-inf")).amax(-1, keepdim=True))
    r = torch.exp(c - c_new)
    p = (torch.exp(s - c_new) - torch.exp(-c_new)).masked_fill(~keep, 0.0)
    return torch.cat([c_new, den * r + p.abs().sum(-1, keepdim=True), acc * r + torch.relu(p) @ v], -1)


def updated(fn, c, den, acc, s, v, keep):
    return stacked(fn(c, den, acc, s, v, keep), c, den, acc)


def block_case(state, make_s, keep=None, dtype=torch.float64):
    """Inputs (c, den, acc, s, v, keep): a previous state of 3 rows (None: the zero state) and one block of 5 keys."""

    def inputs(g: torch.Generator):
        s = make_s(g)
        v = randn(g, s.shape[1], 4)
        if state is None:
            c, den, acc = torch.zeros(3, 1), torch.zeros(3, 1), torch.zeros(3, 4)
        else:
            c, den, acc = partial_state(
                randn(g, 3, 6) + state, randn(g, 6, 4), torch.full((3, 1), max(state, 0.0))
            )
        visible = torch.ones(s.shape, dtype=torch.bool) if keep is None else torch.tensor(keep)
        return call(*(x.to(dtype) for x in (c, den, acc, s, v)), visible)

    return inputs


def chained(fn, c, den, acc, s, v, keep):
    """Three blocks of 4 keys through fn from the given state, finished: acc / (den + 1e-6 exp(-c))."""
    for cols in (slice(0, 4), slice(4, 8), slice(8, 12)):
        state = updated(fn, c, den, acc, s[:, cols], v[cols], keep[:, cols])
        c, den, acc = state[:, :1], state[:, 1:2], state[:, 2:]
    return acc / (den + 1e-6 * torch.exp(-c))


HIDDEN_BLOCK = [[2.0, 400.0, -1.0, 0.5, 400.0]] * 3
HIDDEN_KEEP = [[True, False, True, True, False]] * 3

block_update = Exercise(
    name="block_update",
    contract="fn(c, den, acc, s, v, keep) -> (c, den, acc): the online state after one more key block, scores "
    "s [M, N], values v [N, D], visibility keep [M, N]; c, den [M, 1] and acc [M, D]",
    reference=reference_update,
    observe=updated,
    seed=14,
    properties=[
        Property(
            "the first block, from the zero state",
            "c = den = acc = 0, s = 2 randn(3, 5), every key visible",
            block_case(None, lambda g: randn(g, 3, 5, std=2.0)),
            "c_new = max(c, rowmax(s)), p = exp(s - c_new) - exp(-c_new), den + sum |p|, acc + relu(p) @ v",
        ),
        Property(
            "rescales the previous state",
            "a state at c = 1 from 6 earlier keys, then s = 3 + randn(3, 5)",
            block_case(1.0, lambda g: 3 + randn(g, 3, 5)),
            "multiply BOTH den and acc by r = exp(c - c_new) before adding the block",
        ),
        Property(
            "a block below the shift leaves c alone",
            "a state at c = 2, then s = -(3 rand(3, 5)) (every score < 0)",
            block_case(2.0, lambda g: -3 * torch.rand(3, 5, generator=g, dtype=torch.float64)),
            "c_new = max(c, rowmax of the block): the running shift never decreases (r <= 1)",
        ),
        Property(
            "hidden keys change nothing",
            f"float32, zero state, every row scores {HIDDEN_BLOCK[0]} with the 400s hidden",
            block_case(
                None, lambda g: torch.tensor(HIDDEN_BLOCK, dtype=torch.float64), HIDDEN_KEEP, torch.float32
            ),
            "a hidden key must not raise c: " + HIDDEN_HINT,
            tolerance=tolerances.FLOAT32,
        ),
        Property(
            "three blocks make attention",
            "zero state, s = 2 randn(3, 12) in blocks of 4, causal-like visibility, finished as acc / (den + 1e-6 e^-c)",
            block_case(
                None,
                lambda g: randn(g, 3, 12, std=2.0),
                [[True] * (10 + i) + [False] * (2 - i) for i in range(3)],
            ),
            "chained blocks must equal one softpick over all visible keys",
            observe=chained,
            expected=lambda c, den, acc, s, v, keep: reference_softpick(s, mask=keep) @ v,
        ),
    ],
)
