"""Inputs that several exercises share: random tensors, and attention inputs with chosen scores."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import tolerances
from .core import Call, Mismatch, call

KERNEL_HEAD_DIM = 16  # the head dim of every kernel exercise's cases: the smallest tl.dot takes on a GPU


def kernel_tolerance():
    """The tolerances of the kernel exercises' checks, for the interpreter or a GPU, whichever runs them."""
    from ..kernels import interpreting  # deferred: the non-kernel exercises never load the kernels package

    return tolerances.kernel(interpreting())


def launcher_tensors(result, names: str) -> tuple[Tensor, ...]:
    """A kernel launcher's result, checked to be a tuple of one tensor per name in ``names``
    (e.g. "out, shift, den"); Mismatch saying what came back otherwise."""
    count = len(names.split(","))
    if (
        not isinstance(result, tuple | list)
        or len(result) != count
        or not all(isinstance(x, Tensor) for x in result)
    ):
        raise Mismatch(f"your launcher returned {type(result).__name__}, expected a tuple ({names})")
    return tuple(result)


def on_kernel_device(*tensors: Tensor) -> tuple[Tensor, ...]:
    """The tensors in float32 where the kernels run (the CPU under the interpreter, else the GPU)."""
    from ..kernels import kernel_device

    return tuple(x.float().to(kernel_device()) for x in tensors)


def randn(g: torch.Generator, *shape: int, std: float = 1.0, dtype=torch.float64) -> Tensor:
    return std * torch.randn(*shape, generator=g, dtype=dtype)


def qkv(g: torch.Generator, b: int, h: int, tq: int, tk: int, d: int, std: float = 1.0):
    """float64 q [b, h, tq, d], k and v [b, h, tk, d]; q and k times std, so scores are about std^2 N(0, 1)."""
    return randn(g, b, h, tq, d, std=std), randn(g, b, h, tk, d, std=std), randn(g, b, h, tk, d)


def qkv_with_scores(g: torch.Generator, scores: Tensor, tq: int, d: int, dtype=torch.float64):
    """q, k, v [1, 1, T, d] where every query's scaled score for key j is exactly scores[j]."""
    q = torch.zeros(1, 1, tq, d, dtype=torch.float64)
    q[..., 0] = 1.0
    k = torch.zeros(1, 1, len(scores), d, dtype=torch.float64)
    k[..., 0] = scores * d**0.5
    v = torch.randn(1, 1, len(scores), d, generator=g, dtype=torch.float64)
    return q.to(dtype), k.to(dtype), v.to(dtype)


def scores_case(scores: list[float], tq: int, dtype=torch.float64, d: int = 8, **kwargs):
    """Inputs whose every query scores ``scores[j]`` on key j, in ``dtype``, with the keyword arguments given."""
    return lambda g: call(
        *qkv_with_scores(g, torch.tensor(scores, dtype=torch.float64), tq, d, dtype), **kwargs
    )


# Scores that overflow exp in float32 (above 88.7) where the queries see them, or where they are hidden:
# an unshifted softpick gives inf / inf, masking by multiplication gives inf * 0, and a shift that counts
# hidden keys makes every visible term underflow (0 / 0). Every query has the same score for key j.
LARGE_SCORES = [300.0, 250.0, -5.0, 100.0, 20.0, 299.5]
LARGE_HIDDEN_SCORES = [1.0, -0.5, 2.0, 0.3, 400.0, 400.0]  # keys 4 and 5 are hidden from queries 0-3
LARGE_HINT = (
    "exp overflows float32 above 88.7: shift each row by c = max(m, 0), m the max over the keys it sees"
)
HIDDEN_HINT = (
    "take the row max over visible keys only (masked_fill(~keep, -inf) before amax) and remove hidden "
    "entries with masked_fill or torch.where, never by multiplying: exp(400) * 0 is inf * 0 = NaN"
)


def only_key_zero_visible(g: torch.Generator) -> Call:
    """Causal T = 5 where query 0 scores 2 on key 0 and exactly 0 on key 1.

    An off-by-one mask that lets query 0 see key 1 changes nothing there, but each hidden key counted in
    the denominator adds 1."""
    q, k, v = qkv(g, 1, 1, 5, 5, 4)
    q0 = q[0, 0, 0]
    k[0, 0, 0] = q0 * 2 * 2 / q0.norm() ** 2  # q0.k0 / sqrt(4) = 2
    k[0, 0, 1] -= (k[0, 0, 1] @ q0) / q0.norm() ** 2 * q0
    return call(q, k, v, causal=True)
