"""Simulated quantization of weights and activations, to test the paper's practical claim.

Softpick models lack massive activations, so they should survive quantization better, most at low
bit widths (arXiv 2504.20966). Everything here is *fake* (simulated) quantization: a tensor is
mapped to its few quantized levels and straight back to floats in its own dtype, so the model runs
unchanged and only the rounding error is measured.

Weights: round-to-nearest (RTN), asymmetric min-max, per group of ``group_size`` consecutive
elements along the last dim (the input features of an ``nn.Linear`` weight [out, in]), the
uniform affine quantizer of Nagel et al. 2021 ("A White Paper on Neural Network Quantization"):

    step s = (max - min) / (2**bits - 1),     zero point z = round(-min / s)   (an integer)
    q = clamp(round(w / s) + z, 0, 2**bits - 1),     w_hat = s * (q - z)

HQQ (Badri & Shaji 2023, "Half-Quadratic Quantization of Large Machine Learning Models") keeps
the min-max step but optimises a real-valued zero point per group against a sparsity-promoting
lp error (p < 1), which ignores the few outliers that dominate a min-max range.

Activations: dynamic symmetric fake-quant of the *input* of every ``nn.Linear`` (W8A8, W4A8), per
token or per tensor, with the scale taken from the current batch:

    s = max|x| / (2**(bits-1) - 1),     x_hat = s * clamp(round(x / s), -(2**(bits-1) - 1), 2**(bits-1) - 1)

A massive activation (one huge feature) inflates s for its whole token (or tensor), and every
other feature of that token is rounded to zero: that is why softmax models suffer here.

Uncertainty: ``window_losses`` scores a model on every non-overlapping window of a split, and
``bootstrap_se`` gives the standard error of a mean over windows (resampling windows with
replacement). Applied to per-window *differences* (quantized minus baseline, or one model's increase
minus another's on the same windows) it is a paired bootstrap, which cancels what the windows share.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .model import evaluating, lm_loss
from .normalizers import compute_dtype
from .settings import progress_disabled

GRANULARITIES = ("per_token", "per_tensor")
BOOTSTRAP_SAMPLES = 2000


def _check_bits(bits: object, name: str = "bits") -> None:
    if not isinstance(bits, int) or isinstance(bits, bool) or not 2 <= bits <= 8:
        raise ValueError(f"{name} must be an int in 2..8, got {bits!r}")


def _check_group_size(group_size: object) -> None:
    if not isinstance(group_size, int) or isinstance(group_size, bool) or group_size < 1:
        raise ValueError(f"group_size must be a positive int, got {group_size!r}")


def _check_float(x: object, name: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor, got {x.dtype}")
    if x.dim() == 0:
        raise ValueError(f"{name} must have at least one dimension, got a scalar")


def _grouped(w: Tensor, bits: int, group_size: int) -> Tensor:
    """Validate; return w as [..., n_groups, group_size] in the compute dtype."""
    _check_float(w, "w")
    _check_bits(bits)
    _check_group_size(group_size)
    if w.shape[-1] % group_size != 0:
        raise ValueError(f"w's last dim ({w.shape[-1]}) must be divisible by group_size ({group_size})")
    return w.to(compute_dtype(w.dtype)).reshape(*w.shape[:-1], -1, group_size)


def _min_max_step(groups: Tensor, levels: int) -> tuple[Tensor, Tensor]:
    """Per group: the minimum and the step (max - min) / levels.

    A constant group has step 0; it gets step |min| instead (1 when min = 0), with which the
    group's one value is a level exactly and nothing divides by zero.
    """
    lo = groups.amin(-1, keepdim=True)
    step = (groups.amax(-1, keepdim=True) - lo) / levels
    fallback = torch.where(lo != 0, lo.abs(), torch.ones_like(lo))
    return lo, torch.where(step > 0, step, fallback)


def _dequantize(groups: Tensor, step: Tensor, zero: Tensor, levels: int) -> Tensor:
    """s * (clamp(round(w / s + z), 0, levels) - z) for a real-valued zero point z (HQQ's)."""
    q = torch.clamp(torch.round(groups / step + zero), 0, levels)
    return step * (q - zero)


def quantize_rtn(w: Tensor, bits: int, group_size: int = 64) -> Tensor:
    """Round-to-nearest asymmetric min-max quantization per group along the last dim, dequantized.

    Returns w_hat = s * (clamp(round(w / s) + z, 0, 2**bits - 1) - z) in w's shape and dtype, with
    s = (max - min) / (2**bits - 1) and the integer zero point z = round(-min / s) of each group
    of ``group_size`` consecutive elements (see the module docstring). Computed in float32 (float64
    stays float64). A constant group comes back exactly.
    """
    groups = _grouped(w, bits, group_size)
    levels = 2**bits - 1
    lo, step = _min_max_step(groups, levels)
    zero = torch.round(-lo / step)
    q = torch.clamp(torch.round(groups / step) + zero, 0, levels)
    return (step * (q - zero)).reshape(w.shape).to(w.dtype)


def _shrink_lp(x: Tensor, beta: float, p: float) -> Tensor:
    """Generalised soft-thresholding, the proximal step of |x|^p: sign(x) relu(|x| - |x|^(p-1) / beta)."""
    magnitude = x.abs()
    return torch.sign(x) * torch.relu(magnitude - magnitude.pow(p - 1) / beta)


def hqq_zero_step(
    groups: Tensor, step: Tensor, zero: Tensor, bits: int, beta: float, p: float = 0.7
) -> Tensor:
    """One half-quadratic step of HQQ: the new real-valued zero point of each group.

    ``groups`` [..., n_groups, group_size], ``step`` and ``zero`` [..., n_groups, 1]:

        q   = clamp(round(w / s + z), 0, 2**bits - 1)     the levels the current zero point picks
        W_e = shrink_lp(w - s (q - z), beta)             the part of the error the lp norm keeps
        z   <- mean over the group of  q - (w - W_e) / s

    with shrink_lp(x, beta) = sign(x) relu(|x| - |x|^(p-1) / beta) (see ``quantize_hqq``).
    """
    levels = 2**bits - 1
    q = torch.clamp(torch.round(groups / step + zero), 0, levels)
    w_e = _shrink_lp(groups - step * (q - zero), beta, p)
    return (q - (groups - w_e) / step).mean(-1, keepdim=True)


def quantize_hqq(
    w: Tensor,
    bits: int,
    group_size: int = 64,
    *,
    iters: int = 20,
    p: float = 0.7,
    beta: float = 10.0,
    kappa: float = 1.01,
) -> Tensor:
    """Half-quadratic quantization (HQQ) per group along the last dim, dequantized.

    The step s stays the min-max one; the real-valued zero point z of each group minimises
    ||w - s (Q_z(w) - z)||_p^p, p < 1. Splitting the error into an auxiliary W_e gives the
    half-quadratic problem  |W_e|_p^p + beta/2 ||W_e - (w - s (Q_z(w) - z))||^2,  solved by
    alternating (Badri & Shaji 2023):

        W_e <- shrink_lp(w - s (q - z), beta)          q = clamp(round(w / s + z), 0, 2**bits - 1)
        z   <- mean over the group of  q - (w - W_e) / s
        beta <- kappa * beta

    starting from min-max RTN with the unrounded zero point -min / s. Each group keeps the zero
    point with the lowest mean |w - w_hat| seen, so no group ends worse than where it started.
    Defaults are the method's (p = 0.7, beta = 10, kappa = 1.01, 20 iterations). Returns w_hat in
    w's shape and dtype; every group still takes at most 2**bits values.
    """
    groups = _grouped(w, bits, group_size)
    if not isinstance(iters, int) or iters < 0:
        raise ValueError(f"iters must be an int >= 0, got {iters!r}")
    if not 0 < p <= 1:
        raise ValueError(f"p must be in (0, 1], got {p}")
    if beta <= 0 or kappa < 1:
        raise ValueError(f"beta must be > 0 and kappa >= 1, got beta={beta}, kappa={kappa}")
    levels = 2**bits - 1
    lo, step = _min_max_step(groups, levels)
    zero = -lo / step
    best_zero = zero
    best_error = (groups - _dequantize(groups, step, zero, levels)).abs().mean(-1, keepdim=True)
    for _ in range(iters):
        zero = hqq_zero_step(groups, step, zero, bits, beta, p)
        beta *= kappa
        error = (groups - _dequantize(groups, step, zero, levels)).abs().mean(-1, keepdim=True)
        better = error < best_error
        best_zero = torch.where(better, zero, best_zero)
        best_error = torch.where(better, error, best_error)
    return _dequantize(groups, step, best_zero, levels).reshape(w.shape).to(w.dtype)


QUANTIZERS: dict[str, Callable[[Tensor, int, int], Tensor]] = {"rtn": quantize_rtn, "hqq": quantize_hqq}


def quantize_activations(x: Tensor, bits: int = 8, granularity: str = "per_token") -> Tensor:
    """Dynamic symmetric fake-quant of x with 2**bits - 1 levels, scale from max|x|.

    ``granularity`` "per_token": one scale per row of the last dim (per token for x [B, T, d]);
    "per_tensor": one scale for all of x. A row (or tensor) of zeros stays zero. Returns x's
    shape and dtype, computed in float32 (float64 stays float64).
    """
    _check_float(x, "x")
    _check_bits(bits)
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    xf = x.to(compute_dtype(x.dtype))
    qmax = 2 ** (bits - 1) - 1
    amax = xf.abs().amax(-1, keepdim=True) if granularity == "per_token" else xf.abs().amax()
    step = torch.where(amax > 0, amax / qmax, torch.ones_like(amax))
    return (step * torch.clamp(torch.round(xf / step), -qmax, qmax)).to(x.dtype)


class ActivationQuantizer:
    """A forward pre-hook fake-quantizing the first input of the module it is registered on."""

    def __init__(self, bits: int, granularity: str):
        _check_bits(bits, "act_bits")
        if granularity not in GRANULARITIES:
            raise ValueError(f"act_granularity must be one of {GRANULARITIES}, got {granularity!r}")
        self.bits = bits
        self.granularity = granularity

    def __call__(self, module: nn.Module, args: tuple) -> tuple:
        return (quantize_activations(args[0], self.bits, self.granularity), *args[1:])

    def __repr__(self) -> str:
        return f"ActivationQuantizer(bits={self.bits}, granularity={self.granularity!r})"


def quantized_linears(model: nn.Module, skip: tuple[str, ...] = ("lm_head",)) -> list[tuple[str, nn.Linear]]:
    """(name, module) of every nn.Linear in model none of whose dotted name parts is in ``skip``."""
    return [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and not set(name.split(".")) & set(skip)
    ]


def quantize_model(
    model: nn.Module,
    *,
    weight_bits: int | None = None,
    group_size: int = 64,
    method: str = "rtn",
    act_bits: int | None = None,
    act_granularity: str = "per_token",
    skip: tuple[str, ...] = ("lm_head",),
    inplace: bool = False,
) -> nn.Module:
    """A copy of ``model`` with simulated quantization of its linear layers (``inplace``: model itself).

    Quantized: every ``nn.Linear`` whose dotted name has no part in ``skip``; in the course's
    Transformer that is every attention projection (wq, wk, wv, wo) and SwiGLU matrix (w1, w2, w3)
    of every block. Its weight is replaced by ``QUANTIZERS[method](weight, weight_bits,
    group_size)`` (when ``weight_bits`` is set) and its input is fake-quantized on every call by an
    ``ActivationQuantizer`` forward pre-hook (when ``act_bits`` is set).

    Kept in full precision, as GPTQ, AWQ and HQQ do by default: the embedding (a table lookup, not a
    matmul, whose rows feed the residual stream directly) and the lm head (``skip``): the output
    layer is the most sensitive one and is not what the paper's claim is about, the blocks'
    activations are. Norm gains and the parameters of sinks or scaled softpick stay as they are.
    """
    if weight_bits is not None:
        _check_bits(weight_bits, "weight_bits")
        _check_group_size(group_size)
    if method not in QUANTIZERS:
        raise ValueError(f"method must be one of {sorted(QUANTIZERS)}, got {method!r}")
    hook = None if act_bits is None else ActivationQuantizer(act_bits, act_granularity)
    if isinstance(skip, str) or not all(isinstance(s, str) for s in skip):
        raise TypeError(f"skip must be a tuple of layer names, got {skip!r}")
    target = model if inplace else copy.deepcopy(model)
    linears = quantized_linears(target, skip)
    if not linears:
        raise ValueError(f"model has no nn.Linear outside skip={skip!r}: nothing to quantize")
    for name, linear in linears:
        if weight_bits is not None:
            if linear.in_features % group_size != 0:
                raise ValueError(
                    f"layer {name!r} has in_features={linear.in_features}, not divisible by group_size={group_size}"
                )
            with torch.no_grad():
                linear.weight.copy_(QUANTIZERS[method](linear.weight, weight_bits, group_size))
        if hook is not None:
            linear.register_forward_pre_hook(hook)
    return target


SETTINGS: dict[str, dict] = {
    "baseline": {},
    **{
        f"W{bits}A16 {method.upper()}": {"weight_bits": bits, "method": method}
        for bits in (8, 4, 3, 2)
        for method in ("rtn", "hqq")
    },
    **{
        f"W16A{bits} {granularity.replace('_', '-')}": {"act_bits": bits, "act_granularity": granularity}
        for bits in (8, 4)
        for granularity in GRANULARITIES
    },
    **{
        f"W{bits}A8 HQQ {granularity.replace('_', '-')}": {
            "weight_bits": bits,
            "method": "hqq",
            "act_bits": 8,
            "act_granularity": granularity,
        }
        for bits in (8, 4)
        for granularity in GRANULARITIES
    },
}
"""Named ``quantize_model`` settings for a quantization table: the model as given ("baseline", in
its own dtype), weight-only W8/W4/W3/W2 with RTN and HQQ, activation-only W16A8 / W16A4 (int8 or
int4 inputs to every quantized linear, weights as they are: where massive activations hurt most),
and W8A8 / W4A8 (HQQ weights, int8 inputs), per tensor and per token."""


def evaluate_settings(
    model: nn.Module,
    val_loss: Callable[[nn.Module], float],
    settings: dict[str, dict] | None = None,
    *,
    group_size: int = 64,
    skip: tuple[str, ...] = ("lm_head",),
) -> list[dict]:
    """Rows {"setting", "loss", "ppl"}: ``val_loss`` of a quantized copy of model per setting.

    ``settings`` maps a row name to ``quantize_model`` keyword arguments (default ``SETTINGS``);
    ``group_size`` and ``skip`` apply to every row. ``model`` itself is never changed. ppl is
    exp(loss), the perplexity when ``val_loss`` returns the mean cross-entropy in nats. When
    ``val_loss`` returns a 1-D tensor of per-window losses (``window_losses``), loss is their mean and
    the row also holds them as "window_losses" (a float tensor), for ``bootstrap_se``.
    """
    rows = []
    for name, kwargs in tqdm(
        (SETTINGS if settings is None else settings).items(),
        desc="quantization settings",
        disable=progress_disabled(),
    ):
        losses = val_loss(quantize_model(model, group_size=group_size, skip=skip, **kwargs))
        per_window = isinstance(losses, Tensor) and losses.dim() == 1
        loss = losses.double().mean().item() if per_window else float(losses)
        rows.append({"setting": name, "loss": loss, "ppl": math.exp(loss)})
        if per_window:
            rows[-1]["window_losses"] = losses.float().cpu()
    return rows


@torch.no_grad()
def window_losses(model: nn.Module, tokens, *, seq_len: int | None = None, batch_size: int = 64) -> Tensor:
    """Per-window mean cross-entropy [N] of ``model`` over every non-overlapping window of ``tokens``.

    ``tokens`` is a 1-D array of token ids (``data.load_tokens("val")``); N is as many windows of
    ``seq_len`` (default the model's) as fit, spread evenly over it, each starting with the model's
    BOS when it was trained with one (``model.config.bos_id``). Computed in float32 without autocast,
    so a quantization setting is the only thing that changes the numbers. Every window scores the
    same number of tokens, so the mean of the result is the loss per token.
    """
    from .data import evenly_spaced_batches  # quant is usable on any nn.Module without the data layer

    config = model.config
    seq_len = seq_len or config.seq_len
    windows = len(tokens) // (seq_len + (config.bos_id is None))
    if windows < 1:
        raise ValueError(
            f"tokens must hold at least one window of seq_len={seq_len}, got {len(tokens)} tokens"
        )
    x_all, y_all = next(evenly_spaced_batches(tokens, windows, seq_len, 1, config.bos_id))
    losses = []
    with evaluating(model) as device:
        for x, y in zip(x_all.split(batch_size), y_all.split(batch_size), strict=True):
            loss = lm_loss(model(x.to(device)), y.to(device), reduction="none").view(len(x), seq_len)
            losses.append(loss.mean(dim=1).float().cpu())
    return torch.cat(losses)


def bootstrap_se(values: Tensor, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> float:
    """Standard error of ``values.mean()`` by the bootstrap: the std of the means of ``samples``
    resamples (with replacement) of the entries of the 1-D tensor ``values``."""
    if not isinstance(values, Tensor) or values.dim() != 1 or values.numel() < 2:
        raise ValueError("values must be a 1-D tensor with at least 2 entries (one per window)")
    generator = torch.Generator().manual_seed(seed)
    picks = torch.randint(values.numel(), (samples, values.numel()), generator=generator)
    return values.double()[picks].mean(dim=1).std().item()


VERDICT_Z = 2.0  # a difference counts when it exceeds this many standard errors (about 95%)


def verdict(advantage: float, se: float, z: float = VERDICT_Z) -> str:
    """ "softpick better", "softmax better" or "within noise": softpick's advantage (softmax's loss
    increase minus softpick's) against ``z`` times its standard error ``se``."""
    if not se >= 0:
        raise ValueError(f"se must be >= 0, got {se}")
    if abs(advantage) <= z * se:
        return "within noise"
    return "softpick better" if advantage > 0 else "softmax better"
