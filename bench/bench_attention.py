"""Attention speed on a CUDA GPU: flash softpick (Triton) against torch SDPA (softmax) and naive softpick.

    python bench/bench_attention.py [--out results/bench_attention]

bf16, causal, 16384 tokens per batch and model dim 2048 (B = 16384 // T, H = 2048 // D), for D in
{64, 128} and T in {1024, 4096, 16384}; forward and forward+backward, each timed with
triton.testing.do_bench (median). TFLOP/s count causal FLOPs: forward 4 * B * H * T^2 * D / 2
(two matmuls, half the scores), forward+backward 3.5 times that. Methods that do not exist here
(cuDNN) or run out of memory (naive at long T) are left out. Writes <out>.json (every number, the
machine, versions, date, command, the autotuned kernel configs) and <out>.png, and prints a table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
from pathlib import Path

import matplotlib
import torch
import torch.nn.functional as F
import triton
from torch.nn.attention import SDPBackend, sdpa_kernel
from tqdm import tqdm

import minisoftpick as msp
from minisoftpick.kernels import flash_softpick

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

TOKENS = 16384
MODEL_DIM = 2048
HEAD_DIMS = (64, 128)
LENGTHS = (1024, 4096, 16384)
MODES = ("fwd", "fwd+bwd")


def sdpa(backend):
    def attention(q, k, v):
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    return attention


METHODS = {
    "flash softpick (Triton)": lambda q, k, v: msp.flash_softpick_attention(q, k, v, causal=True),
    "SDPA flash (softmax)": sdpa(SDPBackend.FLASH_ATTENTION),
    "SDPA cuDNN (softmax)": sdpa(SDPBackend.CUDNN_ATTENTION),
    "naive softpick": lambda q, k, v: msp.naive_attention(q, k, v, causal=True),
}


def causal_flops(b: int, h: int, t: int, d: int, mode: str) -> float:
    forward = 4 * b * h * t * t * d / 2
    return forward if mode == "fwd" else 3.5 * forward


def time_ms(attention, q, k, v, dout, mode: str) -> float:
    """Median milliseconds of one forward (or forward and backward) call."""
    if mode == "fwd":
        run = lambda: attention(q, k, v)  # noqa: E731
    else:
        run = lambda: torch.autograd.grad(attention(q, k, v), (q, k, v), dout)  # noqa: E731
    return triton.testing.do_bench(run, warmup=25, rep=100, return_mode="median")


def autotuned_configs() -> dict[str, str]:
    """The config each of the three autotuned kernels chose at its last call."""
    kernels = {
        "forward": flash_softpick.forward_kernel,
        "dq": flash_softpick.dq_kernel,
        "dkdv": flash_softpick.dkdv_kernel,
    }
    return {name: str(getattr(kernel, "best_config", None)) for name, kernel in kernels.items()}


def benchmark() -> list[dict]:
    rows = []
    shapes = [(d, t) for d in HEAD_DIMS for t in LENGTHS]
    for d, t in tqdm(shapes, desc="shapes", disable=os.environ.get("MSP_FAST") == "1"):
        b, h = TOKENS // t, MODEL_DIM // d
        g = torch.Generator(device="cuda").manual_seed(0)
        q, k, v, dout = (
            torch.randn(b, h, t, d, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(4)
        )
        q, k, v = (x.requires_grad_() for x in (q, k, v))
        for method, attention in METHODS.items():
            for mode in MODES:
                row = {"method": method, "D": d, "T": t, "B": b, "H": h, "mode": mode}
                try:
                    ms = time_ms(attention, q, k, v, dout, mode)
                    row.update(ms=ms, tflops=causal_flops(b, h, t, d, mode) / ms / 1e9)
                except torch.cuda.OutOfMemoryError:
                    row.update(ms=None, tflops=None, skipped="out of memory")
                except RuntimeError as error:  # e.g. no cuDNN attention in this build or on this GPU
                    row.update(ms=None, tflops=None, skipped=str(error).splitlines()[0][:200])
                torch.cuda.empty_cache()
                if method.startswith("flash softpick"):
                    row["configs"] = autotuned_configs()
                rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    """TFLOP/s as 'forward / forward+backward' for each shape and method."""
    methods = list(METHODS)
    cell = {(r["method"], r["D"], r["T"], r["mode"]): r["tflops"] for r in rows}

    def fmt(x):
        return "-" if x is None else f"{x:.0f}"

    lines = [" D      T | " + " | ".join(f"{m:>23}" for m in methods), "-" * (11 + 26 * len(methods))]
    for d in HEAD_DIMS:
        for t in LENGTHS:
            values = [f"{fmt(cell[m, d, t, 'fwd'])} / {fmt(cell[m, d, t, 'fwd+bwd'])}" for m in methods]
            lines.append(f"{d:>3} {t:>6} | " + " | ".join(f"{v:>23}" for v in values))
    return "\n".join(["TFLOP/s, bf16, causal: forward / forward+backward", *lines])


def plot(rows: list[dict], path: Path, machine: str) -> None:
    fig, axes = plt.subplots(len(MODES), len(HEAD_DIMS), figsize=(10, 7), sharex=True, sharey=True)
    for i, mode in enumerate(MODES):
        for j, d in enumerate(HEAD_DIMS):
            ax = axes[i][j]
            for method in METHODS:
                points = [
                    (r["T"], r["tflops"])
                    for r in rows
                    if r["method"] == method and r["D"] == d and r["mode"] == mode and r["tflops"]
                ]
                if points:
                    ax.plot(*zip(*points, strict=True), marker="o", label=method)
            ax.set_xscale("log", base=2)
            ax.set_title(f"{mode}, head dim {d}")
            ax.set_xlabel("sequence length T")
            ax.set_ylabel("TFLOP/s")
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"Causal bf16 attention, {TOKENS} tokens per batch, model dim {MODEL_DIM} ({machine})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/bench_attention", help="path prefix of the .json and .png")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_attention.py needs a CUDA GPU")
    rows = benchmark()
    machine = torch.cuda.get_device_name()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "machine": machine,
        "torch": torch.__version__,
        "triton": triton.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "setup": {
            "dtype": "bfloat16",
            "causal": True,
            "tokens_per_batch": TOKENS,
            "model_dim": MODEL_DIM,
            "timing": "triton.testing.do_bench(warmup=25, rep=100, return_mode='median')",
        },
        "results": rows,
    }
    out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    plot(rows, out.with_suffix(".png"), machine)
    print(f"{machine} | torch {torch.__version__} | triton {triton.__version__}")
    print(table(rows))


if __name__ == "__main__":
    main()
