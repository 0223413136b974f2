"""Attention speed on a CUDA GPU: flash softpick (Triton) against torch SDPA's FlashAttention-2 and
cuDNN backends (softmax), with the ratios the kernel's targets are stated in.

    python bench/bench_attention.py [--out results/bench_attention_h200]

bf16, 16384 tokens per batch (B = 16384 // T), H = 1024 // D heads unless a case names its heads;
forward and forward+backward, each timed with triton.testing.do_bench (median). TFLOP/s count the
FLOPs of the visible scores: forward 4 * B * Hq * Tq * Tk * D (two matmuls), halved when causal;
forward+backward 3.5 times that. For GQA, SDPA's call repeats k and v to Hq heads inside the timed
function (repeat_interleave, as minisoftpick.model does for SDPA), the kernel reads the Hkv heads.
For the kernel, a profile of one forward+backward says which
CUDA kernel takes the time. Writes <out>.json (every number, the machine, versions, date, command,
the autotuned tiles) and <out>.png, and prints a table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import matplotlib
import torch
import torch.nn.functional as F
import triton
from torch.nn.attention import SDPBackend, sdpa_kernel
from tqdm import tqdm

from minisoftpick.attention import repeat_kv
from minisoftpick.kernels import flash_softpick
from minisoftpick.settings import progress_disabled

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

TOKENS = 16384
HEADS_TIMES_DIM = 1024
MODES = ("fwd", "fwd+bwd")
BACKWARD_FLOPS = 2.5  # backward: five matmuls to the forward's two
KERNEL = "flash softpick (Triton)"
FA2 = "SDPA flash (softmax)"
CUDNN = "SDPA cuDNN (softmax)"
COLORS = {KERNEL: "tab:orange", FA2: "tab:blue", CUDNN: "tab:green"}
# The targets of the kernel (issue 12): (ratio name, numerator, denominator, mode, target, which cases)
TARGETS = (
    ("fwd+bwd / FA2", KERNEL, FA2, "fwd+bwd", 1.1, "all"),
    ("fwd / cuDNN", KERNEL, CUDNN, "fwd", 0.85, "causal square D64/D128"),
    ("fwd+bwd / cuDNN", KERNEL, CUDNN, "fwd+bwd", 0.7, "causal square D64/D128"),
)
TIMING = dict(warmup=25, rep=100, return_mode="median")
CUDA_DEVICE = torch.autograd.DeviceType.CUDA


@dataclass(frozen=True)
class Case:
    d: int
    t: int
    causal: bool = True
    hq: int | None = None  # None: HEADS_TIMES_DIM // d
    hkv: int | None = None  # None: hq

    @property
    def name(self) -> str:
        kind = "causal" if self.causal else "non-causal"
        if self.hkv is not None and self.hkv != self.hq:
            kind = f"GQA {self.hq}q/{self.hkv}kv"
        return f"{kind} D{self.d} T{self.t}"

    def heads(self) -> tuple[int, int]:
        hq = self.hq or HEADS_TIMES_DIM // self.d
        return hq, self.hkv or hq

    def square_causal_d64_d128(self) -> bool:
        return self.causal and self.d in (64, 128) and self.hkv in (None, self.hq)


CASES = (
    Case(64, 1024),
    Case(64, 4096),
    Case(64, 16384),
    Case(128, 1024),
    Case(128, 4096),
    Case(128, 16384),
    Case(128, 4096, hq=32, hkv=8),
    Case(128, 4096, causal=False),
    Case(256, 4096),
)


def kernel_attention(q, k, v, causal):
    return flash_softpick.flash_softpick_attention(q, k, v, causal=causal)


def sdpa(backend):
    def attention(q, k, v, causal):
        groups = q.shape[1] // k.shape[1]
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(
                q, repeat_kv(k, groups), repeat_kv(v, groups), is_causal=causal
            )

    return attention


METHODS = {
    KERNEL: kernel_attention,
    FA2: sdpa(SDPBackend.FLASH_ATTENTION),
    CUDNN: sdpa(SDPBackend.CUDNN_ATTENTION),
}


def attention_flops(b: int, hq: int, tq: int, tk: int, d: int, causal: bool, mode: str) -> float:
    forward = 4 * b * hq * tq * tk * d / (2 if causal else 1)
    return forward if mode == "fwd" else (1 + BACKWARD_FLOPS) * forward


def inputs(case: Case) -> tuple[torch.Tensor, ...]:
    """q, k, v (requiring grad) and an output gradient, bf16 N(0, 1), for the kernel and for SDPA."""
    b, (hq, hkv) = TOKENS // case.t, case.heads()
    g = torch.Generator(device="cuda").manual_seed(0)
    shapes = [
        (b, hq, case.t, case.d),
        (b, hkv, case.t, case.d),
        (b, hkv, case.t, case.d),
        (b, hq, case.t, case.d),
    ]
    q, k, v, dout = (torch.randn(s, device="cuda", dtype=torch.bfloat16, generator=g) for s in shapes)
    return q.requires_grad_(), k.requires_grad_(), v.requires_grad_(), dout


def step(attention, q, k, v, dout, causal, mode):
    """The function to time: one forward, or one forward and backward."""
    if mode == "fwd":
        return lambda: attention(q, k, v, causal)
    return lambda: torch.autograd.grad(attention(q, k, v, causal), (q, k, v), dout)


def kernel_breakdown(run, repeats: int = 5) -> dict[str, float]:
    """Milliseconds per call of each CUDA kernel that `run` launches (torch profiler), largest first."""
    run()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(repeats):
            run()
        torch.cuda.synchronize()
    times = {}
    for event in prof.key_averages():
        if getattr(event, "device_type", CUDA_DEVICE) != CUDA_DEVICE:
            continue  # an operator: its kernels are listed on their own
        total = getattr(event, "device_time_total", None) or getattr(event, "cuda_time_total", 0)
        if total > 0:
            times[event.key[:80]] = total / repeats / 1e3
    return dict(sorted(times.items(), key=lambda item: -item[1]))


def autotuned_tiles() -> dict[str, str]:
    """The config each of the kernel's three autotuned launches used at its last call."""
    kernels = {
        "forward": flash_softpick.forward_kernel,
        "dq": flash_softpick.dq_kernel,
        "dkdv": flash_softpick.dkdv_kernel,
    }
    return {name: str(getattr(kernel, "best_config", None)) for name, kernel in kernels.items()}


