"""What softpick costs in training: tokens per second of one training step of the course's model,
softpick through the Triton kernel against softmax through torch SDPA.

    python bench/bench_train_step.py [--out results/bench_train_step_h200]

minisoftpick.model.Transformer at T = 2048 with 16384 tokens per step (B = 8), bf16 autocast and
fused AdamW as the trainer uses them (minisoftpick.train): forward, loss, backward, optimizer step.
Two sizes: the gpu preset's (6 layers, d_model 256, 4 heads, char vocabulary of 84) and one of about
100M parameters (12 layers, d_model 768, 12 heads, vocabulary 8192). The model picks the backend
itself (backend="auto": "flash" for softpick on CUDA, "sdpa" for softmax). Each step is timed with
CUDA events after warm-up steps, each on its own (the host waits for a step to finish before it
launches the next, so host time is not hidden behind the GPU's); the median is reported, beside
the GPU's busy time per step and its largest CUDA kernels (torch profiler): a step much longer
than its busy time waits on Python.
"""

from __future__ import annotations

import argparse
import statistics
import sys
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


def step_ms(size: dict, attention: str) -> tuple[float, int, str, dict]:
    """Median milliseconds of one training step, the parameter count, the attention backend and the
    milliseconds per step of each CUDA kernel (profiled)."""
    torch.manual_seed(0)
    model = Transformer(ModelConfig(seq_len=SEQ_LEN, attention=attention, **size)).cuda()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    idx = torch.randint(0, size["vocab_size"], (BATCH, SEQ_LEN + 1), device="cuda")
    x, y = idx[:, :-1], idx[:, 1:]

    def train_step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(x)
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(WARMUP_STEPS):
        train_step()
    times = []
    for _ in range(TIMED_STEPS):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        train_step()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    backend = model.blocks[0].attn.backend("auto", False, x.device)
    return statistics.median(times), model.num_params(), backend, kernel_breakdown(train_step, repeats=3)


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
            ms, params, backend, kernels = step_ms(size, attention)
            tokens_per_s = BATCH * SEQ_LEN / (ms / 1e3)
            gpu_ms = sum(kernels.values())
            rows.append(
                dict(
                    size=size_name,
                    attention=attention,
                    backend=backend,
                    params=params,
                    step_ms=ms,
                    tokens_per_s=tokens_per_s,
                    gpu_busy_ms=gpu_ms,
                    cuda_kernels_ms=dict(list(kernels.items())[:12]),
                )
            )
            print(
                f"{size_name:<28} {attention:<9} ({backend:>5}) {params / 1e6:6.1f}M params  {ms:7.2f} ms/step  "
                f"{tokens_per_s:10.0f} tokens/s  GPU busy {gpu_ms:6.2f} ms/step"
            )
            for name, kernel_ms in list(kernels.items())[:6]:
                print(f"    {kernel_ms:7.3f} ms  {name}")
            torch.cuda.empty_cache()
    for size_name in SIZES:
        speed = {r["attention"]: r["tokens_per_s"] for r in rows if r["size"] == size_name}
        print(
            f"{size_name}: softpick / softmax tokens per second = {speed['softpick'] / speed['softmax']:.3f} (target 0.95)"
        )
    report = machine_report()
    report["setup"] = dict(
        seq_len=SEQ_LEN,
        batch=BATCH,
        autocast="bfloat16",
        optimizer="AdamW(fused=True)",
        warmup_steps=WARMUP_STEPS,
        timed_steps=TIMED_STEPS,
        statistic="median",
    )
    report["results"] = rows
    write_json(Path(args.out or default_out("bench_train_step")).with_suffix(".json"), report)


if __name__ == "__main__":
    main()
