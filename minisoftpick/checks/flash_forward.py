"""Notebook 05's exercises: a flash softpick forward kernel (docs/design.md, "Online recurrence").

``flash_forward`` (the loop body), ``flash_forward_state`` (the whole kernel) and ``flash_forward_blocks``
(the causal key-block range, counted) take the learner's launcher ``fn(q, k, v, causal=True, scale=None) -> out``. A Triton
kernel cannot take a Python callback, so the learner writes the whole small kernel in the notebook and
passes its launcher; an unfinished launcher or kernel raises NotImplementedError. Inputs are float32 on
the GPU when there is one, else on the CPU for the Triton interpreter, and tiny (the interpreter is
slow); the reference is naive attention in float64.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import tolerances
from ..attention import causal_mask
from ..attention import naive_attention as reference_attention
from ..online import online_softpick_attention
from .cases import (
    KERNEL_HEAD_DIM,
    LARGE_HIDDEN_SCORES,
    LARGE_SCORES,
    kernel_tolerance,
    launcher_tensors,
    on_kernel_device,
    qkv,
    qkv_with_scores,
)
from .core import Exercise, Mismatch, Property, call

TOLERANCE = kernel_tolerance()
D = KERNEL_HEAD_DIM
on_device = on_kernel_device


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


def gqa_case(hq: int, hkv: int, tq: int, tk: int, std: float = 1.0, **kwargs):
    def inputs(g: torch.Generator):
        q, k, v = qkv(g, 1, hkv, tq, tk, D, std)
        q = std * torch.randn(1, hq, tq, D, generator=g, dtype=torch.float64)
        return call(*on_device(q, k, v), **kwargs)

    return inputs


def flat_state(out, shift, den) -> torch.Tensor:
    return torch.cat([x.detach().double().cpu().flatten() for x in (out, shift, den)])


def state_of(fn, q, k, v, **kwargs) -> torch.Tensor:
    """fn's (out, shift, den), checked for shapes, as one float64 vector."""
    result = launcher_tensors(fn(q, k, v, **kwargs), "out, shift, den")
    rows = tuple(q.shape[:3])
    if (
        tuple(result[0].shape) != tuple(q.shape)
        or tuple(result[1].shape) != rows
        or tuple(result[2].shape) != rows
    ):
        got = ", ".join(str(tuple(x.shape)) for x in result)
        raise Mismatch(f"shapes {got}, expected {tuple(q.shape)}, {rows}, {rows}")
    return flat_state(*result)


def reference_state(q, k, v, causal=True, scale=None) -> torch.Tensor:
    return flat_state(
        *online_softpick_attention(q, k, v, causal=causal, scale=scale, block_size=16, return_state=True)
    )


flash_forward_state = Exercise(
    name="flash_forward_state",
    contract="fn(q, k, v, causal=True, scale=None) -> (out, shift, den): your whole forward kernel for float32 q "
    "[B, Hq, Tq, D], k and v [B, Hkv, Tk, D] (D = 16, Hq a multiple of Hkv), storing per row c and den for the "
    "backward",
    reference=reference_state,
    observe=state_of,
    seed=12,
    tolerance=TOLERANCE,
    properties=[
        Property(
            "out, c and den, one head",
            "non-causal, H = 1, Tq = Tk = 32, scores about 2 N(0, 1)",
            kernel_case(32, 32, std=2**0.5, causal=False),
            "program (i, bh): rows i * BLOCK_M + arange, pointers Q + bh * Tq * D + rows * D + dims; after the loop "
            "store c and den + 1e-6 * exp(-c) at Shift + bh * Tq + rows and Den + bh * Tq + rows (mask rows < Tq)",
        ),
        Property(
            "every head of the batch",
            "causal, B = 1, H = 3, Tq = Tk = 20",
            kernel_case(20, 20, heads=3),
            "tl.program_id(1) is b * H + h: offset Q, K, V, Out by it times T * D and Shift, Den by it times Tq",
        ),
        Property(
            "grouped-query heads",
            "causal, Hq = 4, Hkv = 2, Tq = Tk = 33",
            gqa_case(4, 2, 33, 33),
            "query head bh reads key/value head bh // group, group = Hq // Hkv: heads 0, 1 share key head 0 "
            "(repeat_interleave order, not tile order)",
        ),
        Property(
            "ragged, Tq != Tk, causal",
            "causal, Hq = 2, Hkv = 1, Tq = 20, Tk = 45",
            gqa_case(2, 1, 20, 45),
            "mask loads with rows < Tq and cols < Tk; row i sees key j <= i + Tk - Tq",
        ),
        Property(
            "rows that see no key store c = 0 and den = eps",
            "causal, Tq = 20, Tk = 9: the first 11 queries see no key",
            kernel_case(20, 9),
            "a row that sees no key keeps c = 0, den = 0, acc = 0: out 0, c 0, den 1e-6",
        ),
        Property(
            "stable for large scores",
            f"causal, every query scores {LARGE_SCORES} on keys 0-5 (float32)",
            scores_case(LARGE_SCORES, 6),
            "c = max(c, rowmax(s)) in every block, exp(s - c_new): every term in [-1, 1]",
        ),
    ],
)


# ---- the key-block range -----------------------------------------------------------------------------