def benchmark(cases=CASES) -> list[dict]:
    rows = []
    for case in tqdm(cases, desc="cases", disable=progress_disabled()):
        q, k, v, dout = inputs(case)
        b, (hq, hkv) = TOKENS // case.t, case.heads()
        for method, attention in METHODS.items():
            for mode in MODES:
                row = {
                    "case": case.name,
                    **asdict(case),
                    "B": b,
                    "Hq": hq,
                    "Hkv": hkv,
                    "method": method,
                    "mode": mode,
                }
                run = step(attention, q, k, v, dout, case.causal, mode)
                try:
                    ms = triton.testing.do_bench(run, **TIMING)
                    flops = attention_flops(b, hq, case.t, case.t, case.d, case.causal, mode)
                    row.update(ms=ms, tflops=flops / ms / 1e9)
                    if method == KERNEL:
                        row["tiles"] = autotuned_tiles()
                        if mode == "fwd+bwd":
                            row["cuda_kernels_ms"] = kernel_breakdown(run)
                except torch.cuda.OutOfMemoryError:
                    row.update(ms=None, tflops=None, skipped="out of memory")
                except RuntimeError as error:  # e.g. no cuDNN attention for this shape or build
                    row.update(ms=None, tflops=None, skipped=str(error).splitlines()[0][:200])
                torch.cuda.empty_cache()
                rows.append(row)
    return rows


def ratios(rows: list[dict]) -> list[dict]:
    """Each target's ratio at each case it applies to, and whether it is met."""
    cell = {(r["case"], r["method"], r["mode"]): r["tflops"] for r in rows}
    out = []
    for case in CASES:
        for name, top, bottom, mode, target, which in TARGETS:
            if which != "all" and not case.square_causal_d64_d128():
                continue
            a, b = cell.get((case.name, top, mode)), cell.get((case.name, bottom, mode))
            ratio = a / b if a and b else None
            out.append(
                {
                    "case": case.name,
                    "ratio": name,
                    "value": ratio,
                    "target": target,
                    "met": ratio is not None and ratio >= target,
                }
            )
    return out


