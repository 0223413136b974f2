"""Validation loss of trained LM checkpoints under every quantization setting of ``quant.SETTINGS``.

    python experiments/quantize_checkpoints.py runs/study/study-softmax-s0 ... --out results/study/quantization
    python experiments/quantize_checkpoints.py --out results/study/quantization     # table of what is there

Every model is scored on every non-overlapping window of the validation plays (``quant.window_losses``:
windows of the model's ``seq_len``, BOS first when it was trained with one, float32), once per setting,
through ``quant.evaluate_settings``. Per checkpoint it writes ``<out>/<run>.json`` (each setting's loss,
its increase over the baseline and the bootstrap standard error of that increase over windows, paired:
the same windows before and after) and ``<out>/<run>.npz`` (the per-window losses, one array per
setting, for any further bootstrap), ``<run>`` being the run folder's name. Then (and with no
checkpoint given) it prints a markdown table of every ``<out>/*.json``.
"""

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from minisoftpick.cli import usage_errors
from minisoftpick.data import load_tokens
from minisoftpick.files import atomic_path, write_text
from minisoftpick.quant import SETTINGS, bootstrap_se, evaluate_settings, window_losses
from minisoftpick.train import load_checkpoint, read_checkpoint


def machine_name() -> str:
    """The GPU's name when there is one, else the CPU's model name from lscpu (Linux) or ``platform``."""
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()}, torch {torch.__version__}"
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines()
        name = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        name = platform.processor() or platform.machine()
    return f"{name}, CPU only, torch {torch.__version__}"


def run_name(path: Path) -> str:
    """A run folder's name (``runs/study/study-softmax-s0`` or its checkpoint.pt), else the file's stem."""
    return path.name if path.is_dir() else (path.parent.name if path.name == "checkpoint.pt" else path.stem)


def quantize_run(path: Path, out: Path, batch_size: int, max_tokens: int | None = None) -> dict:
    """Sweep ``SETTINGS`` on one checkpoint; write ``<out>/<run>.json`` and ``.npz``; return the report."""
    state = read_checkpoint(path)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_checkpoint(path, device)
    val_tokens = load_tokens("val", state["train_config"].get("tokenizer", "char"))[:max_tokens]
    started = time.perf_counter()
    rows = evaluate_settings(model, lambda m: window_losses(m, val_tokens, batch_size=batch_size))
    base = rows[0]["window_losses"]
    for row in rows:
        increase = row["window_losses"] - base
        row["increase"] = increase.double().mean().item()
        row["increase_se"] = bootstrap_se(increase) if row is not rows[0] else 0.0
    name = run_name(path)
    report = {
        "command": "python experiments/quantize_checkpoints.py " + " ".join(sys.argv[1:]),
        "machine": machine_name(),
        "date": time.strftime("%Y-%m-%d"),
        "checkpoint": str(path),
        "attention": model.config.attention,
        "seed": state["train_config"]["seed"],
        "preset": state["train_config"]["preset"],
        "step": state["step"],
        "windows": len(base),
        "tokens_per_setting": len(base) * model.config.seq_len,
        "seq_len": model.config.seq_len,
        "bos_id": model.config.bos_id,
        "settings": SETTINGS,
        "rows": [{k: v for k, v in row.items() if k != "window_losses"} for row in rows],
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    with atomic_path(out / f"{name}.npz") as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **{row["setting"]: row["window_losses"].numpy() for row in rows})
    write_text(out / f"{name}.json", json.dumps(report, indent=1) + "\n")
    return report


def markdown_table(reports: dict[str, dict]) -> str:
    """Setting per row, per run its loss increase over its baseline +- its bootstrap standard error."""
    names = list(reports)
    lines = ["| setting | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for i, setting in enumerate(next(iter(reports.values()))["settings"]):
        cells = []
        for name in names:
            row = reports[name]["rows"][i]
            cells.append(
                f"{row['loss']:.4f}" if i == 0 else f"{row['increase']:+.4f} ± {row['increase_se']:.4f}"
            )
        lines.append(f"| {setting} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


@usage_errors()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="*", type=Path, help="run folders or checkpoint files")
    parser.add_argument("--batch-size", type=int, default=64, help="windows per forward pass")
    parser.add_argument("--max-tokens", type=int, default=None, help="score only the first N (default all)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.max_tokens is not None and args.max_tokens < 1:
        parser.error(f"--max-tokens must be >= 1, got {args.max_tokens}")
    for path in args.checkpoints:
        report = quantize_run(path, args.out, args.batch_size, args.max_tokens)
        print(
            f"{run_name(path)}: {report['tokens_per_setting']:,} tokens per setting, {report['wall_seconds']} s"
        )
    reports = {p.stem: json.loads(p.read_text()) for p in sorted(args.out.glob("*.json"))}
    if not reports:
        parser.error(f"no checkpoint given and no quantization results in {args.out}")
    print(markdown_table(reports))


if __name__ == "__main__":
    main()