BLOCK = 16  # the didactic kernels' BLOCK_M = BLOCK_N


def out_and_blocks(fn, q, k, v, **kwargs) -> tuple[Tensor, Tensor]:
    """fn's (out, blocks), checked for types and the shape of blocks."""
    result = launcher_tensors(fn(q, k, v, **kwargs), "out, blocks")
    programs = (*q.shape[:2], -(-q.shape[2] // BLOCK), 2)
    if tuple(result[1].shape) != programs:
        raise Mismatch(f"blocks has shape {tuple(result[1].shape)}, expected {programs}")
    return result


def expected_blocks(q, k, v, causal=True, scale=None) -> Tensor:
    """Per (batch, head, program): the key blocks that every real row of the program sees whole (computed without
    the mask), and the other blocks some row sees (computed with it); blocks no row sees are skipped."""
    tq, tk = q.shape[2], k.shape[2]
    visible = causal_mask(tq, tk) if causal else torch.ones(tq, tk, dtype=torch.bool)
    counts = []
    for first_row in range(0, tq, BLOCK):
        tiles = [visible[first_row : first_row + BLOCK, j : j + BLOCK] for j in range(0, tk, BLOCK)]
        whole = sum(bool(tile.all()) for tile in tiles)
        counts.append((whole, sum(bool(tile.any()) for tile in tiles) - whole))
    return torch.tensor(counts, dtype=torch.float64).expand(*q.shape[:2], -1, 2)


OUT = {"observe": lambda fn, *args, **kwargs: out_and_blocks(fn, *args, **kwargs)[0]}
BLOCKS = {
    "observe": lambda fn, *args, **kwargs: out_and_blocks(fn, *args, **kwargs)[1].double(),
    "expected": expected_blocks,
    "tolerance": tolerances.EXACT,
}
RANGE_HINT = (
    "row i sees key j <= i + offset, offset = Tk - Tq: the program's last row sees keys below first_row + "
    "BLOCK_M + offset, so end = min(max(first_row + BLOCK_M + offset, 0), Tk); its first row sees every key below "
    "first_row + offset + 1, so whole blocks run up to unmasked_end = min(max(first_row + offset + 1, 0), Tk) "
    "// BLOCK_N * BLOCK_N (rounded down: a block past it holds a key some row may not see)"
)

flash_forward_blocks = Exercise(
    name="flash_forward_blocks",
    contract="fn(q, k, v, causal=True, scale=None) -> (out, blocks): your forward kernel computing only the key "
    "blocks its rows see, [0, unmasked_end) without the causal mask and [unmasked_end, end) with it, for float32 q "
    "[B, Hq, Tq, D], k and v [B, Hkv, Tk, D] (D = 16); blocks [B, Hq, programs, 2] counts the two kinds per program",
    reference=reference_attention,
    observe=out_and_blocks,
    seed=13,
    tolerance=TOLERANCE,
    properties=[
        Property(
            "shape and dtype",
            "q, k, v = randn(1, 1, 16, 16)",
            kernel_case(16, 16),
            "return (out, blocks), out a new float32 tensor shaped like q, on q's device",
            layout=True,
            **OUT,
        ),
        Property(
            "out: causal, ragged T",
            "causal, H = 2, Tq = Tk = 37",
            kernel_case(37, 37, heads=2, std=2**0.5),
            RANGE_HINT,
            **OUT,
        ),
        Property(
            "out: Tq < Tk, bottom-right aligned",
            "causal, Hq = 2, Hkv = 1, Tq = 20, Tk = 45",
            gqa_case(2, 1, 20, 45),
            RANGE_HINT,
            **OUT,
        ),
        Property(
            "out: Tq > Tk, rows that see no key",
            "causal, Tq = 50, Tk = 9: the first 41 queries see no key",
            kernel_case(50, 9),
            "with Tq > Tk, first_row + offset + 1 can be negative: clamp both ends at 0 (tl.maximum) so that a "
            "program whose rows see no key visits no block and outputs 0",
            **OUT,
        ),
        Property(
            "blocks: non-causal visits every block unmasked",
            "non-causal, Tq = 20, Tk = 40: 3 key blocks per program",
            kernel_case(20, 40, causal=False),
            "without CAUSAL every block is whole: unmasked_end = end = Tk; count each loop's iterations "
            "(unmasked += 1 in the first loop, masked += 1 in the second)",
            **BLOCKS,
        ),
        Property(
            "blocks: Tq = Tk skips the blocks above the diagonal",
            "causal, Tq = Tk = 64: program i computes i blocks whole and 1 masked",
            kernel_case(64, 64),
            "a block that no row of the program sees adds nothing: stop at end, and run the blocks every row "
            "sees whole without the mask. " + RANGE_HINT,
            **BLOCKS,
        ),
        Property(
            "blocks: Tq < Tk, bottom-right aligned",
            "causal, Tq = 40, Tk = 96",
            kernel_case(40, 96),
            RANGE_HINT,
            **BLOCKS,
        ),
        Property(
            "blocks: Tq > Tk, programs that see no key visit none",
            "causal, Tq = 48, Tk = 16: programs 0 and 1 see no key",
            kernel_case(48, 16),
            "clamp both ends at 0: range(0, negative) runs no iteration",
            **BLOCKS,
        ),
    ],
)