def table(rows: list[dict], ratio_rows: list[dict]) -> str:
    """TFLOP/s as 'forward / forward+backward' per case and method, then the target ratios."""
    cell = {(r["case"], r["method"], r["mode"]): r["tflops"] for r in rows}
    ratio = {(r["case"], r["ratio"]): r for r in ratio_rows}

    def fmt(x, spec=".0f"):
        return "-" if x is None else format(x, spec)

    head = (
        f"{'case':<24} | "
        + " | ".join(f"{m:>23}" for m in METHODS)
        + " | "
        + " | ".join(t[0] for t in TARGETS)
    )
    lines = [
        "TFLOP/s, bf16: forward / forward+backward; ratios (target), * = target met",
        head,
        "-" * len(head),
    ]
    for case in CASES:
        values = [
            f"{fmt(cell.get((case.name, m, 'fwd')))} / {fmt(cell.get((case.name, m, 'fwd+bwd')))}"
            for m in METHODS
        ]
        marks = []
        for name, *_rest, target, _which in TARGETS:
            r = ratio.get((case.name, name))
            marks.append(
                f"{'':>{len(name)}}"
                if r is None
                else f"{fmt(r['value'], '.2f')} ({target}){'*' if r['met'] else ' '}".rjust(len(name))
            )
        lines.append(
            f"{case.name:<24} | " + " | ".join(f"{v:>23}" for v in values) + " | " + " | ".join(marks)
        )
    return "\n".join(lines)


def plot(rows: list[dict], path: Path, machine: str) -> None:
    fig, axes = plt.subplots(len(MODES), 1, figsize=(12, 7), sharex=True)
    width = 0.8 / len(METHODS)
    for ax, mode in zip(axes, MODES, strict=True):
        for i, method in enumerate(METHODS):
            values = [
                next(
                    (
                        r["tflops"] or 0
                        for r in rows
                        if (r["case"], r["method"], r["mode"]) == (c.name, method, mode)
                    ),
                    0,
                )
                for c in CASES
            ]
            ax.bar(
                [j + (i - 1) * width for j in range(len(CASES))],
                values,
                width,
                label=method,
                color=COLORS[method],
            )
        ax.set_ylabel(f"{mode} TFLOP/s")
        ax.grid(axis="y", alpha=0.3)
    axes[-1].set_xticks(range(len(CASES)), [c.name for c in CASES], rotation=30, ha="right")
    axes[-1].set_xlabel("case (bf16, 16384 tokens per batch)")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Attention speed, flash softpick vs SDPA softmax ({machine})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def machine_report() -> dict:
    return {
        "machine": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }


def default_out(stem: str) -> str:
    """results/<stem>_<gpu>, e.g. results/bench_attention_h200 on an "NVIDIA H200"."""
    gpu = torch.cuda.get_device_name().lower().removeprefix("nvidia ").split()[0]
    return f"results/{stem}_{re.sub(r'[^a-z0-9]+', '_', gpu)}"


def write_json(path: Path, report: dict) -> None:
    """Atomically: a temporary file beside it, then a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(report, indent=1))
    tmp.replace(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        default=None,
        help="path prefix of the .json and .png (default: results/bench_attention_<gpu>)",
    )
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("bench_attention.py needs a CUDA GPU", file=sys.stderr)
        sys.exit(2)
    rows = benchmark()
    ratio_rows = ratios(rows)
    report = machine_report()
    report["setup"] = {
        "dtype": "bfloat16",
        "tokens_per_batch": TOKENS,
        "heads_times_head_dim": HEADS_TIMES_DIM,
        "timing": f"triton.testing.do_bench({TIMING})",
    }
    report["results"], report["ratios"] = rows, ratio_rows
    out = Path(args.out or default_out("bench_attention"))
    write_json(out.with_suffix(".json"), report)
    plot(rows, out.with_suffix(".png"), report["machine"])
    print(f"{report['machine']} | torch {torch.__version__} | triton {triton.__version__}")
    print(table(rows, ratio_rows))


if __name__ == "__main__":
    main()
