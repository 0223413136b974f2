"""Summarise the GPU study (experiments/study.sh) into results/study/summary.json and its plots.

    tar -xzf study.tar.gz -C results      # what study.sh brought back: results/study/{logs,analysis,quantization}
    python experiments/study_summary.py results/study

Reads ``logs/<run>.jsonl`` (training log with a "probe" every probe_interval steps),
``analysis/<run>/analysis.json`` (``python -m minisoftpick.analyze`` on 16 validation windows) and
``quantization/<run>.json`` / ``.npz`` (``experiments/quantize_checkpoints.py``), and writes
``summary.json`` (schema in results/study/README.md), ``trend.png`` (sinks and activations over
training steps, per run) and ``quantization.png`` (loss increase per setting, softmax against softpick,
with two standard errors).
"""

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from minisoftpick.files import atomic_path, write_text  # noqa: E402
from minisoftpick.quant import bootstrap_se, verdict  # noqa: E402

SIZES = {"study": "6 layers x d_model 256", "study_large": "8 layers x d_model 512"}
PAIR = ("softmax", "softpick")  # the two methods every size trains with several seeds
COLORS = {"softmax": "C0", "softpick": "C1", "softmax1": "C2", "sink": "C3", "scaled_softpick": "C4"}
STYLES = {"study": "-", "study_large": "--"}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def probe_stats(report: dict) -> dict:
    """The numbers of one analyze report (a probe or the final analysis) that the study tracks."""
    layers = report["layers"]
    return {
        "sink_rate": report["sink_rate"],
        "sink_rate_short": report["sink_rate_short"],
        "max_first_token_attention": max(max(layer["first_token_attention"]) for layer in layers),
        "max_first_token_attention_short": max(max(layer["first_token_attention_short"]) for layer in layers),
        "kurtosis_mean": report["kurtosis_mean"],
        "kurtosis_max": max(layer["kurtosis"] for layer in layers),
        "max_abs": report["max_abs"],
    }


def run_summary(folder: Path, name: str) -> dict:
    log = read_jsonl(folder / "logs" / f"{name}.jsonl")
    analysis = json.loads((folder / "analysis" / name / "analysis.json").read_text())
    quant = json.loads((folder / "quantization" / f"{name}.json").read_text())
    probes = [record for record in log if "probe" in record]
    evals = [record for record in log if record["val_loss"] is not None]
    trend = {
        "step": [record["step"] for record in probes],
        "val_loss": [record["val_loss"] for record in probes],
    }
    for record in probes:
        for key, value in probe_stats(record["probe"]).items():
            trend.setdefault(key, []).append(value)
    return {
        "preset": quant["preset"],
        "size": SIZES.get(quant["preset"], quant["preset"]),
        "attention": quant["attention"],
        "seed": quant["seed"],
        "steps": log[-1]["step"],
        "train_minutes": round(log[-1]["elapsed"] / 60, 2),
        "tokens": log[-1]["tokens"],
        "val_loss": evals[-1]["val_loss"],
        "val_loss_whole_split": quant["rows"][0]["loss"],
        **probe_stats(analysis),
        "trend": trend,
    }


def ratio_stats(values: list[float]) -> dict:
    return {"per_seed": values, "mean": float(np.mean(values)), "min": min(values), "max": max(values)}


def pair_ratios(runs: dict, preset: str) -> dict:
    """softmax / softpick per seed of kurtosis and max |activation|; softpick - softmax val loss."""
    seeds = sorted({r["seed"] for r in runs.values() if r["preset"] == preset and r["attention"] in PAIR})
    pairs = []
    for seed in seeds:
        by = {r["attention"]: r for r in runs.values() if r["preset"] == preset and r["seed"] == seed}
        if all(a in by for a in PAIR):
            pairs.append((seed, by["softmax"], by["softpick"]))
    return {
        "seeds": [seed for seed, _, _ in pairs],
        "kurtosis_mean_ratio": ratio_stats([a["kurtosis_mean"] / b["kurtosis_mean"] for _, a, b in pairs]),
        "kurtosis_max_ratio": ratio_stats([a["kurtosis_max"] / b["kurtosis_max"] for _, a, b in pairs]),
        "max_abs_ratio": ratio_stats([a["max_abs"] / b["max_abs"] for _, a, b in pairs]),
        "val_loss_difference": ratio_stats(
            [b["val_loss_whole_split"] - a["val_loss_whole_split"] for _, a, b in pairs]
        ),
    }


def quantization_comparison(folder: Path, runs: dict, preset: str) -> dict:
    """Per setting: each method's loss increase per seed (with its bootstrap se), and softpick's
    advantage (softmax's increase minus softpick's; > 0: softpick hurt less) with its uncertainty.

    Per seed the advantage is a paired bootstrap over windows (both models read the same windows);
    over seeds, se = sqrt(mean of the per-seed se^2 / S + var over seeds / S): window noise and seed
    spread. The verdict (``quant.verdict``) says "within noise" unless |advantage| > 2 se.
    """
    seeds = pair_ratios(runs, preset)["seeds"]
    losses = {
        (a, s): np.load(folder / "quantization" / f"{preset}-{a}-s{s}.npz") for a in PAIR for s in seeds
    }
    settings = list(
        json.loads((folder / "quantization" / f"{preset}-softmax-s{seeds[0]}.json").read_text())["settings"]
    )
    table = {}
    for setting in settings[1:]:
        entry = {}
        for a in PAIR:
            increases = [torch.from_numpy(losses[a, s][setting] - losses[a, s]["baseline"]) for s in seeds]
            entry[a] = {
                "increase": [float(i.double().mean()) for i in increases],
                "se": [bootstrap_se(i) for i in increases],
            }
        advantages, ses = [], []
        for s in seeds:
            d = torch.from_numpy(
                (losses["softmax", s][setting] - losses["softmax", s]["baseline"])
                - (losses["softpick", s][setting] - losses["softpick", s]["baseline"])
            )
            advantages.append(float(d.double().mean()))
            ses.append(bootstrap_se(d))
        spread = float(np.var(advantages, ddof=1)) if len(seeds) > 1 else 0.0
        se = float(np.sqrt(np.mean(np.square(ses)) / len(seeds) + spread / len(seeds)))
        mean = float(np.mean(advantages))
        entry["advantage"] = {"per_seed": advantages, "se_per_seed": ses, "mean": mean, "se": se}
        entry["verdict"] = verdict(mean, se)
        table[setting] = entry
    return {"seeds": seeds, "settings": table}


