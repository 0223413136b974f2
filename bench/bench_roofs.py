"""The two roofs of a roofline on this GPU: bf16 matmul FLOP/s and memory bandwidth, measured.

    python bench/bench_roofs.py [--out results/bench_roofs_h200]

Matmul: C = A @ B with bf16 A, B of N x N (N = 4096, 8192, 16384), 2 N^3 FLOPs; the best of the
sizes is the compute roof. Bandwidth: a device-to-device copy of a tensor of S bytes
(S = 256 MiB to 4 GiB) reads S and writes S; the best of the sizes is the memory roof. Each timed
with triton.testing.do_bench (median). Writes <out>.json (every number, the machine, versions,
date, command) and prints a table. Notebook 06 draws its roofline from the JSON.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import triton

sys.path.insert(0, str(Path(__file__).parent))
from bench_attention import default_out, machine_report, write_json  # noqa: E402

MATMUL_SIZES = (4096, 8192, 16384)
COPY_MIB = (256, 1024, 4096)


def matmul_flops(n: int) -> float:
    a, b = (torch.randn(n, n, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    ms = triton.testing.do_bench(lambda: a @ b, warmup=25, rep=100, return_mode="median")
    return 2 * n**3 / (ms * 1e-3)


def copy_bandwidth(mib: int) -> float:
    src = torch.empty(mib * 2**20, device="cuda", dtype=torch.uint8)
    dst = torch.empty_like(src)
    ms = triton.testing.do_bench(lambda: dst.copy_(src), warmup=25, rep=100, return_mode="median")
    return 2 * src.numel() / (ms * 1e-3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", default=None, help="path prefix of the .json (default: results/bench_roofs_<gpu>)"
    )
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("bench_roofs.py needs a CUDA GPU", file=sys.stderr)
        sys.exit(2)
    matmul = {n: matmul_flops(n) for n in MATMUL_SIZES}
    copy = {mib: copy_bandwidth(mib) for mib in COPY_MIB}
    report = machine_report()
    report.update(
        bf16_matmul_flops={str(n): f for n, f in matmul.items()},
        copy_bytes_per_s={str(m): b for m, b in copy.items()},
        peak_flops=max(matmul.values()),
        bandwidth_bytes_per_s=max(copy.values()),
    )
    write_json(Path(args.out or default_out("bench_roofs")).with_suffix(".json"), report)
    print(report["machine"])
    for n, f in matmul.items():
        print(f"bf16 matmul {n:>5} x {n:<5}  {f / 1e12:7.1f} TFLOP/s")
    for m, b in copy.items():
        print(f"copy {m:>5} MiB            {b / 1e12:7.2f} TB/s (read + write)")


if __name__ == "__main__":
    main()
