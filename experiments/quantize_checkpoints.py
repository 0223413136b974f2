"""Validation loss of trained LM checkpoints under every quantization setting of ``quant.SETTINGS``.

    OMP_NUM_THREADS=1 python experiments/quantize_checkpoints.py results/gpu_runs/lm-*.pt \
        --out results/quantization

Every model is scored on the same held-out windows (``train.evaluate``: ``--batches`` batches of
``--batch-size`` windows of ``--seq-len`` characters, spread evenly over the validation plays), once
per setting, through ``quant.evaluate_settings``. Writes ``<out>/quantization.json`` (the rows and how
they were made), ``<out>/quantization.png`` and prints a markdown table of the losses.
(``OMP_NUM_THREADS=1``: on this project's 2-core CPU shared with other jobs, one thread ran an evaluation
several times and an HQQ quantization over 20 times faster than two threads, which waited on each other
at every small elementwise op.)
"""

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from minisoftpick.cli import usage_errors  # noqa: E402
from minisoftpick.data import load_tokens  # noqa: E402
from minisoftpick.files import atomic_path, write_text  # noqa: E402
from minisoftpick.quant import SETTINGS, evaluate_settings  # noqa: E402
from minisoftpick.train import evaluate, load_checkpoint  # noqa: E402


def cpu_name() -> str:
    """The CPU's model name from lscpu (Linux), else what ``platform`` knows."""
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines()
        name = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        name = platform.processor() or platform.machine()
    return name


def markdown_table(report: dict) -> str:
    """Setting per row, one loss column per model (and its increase over that model's baseline)."""
    names = list(report["models"])
    lines = [
        "| setting | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    baseline = {name: report["models"][name]["rows"][0]["loss"] for name in names}
    for i, setting in enumerate(report["settings"]):
        cells = []
        for name in names:
            loss = report["models"][name]["rows"][i]["loss"]
            cells.append(f"{loss:.4f}" if i == 0 else f"{loss:.4f} ({loss - baseline[name]:+.4f})")
        lines.append(f"| {setting} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    """Left: loss vs weight bits, RTN solid and HQQ dashed. Right: loss increase of the W*A8 rows."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    names = list(report["models"])
    colors = dict(zip(names, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    for name in names:
        loss = {row["setting"]: row["loss"] for row in report["models"][name]["rows"]}
        for method, style in (("RTN", "-"), ("HQQ", "--")):
            bits = [16, 8, 4, 3, 2]
            losses = [loss["baseline"]] + [loss[f"W{b}A16 {method}"] for b in bits[1:]]
            left.plot(bits, losses, style, marker="o", color=colors[name], label=f"{name} {method}")
        activation_rows = [s for s in loss if "A8" in s]
        offsets = [names.index(name) * 0.8 / len(names) + i for i in range(len(activation_rows))]
        right.bar(
            offsets,
            [loss[s] - loss["baseline"] for s in activation_rows],
            width=0.8 / len(names),
            color=colors[name],
            label=name,
        )
    left.set(
        xlabel="weight bits (16 = baseline: bf16 weights)",
        ylabel="validation loss (nats/char, log scale)",
        yscale="log",
        xscale="log",
        title="weight-only quantization (group 64)",
    )
    left.set_xticks([2, 3, 4, 8, 16], ["2", "3", "4", "8", "16"])
    left.tick_params(axis="x", which="minor", bottom=False, labelbottom=False)
    left.invert_xaxis()
    left.legend(fontsize=7, ncol=2)
    labels = [s.replace(" HQQ ", "\n") for s in activation_rows]
    right.set_xticks([i + 0.4 - 0.4 / len(names) for i in range(len(activation_rows))], labels)
    right.axhline(0, color="black", linewidth=0.8)
    right.set(ylabel="loss increase over baseline (nats/char)", title="int8 activations (HQQ weights)")
    right.legend(fontsize=8)
    fig.suptitle(f"{report['tokens']:,} validation characters per setting, {report['machine']}")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


@usage_errors()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", type=Path, help="LM checkpoints (train.load_checkpoint)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--batches", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    val_tokens = load_tokens("val", "char")

    def val_loss(model) -> float:
        return evaluate(
            model, val_tokens, batch_size=args.batch_size, seq_len=args.seq_len, max_batches=args.batches
        )

    report = {
        "command": "python experiments/quantize_checkpoints.py " + " ".join(sys.argv[1:]),
        "machine": f"{cpu_name()}, {platform.system()} {platform.machine()}, CPU only",
        "date": time.strftime("%Y-%m-%d"),
        "tokens": args.batch_size * args.seq_len * args.batches,
        "eval": {"batch_size": args.batch_size, "seq_len": args.seq_len, "batches": args.batches},
        "settings": SETTINGS,
        "models": {},
    }
    started = time.perf_counter()
    for path in tqdm(args.checkpoints, desc="checkpoints"):
        model = load_checkpoint(path)
        rows = evaluate_settings(model, val_loss)
        report["models"][model.config.attention] = {"checkpoint": str(path), "rows": rows}
    report["wall_seconds"] = round(time.perf_counter() - started, 1)
    write_text(args.out / "quantization.json", json.dumps(report, indent=1))
    plot(report, args.out / "quantization.png")
    print(markdown_table(report))
    print(
        f"\n{report['tokens']:,} tokens per setting, {report['wall_seconds'] / 60:.1f} min on {report['machine']}"
    )


if __name__ == "__main__":
    main()
