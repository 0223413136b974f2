"""Measure a trained model's sinks, sparsity and activations, as the paper does.

    python -m minisoftpick.analyze runs/cpu-softpick-s0 --split val --out runs/cpu-softpick-s0/analysis

runs the checkpoint on ``--batch-size`` windows of held-out text spread evenly over the split (or
passkey samples, for a passkey run), captures every layer's attention weights and hidden states,
and writes to ``--out``:

- analysis.json: sink rate, attention sparsity, kurtosis and max |activation|, overall and per
  layer, with each head's attention to the first token and fraction of zero weights; also
  ``sink_rate_short`` and each head's ``first_token_attention_short``: the same over the first
  ``metrics.SHORT_QUERIES`` (64) query positions only, which, attention being causal, is what Gu et al.
  measure on sequences of 64 tokens;
- attention_maps.png (one sample, every layer and head), sink_rate.png (per layer, and each
  head's attention to the first token), activations.png (histograms of the hidden states, log scale).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import torch
from matplotlib.figure import Figure

from .cli import usage_errors
from .files import atomic_path, write_text
from .metrics import SINK_THRESHOLD, ZERO_TOL, analyze, backcopy_report  # what this module runs and plots
from .model import Capture
from .train import analysis_batch, load_checkpoint, read_checkpoint, run_config


def describe_backcopy(report: dict, threshold: float = SINK_THRESHOLD) -> str:
    """One line per head of a ``backcopy_report``: the sink, the copy, the drain and the peak."""
    lines = [f"backcopy: the model predicts the copied token at {report['copy_accuracy']:.1%} of triggers"]
    for layer in report["layers"]:
        for head, dormant in enumerate(layer["bos_attention_dormant"]):
            kv_head = head * len(layer["value_norm_ratio"]) // len(layer["bos_attention_dormant"])
            lines.append(
                f"layer {layer['layer']} head {head}: BOS gets {dormant:.3f} of the weight at dormant "
                f"(non-trigger) queries ({'a sink' if dormant > threshold else 'no sink'}, threshold "
                f"{threshold}; row mass {layer['row_mass_dormant'][head]:.3f}) and "
                f"{layer['bos_attention_active'][head]:.3f} at active (trigger) queries, which put "
                f"{layer['previous_token_attention_active'][head]:.3f} on the previous token; BOS value "
                f"norm {layer['value_norm_ratio'][kv_head]:.2f}x, residual norm "
                f"{layer['residual_norm_ratio']:.2f}x other tokens'"
            )
    return "\n".join(lines)


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
    parser.add_argument(
        "--threshold", type=float, default=SINK_THRESHOLD, help="sink threshold (Gu et al.: %(default)s)"
    )
    parser.add_argument("--tol", type=float, default=ZERO_TOL, help="weights <= tol count as zero")
    args = parser.parse_args(argv)
    state = read_checkpoint(args.checkpoint)
    cfg = run_config(state)
    model = load_checkpoint(args.checkpoint, "cuda" if torch.cuda.is_available() else "cpu")
    x, y = analysis_batch(cfg, args.split, args.batch_size, model.config.bos_id)
    report, capture = analyze(model, x, y, threshold=args.threshold, tol=args.tol)
    report.update(checkpoint=str(args.checkpoint), step=state["step"], split=args.split, batch=list(x.shape))
    if cfg.task == "backcopy":
        report["backcopy"] = backcopy_report(model, x)
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
    if "backcopy" in report:
        print(describe_backcopy(report["backcopy"], args.threshold))


if __name__ == "__main__":
    main()