def plot_trend(runs: dict, path: Path) -> None:
    keys = [
        ("max_first_token_attention_short", "largest head's attention to BOS\n(first 64 queries)"),
        ("sink_rate_short", "sink rate (> 0.3, first 64 queries)"),
        ("kurtosis_max", "kurtosis of the hidden states\n(largest layer)"),
        ("max_abs", "max |hidden state|"),
    ]
    fig, axes = plt.subplots(1, len(keys), figsize=(18, 4.2), layout="constrained")
    for run in runs.values():
        for ax, (key, _) in zip(axes, keys, strict=True):
            ax.plot(
                run["trend"]["step"],
                run["trend"][key],
                STYLES.get(run["preset"], ":"),
                color=COLORS.get(run["attention"], "black"),
                alpha=1.0 if run["seed"] == 0 else 0.5,
                label=f"{run['attention']} {run['size']} s{run['seed']}",
            )
    for ax, (key, label) in zip(axes, keys, strict=True):
        ax.set(xlabel="training step", ylabel=label)
        if key in ("kurtosis_max", "max_abs"):
            ax.set_yscale("log")
    axes[0].axhline(0.3, color="grey", linewidth=0.8, linestyle=":")
    axes[-1].legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.02, 1))
    fig.suptitle(
        "sinks and massive activations during training (solid: 6 x 256, dashed: 8 x 512; pale: seed 1)"
    )
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def plot_quantization(comparison: dict, path: Path) -> None:
    presets = list(comparison)
    fig, axes = plt.subplots(
        len(presets), 1, figsize=(13, 3.8 * len(presets)), layout="constrained", squeeze=False
    )
    for ax, preset in zip(axes[:, 0], presets, strict=True):
        table = comparison[preset]["settings"]
        settings = list(table)
        for offset, a in zip((-0.2, 0.2), PAIR, strict=True):
            for k, seed in enumerate(comparison[preset]["seeds"]):
                ax.errorbar(
                    np.arange(len(settings)) + offset + 0.08 * k,
                    [table[s][a]["increase"][k] for s in settings],
                    yerr=[2 * table[s][a]["se"][k] for s in settings],
                    fmt="o",
                    markersize=3,
                    color=COLORS[a],
                    alpha=1.0 if k == 0 else 0.5,
                    label=f"{a} seed {seed}",
                )
        ax.set_xticks(range(len(settings)), [s.replace(" ", "\n", 1) for s in settings], fontsize=7)
        ax.set_yscale("symlog", linthresh=1e-3)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set(
            ylabel="loss increase over baseline\n(nats/char, symlog; bars: 2 se)",
            title=SIZES.get(preset, preset),
        )
        ax.legend(fontsize=7, ncol=2)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="results/study (with logs/, analysis/, quantization/)")
    args = parser.parse_args()
    names = sorted(p.stem for p in (args.folder / "logs").glob("*.jsonl"))
    if not names:
        parser.error(f"no training logs in {args.folder / 'logs'}")
    runs = {name: run_summary(args.folder, name) for name in names}
    presets = sorted({run["preset"] for run in runs.values()})
    comparison = {preset: quantization_comparison(args.folder, runs, preset) for preset in presets}
    machine = json.loads((args.folder / "machine.json").read_text())
    summary = {
        "machine": machine,
        "runs": runs,
        "pairs": {preset: pair_ratios(runs, preset) for preset in presets},
        "quantization": comparison,
    }
    out = args.folder / "summary.json"
    write_text(out, json.dumps(summary, indent=1) + "\n")
    plot_trend(runs, args.folder / "trend.png")
    plot_quantization(comparison, args.folder / "quantization.png")
    for name, run in runs.items():
        print(
            f"{name}: step {run['steps']}, val_loss {run['val_loss_whole_split']:.4f}, "
            f"sink rate {run['sink_rate']:.3f} (first 64 queries {run['sink_rate_short']:.3f}, "
            f"largest head {run['max_first_token_attention_short']:.3f}), kurtosis mean {run['kurtosis_mean']:.1f} "
            f"max {run['kurtosis_max']:.1f}, max|act| {run['max_abs']:.1f}"
        )
    for preset, pairs in summary["pairs"].items():
        print(f"{preset}: " + ", ".join(f"{k} {v['per_seed']}" for k, v in pairs.items() if k != "seeds"))
    for preset, comp in comparison.items():
        for setting, entry in comp["settings"].items():
            adv = entry["advantage"]
            print(f"{preset} {setting}: advantage {adv['mean']:+.4f} ± {adv['se']:.4f} -> {entry['verdict']}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
