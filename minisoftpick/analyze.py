"""Measure a trained model's sinks, sparsity and activations, as the paper does.

    python -m minisoftpick.analyze runs/cpu-softpick-s0 --split val --out runs/cpu-softpick-s0/analysis

runs the checkpoint on ``--batch-size`` windows of held-out text spread evenly over the split (or
passkey samples, for a passkey run), captures every layer's attention weights and hidden states,
and writes to ``--out``:

- analysis.json: sink rate, attention sparsity, kurtosis and max |activation|, overall and per
  layer, with each head's attention to the first token and fraction of zero weights; also
  ``sink_rate_short`` and each head's ``first_token_attention_short``: the same over the first
  ``SHORT_QUERIES`` (64) query positions only, which, attention being causal, is what Gu et al.
  measure on sequences of 64 tokens;
- attention_maps.png (one sample, every layer and head), sink_rate.png (per layer, and each
  head's attention to the first token), activations.png (histograms of the hidden states, log scale).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import torch
from matplotlib.figure import Figure
from torch import Tensor

from . import metrics
from .cli import usage_errors
from .data import DATA_DIR, evenly_spaced_batches, load_tokens
from .files import atomic_path, write_text
from .model import Capture, Transformer
from .train import (
    PASSKEY_VAL_SEED,
    Batch,
    TrainConfig,
    lm_loss,
    load_checkpoint,
    read_checkpoint,
    step_generator,
)

SHORT_QUERIES = 64  # Gu et al. (ICLR 2025) measure sinks on sequences of 64 tokens


def run_config(state: dict) -> TrainConfig:
    """The ``TrainConfig`` of a checkpoint's run; a ``data_dir`` missing here (the run was trained on
    another machine) becomes this checkout's ``DATA_DIR`` (``load_tokens`` checks the files' sha256s).
    A run saved before windows started with BOS has no ``bos`` field: it was trained without one."""
    cfg = TrainConfig(**{"bos": False, **state["train_config"]})
    if not Path(cfg.data_dir).is_dir():
        cfg = dataclasses.replace(cfg, data_dir=str(DATA_DIR))
    return cfg


def analysis_batch(cfg: TrainConfig, split: str, batch_size: int, bos: int | None = None) -> Batch:
    """``batch_size`` windows of ``cfg.seq_len`` tokens spread evenly over ``split`` (passkey: samples),
    each starting with ``bos`` when given (the model's ``config.bos_id``: read text as it was trained)."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if cfg.task == "passkey":
        from . import synthetic

        generator = (
            torch.Generator().manual_seed(PASSKEY_VAL_SEED) if split == "val" else step_generator(cfg.seed, 0)
        )
        return synthetic.passkey_batch(batch_size, cfg.seq_len, generator=generator)
    tokens = load_tokens(split, cfg.tokenizer, cfg.data_dir)
    return next(evenly_spaced_batches(tokens, batch_size, cfg.seq_len, 1, bos))


@torch.no_grad()
def analyze(
    model: Transformer, x: Tensor, y: Tensor | None = None, *, threshold: float = 0.3, tol: float = 1e-5
) -> tuple[dict, Capture]:
    """(report, capture): the metrics of ``model`` on token ids x [B, T] and the ``Capture`` behind them."""
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1] (a share of a row's attention), got {threshold}")
    if not tol >= 0:
        raise ValueError(f"tol must be >= 0, got {tol}")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    logits, capture = model(x.to(device), capture=True)
    model.train(was_training)
    layers = [
        {
            "layer": i,
            "sink_rate": metrics.sink_rate([w], threshold),
            "attention_sparsity": metrics.attention_sparsity([w], tol),
            "kurtosis": metrics.kurtosis(h),
            "max_abs": metrics.max_abs(h),
            "first_token_attention": metrics.first_token_attention(w).tolist(),
            "first_token_attention_short": metrics.first_token_attention(_short(w)).tolist(),
            "zero_fraction": metrics.zero_fraction(w, tol).tolist(),
        }
        for i, (w, h) in enumerate(zip(capture.attn, capture.hidden, strict=True))
    ]
    report = {
        "attention": model.config.attention,
        "loss": lm_loss(logits, y.to(device)).item() if y is not None else None,
        "sink_rate": metrics.sink_rate(capture.attn, threshold),
        "sink_rate_short": metrics.sink_rate([_short(w) for w in capture.attn], threshold),
        "short_queries": min(SHORT_QUERIES, x.shape[1]),
        "attention_sparsity": metrics.attention_sparsity(capture.attn, tol),
        "kurtosis_mean": sum(layer["kurtosis"] for layer in layers) / len(layers),
        "max_abs": max(layer["max_abs"] for layer in layers),
        "threshold": threshold,
        "tol": tol,
        "layers": layers,
    }
    return report, capture


def _short(w: Tensor) -> Tensor:
    """The weights of the first ``SHORT_QUERIES`` queries (causal: they see only the first keys)."""
    return w[:, :, :SHORT_QUERIES, :SHORT_QUERIES]


def plot_attention_maps(capture: Capture, sample: int = 0, max_tokens: int = 64) -> Figure:
    """Every layer's (rows) and head's (columns) weights for one sample, first ``max_tokens`` positions."""
    n_layers, n_heads = len(capture.attn), capture.attn[0].shape[1]
    fig = Figure(figsize=(1.6 * n_heads + 1, 1.6 * n_layers + 0.6), layout="constrained")
    axes = fig.subplots(n_layers, n_heads, squeeze=False)
    for layer, w in enumerate(capture.attn):
        for head in range(n_heads):
            ax = axes[layer, head]
            ax.imshow(w[sample, head, :max_tokens, :max_tokens].float().cpu().numpy(), cmap="viridis", vmin=0)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"layer {layer} head {head}", fontsize=7)
    fig.suptitle("attention weights (query down, key across; a bright first column is a sink)")
    return fig


