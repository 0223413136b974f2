"""What softpick costs in training: tokens per second of one training step of the course's model,
softpick through the Triton kernel against softmax through torch SDPA.

    python bench/bench_train_step.py [--out results/bench_train_step_h200]

minisoftpick.model.Transformer at T = 2048 with 16384 tokens per step (B = 8), bf16 autocast and
fused AdamW as the trainer uses them (minisoftpick.train): forward, loss, backward, optimizer step.
Two sizes: the gpu preset's (6 layers, d_model 256, 4 heads, char vocabulary of 84) and one of about
100M parameters (12 layers, d_model 768, 12 heads, vocabulary 8192). The model picks the backend
itself (backend="auto": "flash" for softpick on CUDA, "sdpa" for softmax).

Each step is timed three ways, median over the timed steps:
- eager: with CUDA events, each step on its own (the host waits for a step to finish before it
  launches the next, so host time is not hidden behind the GPU's);
- host: how long the host takes to return from the step's Python, before it waits on the GPU;
- graphed: the whole step captured once as a CUDA graph (torch.cuda.graph, capturable AdamW) and
  replayed, which removes the host's time per step and leaves the GPU's.
Beside them: the GPU's busy time per step and its largest CUDA kernels (torch profiler), and how many
CUDA runtime calls of each kind one step makes (a synchronisation would show here). A step much
longer than its busy time waits on Python.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from bench_attention import default_out, kernel_breakdown, machine_report, write_json  # noqa: E402

from minisoftpick.model import ModelConfig, Transformer  # noqa: E402

SEQ_LEN = 2048
BATCH = 8
SIZES = {
    "gpu preset (6 x 256, char)": dict(vocab_size=84, n_layers=6, n_heads=4, d_model=256),
    "about 100M (12 x 768)": dict(vocab_size=8192, n_layers=12, n_heads=12, d_model=768),
}
ATTENTIONS = ("softmax", "softpick")
WARMUP_STEPS, TIMED_STEPS = 5, 20
RUNTIME_CALLS = (  # CUDA runtime and driver calls counted per step
    "cudaLaunchKernel",
    "cuLaunchKernel",
    "cuLaunchKernelEx",
    "cudaMemcpyAsync",
    "cudaStreamSynchronize",
    "cudaDeviceSynchronize",
    "cudaMalloc",
    "cudaFree",
)


def timed(run, steps: int = TIMED_STEPS) -> tuple[float, float]:
    """Median milliseconds of run() (CUDA events, synchronised after each) and of its host part."""
    gpu, host = [], []
    for _ in range(steps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        t0 = time.perf_counter()
        run()
        host.append((time.perf_counter() - t0) * 1e3)
        end.record()
        torch.cuda.synchronize()
        gpu.append(start.elapsed_time(end))
    return statistics.median(gpu), statistics.median(host)


def runtime_calls(run, repeats: int = 3) -> dict[str, float]:
    """How many times per run() each of RUNTIME_CALLS is made (torch profiler, CPU side)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(repeats):
            run()
        torch.cuda.synchronize()
    counts = {event.key: event.count / repeats for event in prof.key_averages() if event.key in RUNTIME_CALLS}
    return dict(sorted(counts.items()))


def capture(step) -> torch.cuda.CUDAGraph:
    """step() recorded as one CUDA graph, after warm-up on a side stream (PyTorch's recipe for
    capturing a whole training step)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    return graph


def training_step(size: dict, attention: str):
    """The model of this size and normalizer on the GPU, and a function doing one training step."""
    torch.manual_seed(0)
    model = Transformer(ModelConfig(seq_len=SEQ_LEN, attention=attention, **size)).cuda()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True, capturable=True)
    idx = torch.randint(0, size["vocab_size"], (BATCH, SEQ_LEN + 1), device="cuda")
    x, y = idx[:, :-1], idx[:, 1:]

    def train_step():
        # autocast's weight cache would keep bf16 copies made during capture: off, as graphs need
        with torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False):
            logits = model(x)
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return model, train_step


def measure(size: dict, attention: str) -> dict:
    """One row of the table: the step's times three ways, its parameter count, backend, kernels."""
    model, train_step = training_step(size, attention)
    for _ in range(WARMUP_STEPS):
        train_step()
    step_ms, host_ms = timed(train_step)
    kernels = kernel_breakdown(train_step, repeats=3)
    calls = runtime_calls(train_step)
    try:
        graphed_ms, _ = timed(capture(train_step).replay)
        graph_error = None
    except RuntimeError as error:  # a step that cannot be captured: say why, keep the other numbers
        graphed_ms, graph_error = None, str(error).splitlines()[0]
    return dict(
        attention=attention,
        backend=model.blocks[0].attn.backend("auto", False, torch.device("cuda")),
        params=model.num_params(),
        step_ms=step_ms,
        tokens_per_s=BATCH * SEQ_LEN / (step_ms / 1e3),
        host_ms=host_ms,
        graphed_step_ms=graphed_ms,
        graphed_tokens_per_s=graphed_ms and BATCH * SEQ_LEN / (graphed_ms / 1e3),
        graph_error=graph_error,
        gpu_busy_ms=sum(kernels.values()),
        runtime_calls_per_step=calls,
        cuda_kernels_ms=dict(list(kernels.items())[:12]),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        default=None,
        help="path of the .json (suffix added) (default: results/bench_train_step_<gpu>)",
    )
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("bench_train_step.py needs a CUDA GPU", file=sys.stderr)
        sys.exit(2)
    rows = []
    for size_name, size in SIZES.items():
        for attention in ATTENTIONS:
            row = dict(size=size_name, **measure(size, attention))
            rows.append(row)
            graphed = f"{row['graphed_step_ms']:7.2f}" if row["graphed_step_ms"] else "  n/a  "
            print(
                f"{size_name:<28} {attention:<9} ({row['backend']:>5}) {row['params'] / 1e6:6.1f}M params  "
                f"eager {row['step_ms']:7.2f} ms/step (host {row['host_ms']:6.2f})  graphed {graphed}  "
                f"GPU busy {row['gpu_busy_ms']:6.2f}  calls {row['runtime_calls_per_step']}"
            )
            if row["graph_error"]:
                print(f"    not captured: {row['graph_error']}")
            for name, kernel_ms in list(row["cuda_kernels_ms"].items())[:6]:
                print(f"    {kernel_ms:7.3f} ms  {name}")
            torch.cuda.empty_cache()
    for size_name in SIZES:
        by = {r["attention"]: r for r in rows if r["size"] == size_name}
        eager = by["softpick"]["tokens_per_s"] / by["softmax"]["tokens_per_s"]
        line = f"{size_name}: softpick / softmax tokens per second, eager {eager:.3f}"
        if by["softpick"]["graphed_tokens_per_s"] and by["softmax"]["graphed_tokens_per_s"]:
            graphed = by["softpick"]["graphed_tokens_per_s"] / by["softmax"]["graphed_tokens_per_s"]
            line += f", graphed {graphed:.3f}"
        print(line + " (target 0.95)")
    report = machine_report()
    report["setup"] = dict(
        seq_len=SEQ_LEN,
        batch=BATCH,
        autocast="bfloat16",
        optimizer="AdamW(fused=True, capturable=True)",
        warmup_steps=WARMUP_STEPS,
        timed_steps=TIMED_STEPS,
        statistic="median",
    )
    report["results"] = rows
    write_json(Path(args.out or default_out("bench_train_step")).with_suffix(".json"), report)


if __name__ == "__main__":
    main()
