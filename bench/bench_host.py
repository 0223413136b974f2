"""Host time of one attention call: the CPU's share, which the GPU waits on when its work is small.

    python bench/bench_host.py [--out results/bench_host_h200]

On inputs so small that each launch finishes on the GPU before the host issues the next (B = 1,
H = 2, T = 64, D = 64, bf16), the wall time of many calls divided by their number is the host's
time per call. Measured: one tiny PyTorch op (how fast this host is), the input checks, the
kernel's forward launch alone and its backward launches alone (called directly, no autograd),
flash_softpick_attention forward and forward+backward, SDPA's flash and cuDNN backends the same
way, an identity autograd.Function with a Python backward (what any Python backward costs), and
forward+backward with autograd's multithreading off (the backward on the calling thread). Then Python's profiler, the functions that took the most of
their own time, over forward+backward calls of the kernel and over training steps of
bench_train_step.py's smaller model with each normalizer: where the host time goes.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_attention import CUDNN, FA2, KERNEL, METHODS, default_out, machine_report, write_json  # noqa: E402
from bench_train_step import ATTENTIONS, SIZES, WARMUP_STEPS, training_step  # noqa: E402

from minisoftpick.attention import check_attention_inputs  # noqa: E402
from minisoftpick.kernels import flash_softpick  # noqa: E402
from minisoftpick.normalizers import DEFAULT_EPS  # noqa: E402

SHAPE = (1, 2, 64, 64)  # B, H, T, D


class Identity(torch.autograd.Function):
    """out = q, with a backward written in Python, as the kernel's is."""

    @staticmethod
    def forward(ctx, q):
        return q.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad


CALLS, PROFILED_CALLS, PROFILED_STEPS = 2000, 300, 5


def per_call_us(run, calls: int = CALLS) -> float:
    """Microseconds per call of run(), after warm-up, synchronised once at the end."""
    for _ in range(20):
        run()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        run()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / calls * 1e6


def profile(run, calls: int = PROFILED_CALLS, top: int = 20) -> str:
    """The `top` functions by own time over `calls` calls of run(), as pstats prints them."""
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(calls):
        run()
    profiler.disable()
    torch.cuda.synchronize()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(top)
    return text.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="path of the .json (default: results/bench_host_<gpu>)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("bench_host.py needs a CUDA GPU", file=sys.stderr)
        sys.exit(2)
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v, dout = (torch.randn(SHAPE, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(4))
    q.requires_grad_(), k.requires_grad_(), v.requires_grad_()
    scale = SHAPE[3] ** -0.5

    def fwd(method):
        return lambda: METHODS[method](q, k, v, True)

    def fwd_bwd(method):
        return lambda: torch.autograd.grad(METHODS[method](q, k, v, True), (q, k, v), dout)

    out, shift, den = flash_softpick.softpick_attention_forward(
        q.detach(), k.detach(), v.detach(), True, scale, DEFAULT_EPS
    )
    runs = {
        "torch.add (one small op)": lambda: torch.add(dout, 1.0),
        "check_attention_inputs": lambda: check_attention_inputs(q, k, v),
        "kernel forward launch alone": lambda: flash_softpick.softpick_attention_forward(
            q.detach(), k.detach(), v.detach(), True, scale, DEFAULT_EPS
        ),
        "kernel backward launches alone": lambda: flash_softpick.softpick_attention_backward(
            q.detach(), k.detach(), v.detach(), out, shift, den, dout, True, scale
        ),
        "identity autograd.Function forward+backward": lambda: torch.autograd.grad(
            Identity.apply(q), q, dout
        ),
    }
    for method in (KERNEL, FA2, CUDNN):
        runs[f"{method} forward"] = fwd(method)
        runs[f"{method} forward+backward"] = fwd_bwd(method)

    def on_this_thread(run):  # autograd runs CUDA backward functions on its device thread by default
        def run_here():
            with torch.autograd.set_multithreading_enabled(False):
                return run()

        return run_here

    runs[f"{KERNEL} forward+backward, backward on the calling thread"] = on_this_thread(fwd_bwd(KERNEL))
    runs[f"{CUDNN} forward+backward, backward on the calling thread"] = on_this_thread(fwd_bwd(CUDNN))
    results = {}
    for name, run in runs.items():
        results[name] = per_call_us(run)
        print(f"{results[name]:9.1f} us per call  {name}")
    hot = {"kernel forward+backward": profile(fwd_bwd(KERNEL))}
    print(
        f"\nPython profile of {PROFILED_CALLS} kernel forward+backward calls, by own time:\n{hot['kernel forward+backward']}"
    )
    size_name, size = next(iter(SIZES.items()))
    for attention in ATTENTIONS:
        _, train_step = training_step(size, attention)
        for _ in range(WARMUP_STEPS):
            train_step()
        torch.cuda.synchronize()
        name = f"{attention} training step, {size_name}"
        hot[name] = profile(train_step, calls=PROFILED_STEPS)
        print(f"\nPython profile of {PROFILED_STEPS} steps, {name}, by own time:\n{hot[name]}")
    report = machine_report()
    report["setup"] = dict(shape_bhtd=SHAPE, dtype="bfloat16", causal=True, calls=CALLS)
    report["results_us_per_call"] = results
    report["python_profiles"] = hot
    write_json(Path(args.out or default_out("bench_host")).with_suffix(".json"), report)


if __name__ == "__main__":
    main()