def plot_sink_rate(report: dict) -> Figure:
    """Left: each layer's sink rate. Right: each head's mean attention to the first token."""
    layers = report["layers"]
    fig = Figure(figsize=(10, 3.5), layout="constrained")
    left, right = fig.subplots(1, 2)
    left.bar(range(len(layers)), [layer["sink_rate"] for layer in layers])
    left.set(
        xlabel="layer",
        ylabel="fraction of sink heads",
        ylim=(0, 1),
        title=f"sink rate {report['sink_rate']:.2f} ({report['attention']})",
    )
    image = right.imshow([layer["first_token_attention"] for layer in layers], cmap="magma", vmin=0, vmax=1)
    right.set(
        xlabel="head", ylabel="layer", title=f"attention to the first token (sink: > {report['threshold']})"
    )
    left.set_xticks(range(len(layers)))
    right.set_xticks(range(len(layers[0]["first_token_attention"])))
    right.set_yticks(range(len(layers)))
    fig.colorbar(image, ax=right)
    return fig


def plot_activations(capture: Capture, report: dict, bins: int = 100) -> Figure:
    """Histogram of every layer's hidden states on a log scale: massive activations sit far out."""
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.subplots()
    for layer, (h, stats) in enumerate(zip(capture.hidden, report["layers"], strict=True)):
        ax.hist(
            h.float().flatten().cpu().numpy(),
            bins=bins,
            histtype="step",
            log=True,
            label=f"layer {layer}: kurtosis {stats['kurtosis']:.1f}, max |x| {stats['max_abs']:.1f}",
        )
    ax.set(
        xlabel="hidden state value",
        ylabel="count (log scale)",
        title=f"hidden states ({report['attention']})",
    )
    ax.legend(fontsize=7)
    return fig


@usage_errors("python -m minisoftpick.analyze")
def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m minisoftpick.analyze", description=__doc__.splitlines()[0]
    )
    parser.add_argument("checkpoint", type=Path, help="a run folder or its checkpoint.pt")
    parser.add_argument("--split", choices=("train", "val"), default="val")
    parser.add_argument("--out", type=Path, default=None, help="default: <run folder>/analysis-<split>")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threshold", type=float, default=0.3, help="sink threshold (Gu et al.: 0.3)")
    parser.add_argument("--tol", type=float, default=1e-5, help="weights <= tol count as zero")
    args = parser.parse_args(argv)
    state = read_checkpoint(args.checkpoint)
    cfg = run_config(state)
    model = load_checkpoint(args.checkpoint, "cuda" if torch.cuda.is_available() else "cpu")
    x, y = analysis_batch(cfg, args.split, args.batch_size, model.config.bos_id)
    report, capture = analyze(model, x, y, threshold=args.threshold, tol=args.tol)
    report.update(checkpoint=str(args.checkpoint), step=state["step"], split=args.split, batch=list(x.shape))
    run_folder = args.checkpoint if args.checkpoint.is_dir() else args.checkpoint.parent
    out = args.out or run_folder / f"analysis-{args.split}"
    write_text(out / "analysis.json", json.dumps(report, indent=2) + "\n")
    figures = {
        "attention_maps.png": plot_attention_maps(capture),
        "sink_rate.png": plot_sink_rate(report),
        "activations.png": plot_activations(capture, report),
    }
    for name, figure in figures.items():
        with atomic_path(out / name) as tmp:
            figure.savefig(tmp, dpi=120)
    print(
        f"{report['attention']}: loss {report['loss']:.4f}, sink rate {report['sink_rate']:.3f} "
        f"(first {report['short_queries']} queries: {report['sink_rate_short']:.3f}), "
        f"attention sparsity {report['attention_sparsity']:.3f}, "
        f"mean kurtosis {report['kurtosis_mean']:.2f}, "
        f"max |activation| {report['max_abs']:.2f}; wrote {out}"
    )


if __name__ == "__main__":
    main()
