"""What the paper measures on trained models: attention sinks, sparsity and massive activations.

- Sink rate (Gu et al., ICLR 2025, "When Attention Sink Emerges in Language Models"): a head is a
  sink head when its attention to the first token, averaged over query positions and batch,
  exceeds a threshold (0.3); the sink rate is the fraction of sink heads over all layers. A query
  row that attends nowhere (softpick can give all zeros) adds 0 to that average: it is no sink.
- Attention sparsity: the fraction of the causal triangle (diagonal included) whose weight is at
  most ``tol``. Softmax weights are never exactly 0; softpick's are for every score <= 0.
- Pearson kurtosis E[(x - mu)^4] / E[(x - mu)^2]^2 over all elements (3 for a Gaussian, much more
  when a few features carry massive activations) and max |x|, of the hidden states.
- On the Bigram-Backcopy task (``synthetic.backcopy_batch``; Guo et al., arXiv 2410.13835) a head is
  *active* at the queries where it has work to do (a trigger token: copy the previous token) and
  *dormant* elsewhere. ``bos_attention`` and ``row_mass`` at the dormant queries show the sink
  (softmax must put each row's weight somewhere and parks it on BOS; softpick can give a row no
  weight), ``previous_token_attention`` at the active ones the copying. ``first_token_norm_ratio``
  of the value states shows the *drain* (BOS's value is small, so attending to it adds almost
  nothing), of the residual stream the *peak* (BOS's hidden state is much larger than others').

Attention maps are [B, H, Tq, Tk] tensors, one per layer (``Capture.attn``). ``analyze`` and
``backcopy_report`` run a model once and report all of these; the trainer's probe logs them during
training and ``python -m minisoftpick.analyze`` writes them for a checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from . import synthetic
from .attention import causal_mask
from .model import Capture, Transformer, evaluating, lm_loss

SINK_THRESHOLD = 0.3  # Gu et al. (ICLR 2025): a head whose attention to the first token exceeds it is a sink
ZERO_TOL = 1e-5  # a weight at most this counts as zero in the sparsity


def _described(x: object) -> str:
    """A wrong argument as an error message shows it: a tensor's dtype and shape, anything else's type."""
    return f"{x.dtype} of shape {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__


def _check_maps(weights: Sequence[Tensor]) -> None:
    if isinstance(weights, Tensor) or not isinstance(weights, Sequence) or len(weights) == 0:
        raise TypeError("weights must be a non-empty list of attention maps [B, H, Tq, Tk], one per layer")
    for layer, w in enumerate(weights):
        _check_map(w, f"weights[{layer}]")


def _check_map(w: Tensor, name: str) -> None:
    if not isinstance(w, Tensor) or w.dim() != 4 or not w.is_floating_point():
        got = f"shape {tuple(w.shape)} {w.dtype}" if isinstance(w, Tensor) else type(w).__name__
        raise ValueError(f"{name} must be a float tensor [B, H, Tq, Tk], got {got}")
    if not torch.isfinite(w).all():
        raise ValueError(f"{name} has NaN or inf entries")


def first_token_attention(w: Tensor) -> Tensor:
    """Per head [H]: the weight on key 0, averaged over batch and every query row (zero rows count)."""
    return w[..., 0].double().mean(dim=(0, 2))


def sink_rate(weights: Sequence[Tensor], threshold: float = SINK_THRESHOLD) -> float:
    """The fraction of heads over all layers whose ``first_token_attention`` exceeds ``threshold``."""
    _check_maps(weights)
    per_head = torch.cat([first_token_attention(w) for w in weights])
    return (per_head > threshold).double().mean().item()


def _zeros_per_head(w: Tensor, tol: float) -> tuple[Tensor, int]:
    """Per head [H]: how many causal entries (diagonal included) have weight <= tol; how many there are."""
    inside = causal_mask(w.shape[-2], w.shape[-1], w.device)
    return ((w <= tol) & inside).sum(dim=(0, 2, 3)), int(inside.sum()) * w.shape[0]


def zero_fraction(w: Tensor, tol: float = ZERO_TOL) -> Tensor:
    """Per head [H]: the fraction of causal entries (diagonal included) with weight <= ``tol``."""
    zeros, entries = _zeros_per_head(w, tol)
    return zeros.double() / entries


def attention_sparsity(weights: Sequence[Tensor], tol: float = ZERO_TOL) -> float:
    """The fraction of entries inside the causal triangle, over all layers, whose weight is <= ``tol``."""
    _check_maps(weights)
    counts = [_zeros_per_head(w, tol) for w in weights]
    return sum(zeros.sum().item() for zeros, _ in counts) / sum(
        entries * len(zeros) for zeros, entries in counts
    )


def kurtosis(x: Tensor) -> float:
    """Pearson kurtosis E[(x - mu)^4] / E[(x - mu)^2]^2 over all elements of x (population moments)."""
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.numel() < 2:
        raise ValueError("x must be a float tensor with at least 2 elements")
    centred = x.detach().double().flatten()
    centred = centred - centred.mean()
    variance = centred.pow(2).mean()
    if variance == 0:
        raise ValueError("x is constant: its kurtosis is undefined")
    return (centred.pow(4).mean() / variance**2).item()


def max_abs(x: Tensor) -> float:
    """The largest |activation| in x."""
    return x.detach().abs().max().item()


def _check_queries(w: Tensor, queries: Tensor) -> None:
    _check_map(w, "w")
    if (
        not isinstance(queries, Tensor)
        or queries.dtype != torch.bool
        or queries.shape != (w.shape[0], w.shape[2])
    ):
        raise ValueError(
            f"queries must be a bool tensor [B, Tq] = {[w.shape[0], w.shape[2]]}, got {_described(queries)}"
        )
    if not queries.any():
        raise ValueError("queries selects no query position: there is nothing to average")


def _mean_at_queries(values: Tensor, queries: Tensor) -> Tensor:
    """Per head [H]: values [B, H, Tq] averaged over the selected (batch, query) positions."""
    return (values.double() * queries[:, None]).sum(dim=(0, 2)) / queries.sum()


def bos_attention(w: Tensor, queries: Tensor) -> Tensor:
    """Per head [H]: the weight on key 0 (BOS), averaged over the query positions ``queries`` selects.

    ``w`` [B, H, Tq, Tk], ``queries`` bool [B, Tq] (e.g. ``synthetic.backcopy_roles``). A row that
    attends nowhere adds 0.
    """
    _check_queries(w, queries)
    return _mean_at_queries(w[..., 0], queries)


def row_mass(w: Tensor, queries: Tensor) -> Tensor:
    """Per head [H]: the total weight of a row, averaged over the selected queries (softmax: 1)."""
    _check_queries(w, queries)
    return _mean_at_queries(w.sum(-1), queries)


def previous_token_attention(w: Tensor, queries: Tensor) -> Tensor:
    """Per head [H]: the weight query i puts on key i - 1, averaged over the selected queries.

    Needs square maps (Tq = Tk) and no selected query at position 0, which has no previous token.
    """
    _check_queries(w, queries)
    if w.shape[-2] != w.shape[-1]:
        raise ValueError(f"w must be square [B, H, T, T] here, got shape {tuple(w.shape)}")
    if queries[:, 0].any():
        raise ValueError("queries selects position 0, which has no previous token")
    previous = torch.zeros(w.shape[:-1], dtype=w.dtype, device=w.device)
    previous[..., 1:] = torch.diagonal(w, offset=-1, dim1=-2, dim2=-1)
    return _mean_at_queries(previous, queries)


def first_token_norm_ratio(states: Tensor) -> Tensor:
    """The L2 norm of position 0's state over the mean norm of the other positions' states.

    ``states`` [B, ..., T, D], features last, positions next to last: the residual stream
    [B, T, D] gives a 0-dim tensor, value states [B, H, T, D] one ratio per head [H]. Norms are
    averaged over the batch (and positions 1..T-1) before dividing. Well above 1 is a *peak*,
    well below 1 a *drain*.
    """
    if not isinstance(states, Tensor) or not states.is_floating_point() or states.dim() < 3:
        raise ValueError(
            f"states must be a float tensor [B, ..., T, D] with T >= 2, got {_described(states)}"
        )
    if states.shape[-2] < 2:
        raise ValueError(f"states must hold at least 2 positions (dim -2), got shape {tuple(states.shape)}")
    if not torch.isfinite(states).all():
        raise ValueError("states has NaN or inf entries")
    norms = states.detach().double().norm(dim=-1)  # [B, ..., T]
    others = norms[..., 1:].mean(dim=(0, -1))
    if (others == 0).any():
        raise ValueError("the states after position 0 are all zero: the ratio is undefined")
    return norms[..., 0].mean(0) / others


SHORT_QUERIES = 64  # Gu et al. (ICLR 2025) measure sinks on sequences of 64 tokens


@torch.no_grad()
def analyze(
    model: Transformer,
    x: Tensor,
    y: Tensor | None = None,
    *,
    threshold: float = SINK_THRESHOLD,
    tol: float = ZERO_TOL,
) -> tuple[dict, Capture]:
    """(report, capture): the metrics of ``model`` on token ids x [B, T] and the ``Capture`` behind them."""
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1] (a share of a row's attention), got {threshold}")
    if not tol >= 0:
        raise ValueError(f"tol must be >= 0, got {tol}")
    with evaluating(model) as device:
        logits, capture = model(x.to(device), capture=True)
    layers = [
        {
            "layer": i,
            "sink_rate": sink_rate([w], threshold),
            "attention_sparsity": attention_sparsity([w], tol),
            "kurtosis": kurtosis(h),
            "max_abs": max_abs(h),
            "first_token_attention": first_token_attention(w).tolist(),
            "first_token_attention_short": first_token_attention(_short(w)).tolist(),
            "zero_fraction": zero_fraction(w, tol).tolist(),
        }
        for i, (w, h) in enumerate(zip(capture.attn, capture.hidden, strict=True))
    ]
    report = {
        "attention": model.config.attention,
        "loss": lm_loss(logits, y.to(device)).item() if y is not None else None,
        "sink_rate": sink_rate(capture.attn, threshold),
        "sink_rate_short": sink_rate([_short(w) for w in capture.attn], threshold),
        "short_queries": min(SHORT_QUERIES, x.shape[1]),
        "attention_sparsity": attention_sparsity(capture.attn, tol),
        "kurtosis_mean": sum(layer["kurtosis"] for layer in layers) / len(layers),
        "max_abs": max(layer["max_abs"] for layer in layers),
        "threshold": threshold,
        "tol": tol,
        "layers": layers,
    }
    return report, capture


def value_states(model: Transformer, x: Tensor, capture: Capture) -> list[Tensor]:
    """Per layer, the value vectors [B, Hkv, T, head_dim] its attention averages: W_v RMSNorm(block input)."""
    inputs = [model.embed(x), *capture.hidden[:-1]]
    c = model.config
    return [
        block.attn.wv(block.attn_norm(h)).view(*x.shape, c.n_kv_heads, c.head_dim).transpose(1, 2)
        for block, h in zip(model.blocks, inputs, strict=True)
    ]


@torch.no_grad()
def backcopy_report(model: Transformer, x: Tensor, task: synthetic.BigramBackcopy | None = None) -> dict:
    """The Bigram-Backcopy phenomena of ``model`` on sequences x [B, T] of ``synthetic.backcopy_batch``.

    Per layer and head: the weight on BOS at dormant (non-trigger) and active (trigger) queries, the
    dormant rows' total weight, the active queries' weight on the previous token (the copy), the
    BOS value norm over other tokens' (drain: << 1); per layer the BOS residual norm over other
    tokens' (peak: >> 1); and how often the model predicts the copied token after a trigger.
    ``task`` defaults to ``synthetic.bigram_backcopy_task()``, whose triggers define the roles.
    """
    task = synthetic.bigram_backcopy_task() if task is None else task
    bos = task.transition.shape[0]
    if not isinstance(x, Tensor) or x.dim() != 2 or x.shape[1] < 2 or not torch.all(x[:, 0] == bos):
        raise ValueError(f"x must be backcopy sequences [B, T >= 2] that start with BOS ({bos})")
    with evaluating(model) as device:
        x = x.to(device)
        logits, capture = model(x, capture=True)
        values = value_states(model, x, capture)
    dormant, active = synthetic.backcopy_roles(x, task.triggers)
    copied = logits[:, 1:].argmax(-1) == x[:, :-1]  # after a trigger the next token is the one before it
    return {
        "triggers": list(task.triggers),
        "dormant_queries": int(dormant.sum()),
        "active_queries": int(active.sum()),
        "copy_accuracy": copied[active[:, 1:]].double().mean().item(),
        "layers": [
            {
                "layer": i,
                "bos_attention_dormant": bos_attention(w, dormant).tolist(),
                "bos_attention_active": bos_attention(w, active).tolist(),
                "row_mass_dormant": row_mass(w, dormant).tolist(),
                "previous_token_attention_active": previous_token_attention(w, active).tolist(),
                "value_norm_ratio": first_token_norm_ratio(v).tolist(),
                "residual_norm_ratio": first_token_norm_ratio(h).item(),
            }
            for i, (w, v, h) in enumerate(zip(capture.attn, values, capture.hidden, strict=True))
        ],
    }


def _short(w: Tensor) -> Tensor:
    """The weights of the first ``SHORT_QUERIES`` queries (causal: they see only the first keys)."""
    return w[:, :, :SHORT_QUERIES, :SHORT_QUERIES]
