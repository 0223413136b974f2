"""Print the summary table of results/analysis/README.md from the analysis JSONs and the training logs.

.venv/bin/python results/analysis/summary_table.py
"""

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1]
ATTENTIONS = ("softmax", "softpick", "softmax1", "sink", "scaled_softpick")


def final_val_loss(log: Path) -> tuple[int, float]:
    """(step, val_loss) of the last line of a training log that has a validation loss."""
    records = [json.loads(line) for line in log.read_text().splitlines()]
    last = [r for r in records if r["val_loss"] is not None][-1]
    return last["step"], last["val_loss"]


def main() -> None:
    print(
        "| attention | val_loss (log, step) | sink rate | attention sparsity | "
        "max kurtosis over layers | max abs activation |"
    )
    print("|---|---|---|---|---|---|")
    for attention in ATTENTIONS:
        report = json.loads((RESULTS / "analysis" / f"lm-{attention}" / "analysis.json").read_text())
        step, val_loss = final_val_loss(RESULTS / "gpu_runs" / f"lm-{attention}.jsonl")
        kurtosis = max(layer["kurtosis"] for layer in report["layers"])
        print(
            f"| {attention} | {val_loss:.4f} ({step}) | {report['sink_rate']:.3f} | "
            f"{report['attention_sparsity']:.3f} | {kurtosis:.2f} | {report['max_abs']:.2f} |"
        )


if __name__ == "__main__":
    main()
