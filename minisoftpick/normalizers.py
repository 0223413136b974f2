"""Attention normalizers: functions that turn a row of scores into attention weights, and their registry.

A normalizer's reference function has the signature ``fn(scores, mask, **head_parameters) -> weights``
where ``scores`` is float ``[..., Tk]`` and ``mask`` is a bool tensor broadcastable to it (True = the
key takes part) or None. Masked keys get weight exactly 0, never enter a denominator and never touch a
value or a gradient; a row with no unmasked key (or no key at all) gives all zeros, never NaN
(docs/design.md, "Masking").

``NORMALIZERS`` maps names to ``NormalizerSpec`` records: the reference function, the learned scalars it
takes per head (the sink logit; scaled softpick's query scale), and the fused backend that computes it,
if any. ``naive_attention`` and the model pick a normalizer by name there; ``register_normalizer`` adds
one. Softpick (arXiv 2504.20966, eq. 2; docs/design.md, "Definition" and "Stable form"):

    softpick(x)_i = relu(exp(x_i) - 1) / (sum_j |exp(x_j) - 1| + eps)

computed in the stable form: with c = max(m, 0), m the row max over unmasked entries, numerator
and denominator are multiplied by exp(-c) so every term lies in [-1, 1].
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

DEFAULT_EPS = 1e-6  # softpick's eps, everywhere in the package
SCALED_SOFTPICK_INIT = 0.3  # the paper's initial per-head query scale s_h
QUERY_SCALE = "query_scale"  # the name of the per-head parameter a query-scaled normalizer learns
FUSED_BACKENDS = ("flash", "sdpa")  # the Triton softpick kernel, torch's fused softmax attention

Normalizer = Callable[[Tensor, "Tensor | None"], Tensor]
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


@dataclass(frozen=True)
class NormalizerSpec:
    """Everything the package needs to use one normalizer (docs/design.md, "Related normalizers").

    - ``fn(scores, mask, **head_parameters) -> weights``: the reference; each head parameter reaches it
      shaped [H, 1, 1], so it broadcasts against scores [B, H, Tq, Tk];
    - ``head_parameters``: the learned scalars per head, name -> initial value (the sink logit);
    - ``query_scale_init``: not None for a normalizer that first multiplies query i by s_h * log(i + 2),
      s_h a learned per-head scalar called ``query_scale`` starting at this value (scaled softpick);
      being a factor on q, it leaves a fused kernel's job unchanged;
    - ``fused``: the backend whose fused kernel computes it ("flash": the Triton softpick kernel,
      "sdpa": torch's softmax attention) or None (naive attention only).

    Calling a spec without head parameters, ``spec(scores, mask)``, applies it like a plain function.
    """

    name: str
    fn: Callable[..., Tensor]
    head_parameters: Mapping[str, float] = field(default_factory=dict)
    query_scale_init: float | None = None
    fused: str | None = None

    @property
    def learned_per_head(self) -> tuple[str, ...]:
        """Names of every scalar a model layer learns per head for this normalizer."""
        scaled = (QUERY_SCALE,) if self.query_scale_init is not None else ()
        return tuple(self.head_parameters) + scaled

    def require_plain(self) -> None:
        """TypeError when this normalizer learns something per head: it cannot be called on scores alone."""
        if self.learned_per_head:
            raise TypeError(
                f"normalizer {self.name!r} learns {', '.join(self.learned_per_head)} per head: use it in "
                f"minisoftpick.model.Transformer, or call NORMALIZERS[{self.name!r}].fn with them"
            )

    def __call__(self, scores: Tensor, mask: Tensor | None = None) -> Tensor:
        self.require_plain()
        return self.fn(scores, mask)


NORMALIZERS: dict[str, NormalizerSpec] = {}


def register_normalizer(
    name: str,
    *,
    head_parameters: Mapping[str, float] | None = None,
    query_scale_init: float | None = None,
    fused: str | None = None,
) -> Callable[[Callable[..., Tensor]], Callable[..., Tensor]]:
    """Decorator adding ``fn(scores, mask, **head_parameters) -> weights`` to ``NORMALIZERS`` as ``name``.

    The one step that makes a normalizer available everywhere: ``naive_attention(normalizer=name)``
    (when it learns nothing per head), ``ModelConfig(attention=name)`` and the training CLI. The
    keywords are ``NormalizerSpec``'s fields.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty str, got {name!r}")
    parameters = dict(head_parameters or {})
    for parameter, init in parameters.items():
        if not isinstance(parameter, str) or not parameter.isidentifier() or parameter == QUERY_SCALE:
            raise ValueError(
                f"head parameter names must be identifiers other than {QUERY_SCALE!r}, got {parameter!r}"
            )
        _check_real(f"head_parameters[{parameter!r}]", init)
    if query_scale_init is not None:
        _check_real("query_scale_init", query_scale_init)
    if fused is not None and fused not in FUSED_BACKENDS:
        raise ValueError(f"fused must be None or one of {FUSED_BACKENDS}, got {fused!r}")

    def add(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
        if not callable(fn):
            raise TypeError(f"register_normalizer({name!r}) decorates a function, got {type(fn).__name__}")
        if name in NORMALIZERS:
            raise ValueError(f"normalizer {name!r} is already registered")
        NORMALIZERS[name] = NormalizerSpec(name, fn, parameters, query_scale_init, fused)
        return fn

    return add


def get_normalizer(normalizer: str | Normalizer) -> Normalizer:
    """The ``fn(scores, mask)`` called ``normalizer`` (or ``normalizer`` itself when it is callable)."""
    if callable(normalizer):
        return normalizer
    if not isinstance(normalizer, str) or normalizer not in NORMALIZERS:
        raise ValueError(f"normalizer must be one of {sorted(NORMALIZERS)} or a callable, got {normalizer!r}")
    spec = NORMALIZERS[normalizer]
    spec.require_plain()
    return spec


def _check_real(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise TypeError(f"{name} must be a finite real number, got {value!r}")


def check_eps(eps) -> float:
    """``eps`` as a float; TypeError/ValueError unless it is a finite real number >= 0."""
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real):
        raise TypeError(f"eps must be a real number >= 0, got {type(eps).__name__}")
    if not (math.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps must be >= 0 and finite, got {eps}")
    return float(eps)


def check_mask(mask, shape: torch.Size, device: torch.device) -> Tensor | None:
    """``mask`` (None or a bool tensor, True = take part) broadcast to ``shape``; errors name ``mask``."""
    if mask is None:
        return None
    if not isinstance(mask, Tensor):
        raise TypeError(
            f"mask must be None or a bool torch.Tensor (True = take part), got {type(mask).__name__}"
        )
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor (True = take part), got {mask.dtype}")
    if mask.device != device:
        raise ValueError(f"mask must be on the scores' device {device}, got {mask.device}")
    try:
        return mask.expand(shape)
    except RuntimeError:
        raise ValueError(f"mask of shape {tuple(mask.shape)} must broadcast to {tuple(shape)}") from None


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; every other float is computed in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _prepare(x: Tensor, dim: int, mask) -> tuple[Tensor, Tensor | None]:
    """Validate ``x``/``dim``/``mask``; return x in fp32 (or fp64) and the mask broadcast to x."""
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"x must be a floating tensor (float16, bfloat16, float32, float64), got {x.dtype}")
    if x.dim() == 0:
        raise ValueError("x must have at least one dimension, got a scalar")
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise TypeError(f"dim must be an int, got {type(dim).__name__}")
    if not -x.dim() <= dim < x.dim():
        raise ValueError(
            f"dim must be in [{-x.dim()}, {x.dim() - 1}] for x of shape {tuple(x.shape)}, got {dim}"
        )
    mask = check_mask(mask, x.shape, x.device)
    return x.to(compute_dtype(x.dtype)), mask


def _hide(x: Tensor, mask: Tensor | None) -> Tensor:
    """x with masked entries replaced by -inf before any exponential: exp gives exactly 0 there and
    the replaced entries pass no gradient back (docs/design.md, "Masking")."""
    return x if mask is None else x.masked_fill(~mask, float("-inf"))


def divide_or_zero(numerator: Tensor, denominator: Tensor) -> Tensor:
    """numerator / denominator where a zero denominator (its numerator is then 0 too) gives 0 and a
    finite gradient, instead of 0 / 0 = NaN."""
    return numerator / torch.where(denominator > 0, denominator, torch.ones_like(denominator))


def softpick(x: Tensor, dim: int = -1, eps: float = DEFAULT_EPS, mask: Tensor | None = None) -> Tensor:
    """Softpick along ``dim``: relu(exp(x) - 1) / (sum |exp(x) - 1| + eps), stable and masked.

    Rows need not sum to one: the sum lies in [0, 1] and a row of scores <= 0 is all zeros.
    ``mask`` (bool, True = take part) removes entries from numerator and denominator. Half
    precision is computed in fp32 and returned in the input dtype. Differentiable everywhere
    (the shift c = max(m, 0) cancels exactly, so it is treated as a constant). An empty ``dim``
    gives an empty result.
    """
    eps = check_eps(eps)
    xf, mask = _prepare(x, dim, mask)
    if xf.shape[dim] == 0:
        return x.clone()
    xf = _hide(xf, mask)
    # c = max(m, 0); a fully masked row has m = -inf and gets c = 0.
    c = xf.detach().amax(dim, keepdim=True).clamp_min(0.0)
    exp_neg_c = torch.exp(-c)
    shifted = torch.exp(xf - c) - exp_neg_c  # = exp(-c) * (exp(x) - 1), each in [-1, 1]
    if mask is not None:
        shifted = shifted.masked_fill(~mask, 0.0)  # exp(-inf) - 1 = -1 must not reach the sum
    denominator = shifted.abs().sum(dim, keepdim=True) + eps * exp_neg_c
    return divide_or_zero(torch.relu(shifted), denominator).to(x.dtype)  # 0 only when eps = 0


def masked_softmax(x: Tensor, dim: int = -1, mask: Tensor | None = None) -> Tensor:
    """Softmax along ``dim`` over unmasked entries; fully masked rows (and empty ones) give zeros."""
    xf, mask = _prepare(x, dim, mask)
    if mask is None:
        return torch.softmax(xf, dim).to(x.dtype)
    return sink_softmax(x, float("-inf"), dim=dim, mask=mask)


def softmax1(x: Tensor, dim: int = -1, mask: Tensor | None = None) -> Tensor:
    """Off-by-one softmax exp(x_i) / (1 + sum_j exp(x_j)): an implicit zero-logit sink.

    Stable form: with c = max(m, 0), exp(x_i - c) / (exp(-c) + sum_j exp(x_j - c)).
    """
    return sink_softmax(x, 0.0, dim=dim, mask=mask)


def sink_softmax(x: Tensor, sink: Tensor | float, dim: int = -1, mask: Tensor | None = None) -> Tensor:
    """Softmax with an extra sink logit per head: exp(x_i) / (exp(s) + sum_j exp(x_j)).

    ``sink`` is a number or a tensor that broadcasts against ``x`` with ``dim`` reduced (e.g. shape
    [H, 1, 1] for scores [B, H, Tq, Tk]), as in gpt-oss's learnable attention sinks. The weight that
    would have gone to the sink is dropped, so rows sum to less than one. A sink of -inf is plain
    softmax; a row with no unmasked key gives zeros.
    """
    xf, mask = _prepare(x, dim, mask)
    if isinstance(sink, Tensor):
        if not sink.is_floating_point() or sink.device != x.device:
            raise TypeError(
                f"sink must be a floating tensor on {x.device}, got {sink.dtype} on {sink.device}"
            )
        s = sink.to(xf.dtype)
    elif isinstance(sink, numbers.Real) and not isinstance(sink, bool) and not math.isnan(sink):
        s = torch.tensor(float(sink), dtype=xf.dtype, device=x.device)
    else:
        raise TypeError(f"sink must be a real number or a floating tensor, got {sink!r}")
    reduced = list(xf.shape)
    reduced[dim] = 1
    try:
        torch.broadcast_shapes(s.shape, reduced)
    except RuntimeError:
        raise ValueError(f"sink of shape {tuple(s.shape)} must broadcast to {tuple(reduced)}") from None
    xf = _hide(xf, mask)
    c = torch.maximum(xf.amax(dim, keepdim=True) if xf.shape[dim] else s, s).detach()
    c = torch.where(torch.isfinite(c), c, torch.zeros_like(c))  # no key and no sink: c = -inf
    e = torch.exp(xf - c)
    return divide_or_zero(e, e.sum(dim, keepdim=True) + torch.exp(s - c)).to(x.dtype)


def log_position_scale(query_scale: Tensor, tq: int, tk: int | None = None) -> Tensor:
    """s_h * log(i + 2) for query i at position i + tk - tq (bottom-right aligned, as the causal mask),
    [H, tq, 1] for ``query_scale`` [H]: scaled softpick's factor on q, after Scalable-Softmax
    (docs/design.md, "Related normalizers")."""
    tk = tq if tk is None else tk
    positions = torch.arange(tq, device=query_scale.device, dtype=torch.float32) + (tk - tq)
    return query_scale[:, None, None] * torch.log(positions + 2)[:, None]


register_normalizer("softpick", fused="flash")(lambda scores, mask: softpick(scores, mask=mask))
register_normalizer("softmax", fused="sdpa")(lambda scores, mask: masked_softmax(scores, mask=mask))
register_normalizer("softmax1")(lambda scores, mask: softmax1(scores, mask=mask))
register_normalizer("sink", head_parameters={"sink": 0.0})(
    lambda scores, mask, sink: sink_softmax(scores, sink, mask=mask)
)
register_normalizer("scaled_softpick", query_scale_init=SCALED_SOFTPICK_INIT, fused="flash")(
    NORMALIZERS["softpick"].fn
)
