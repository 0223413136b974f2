"""Which tiles win: each autotuned kernel's time for every tile of its list plus CANDIDATES.

    python bench/bench_tiles.py [--out results/bench_tiles_h200]

For each case, every kernel (forward, dq, dkdv) is tuned over its committed tiles and the candidates
below, and the autotuner's median time of each tile is recorded (milliseconds, inf where a tile
does not fit). Compilation is done first, in parallel processes, into Triton's cache, since the
autotuner compiles one tile at a time. bench/NOTES.md reads the result to pick the committed lists.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import os
import sys
from pathlib import Path

import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).parent))
from bench_attention import CASES, default_out, inputs, kernel_attention, machine_report, step, write_json  # noqa: E402

from minisoftpick.kernels import flash_softpick  # noqa: E402
from minisoftpick.kernels.flash_softpick import Tile  # noqa: E402
from minisoftpick.settings import progress_disabled  # noqa: E402

CANDIDATES = {  # tried beside the committed tiles; bench/NOTES.md records what won
    "forward": (Tile(64, 64, 4, 4), Tile(128, 32, 8, 3), Tile(64, 128, 4, 3)),
    "dq": (Tile(64, 64, 4, 4), Tile(64, 32, 4, 3), Tile(64, 64, 4, 2)),
    "dkdv": (
        Tile(32, 32, 4, 2, key_rows=False),
        Tile(128, 32, 8, 3, key_rows=False),
        Tile(64, 128, 4, 2, key_rows=False),
        Tile(128, 128, 8, 2, key_rows=False),
        Tile(32, 64, 8, 2, key_rows=True),
    ),
}
KERNELS = {
    "forward": (flash_softpick.forward_kernel, flash_softpick.FORWARD_TILES),
    "dq": (flash_softpick.dq_kernel, flash_softpick.DQ_TILES),
    "dkdv": (flash_softpick.dkdv_kernel, flash_softpick.DKDV_TILES),
}
SWEPT = [c for c in CASES if c.name in ("causal D64 T4096", "causal D128 T4096", "causal D256 T4096")]


def committed(name: str) -> list[Tile]:
    listed = KERNELS[name][1]
    return [listed.safe, *listed.tuned]


def tiles(name: str) -> list[Tile]:
    return [*committed(name), *CANDIDATES[name]]


def _compile(job) -> str:
    """In a child process: launch the kernel once on tiny tensors of the case's head dim, so that
    Triton compiles it into its on-disk cache."""
    name, d, causal, tile = job
    q = torch.randn(1, 1, 16, d, device="cuda", dtype=torch.bfloat16)
    flash_softpick.forward_kernel.configs = (
        [tile.config()] if name == "forward" else [tiles("forward")[0].config()]
    )
    flash_softpick.dq_kernel.configs = [tile.config()] if name == "dq" else [tiles("dq")[0].config()]
    flash_softpick.dkdv_kernel.configs = [tile.config()] if name == "dkdv" else [tiles("dkdv")[0].config()]
    try:
        q.requires_grad_()
        flash_softpick.flash_softpick_attention(q, q, q, causal=causal).sum().backward()
        torch.cuda.synchronize()
        return "ok"
    except Exception as error:  # a tile that does not fit: the autotuner will time it as inf
        return f"{name} {tile} D{d}: {str(error).splitlines()[0][:120]}"


def precompile(cases) -> None:
    specs = {(c.d, c.causal): c for c in cases}.values()
    jobs = [(name, c.d, c.causal, tile) for c in specs for name in KERNELS for tile in tiles(name)]
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(
        max_workers=max(1, (os.cpu_count() or 2) - 2), mp_context=context
    ) as pool:
        failures = [
            r
            for r in tqdm(
                pool.map(_compile, jobs), total=len(jobs), desc="compile", disable=progress_disabled()
            )
            if r != "ok"
        ]
    print(f"precompiled {len(jobs)} kernels, {len(failures)} failed", *failures[:10], sep="\n  ")


def median_ms(timing) -> float:
    """The autotuner's timing of one config: a list of quantiles (median first), inf if it did not fit."""
    if timing is None:
        return float("inf")
    return float(timing[0] if isinstance(timing, (list, tuple)) else timing)


def sweep(cases) -> dict:
    results = {}
    for case in tqdm(cases, desc="cases", disable=progress_disabled()):
        q, k, v, dout = inputs(case)
        for name, (kernel, _) in KERNELS.items():
            kernel.configs = [tile.config() for tile in tiles(name)]
            kernel.cache.clear()
        step(kernel_attention, q, k, v, dout, case.causal, "fwd+bwd")()
        torch.cuda.synchronize()
        results[case.name] = {}
        for name, (kernel, _) in KERNELS.items():
            rows = [
                {"tile": str(tile), "ms": median_ms(kernel.configs_timings.get(config))}
                for tile, config in zip(tiles(name), kernel.configs, strict=True)
            ]
            results[case.name][name] = sorted(rows, key=lambda r: r["ms"])
        print(case.name, {name: rows[0] for name, rows in results[case.name].items()})
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", default=None, help="path of the .json (suffix added) (default: results/bench_tiles_<gpu>)"
    )
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("bench_tiles.py needs a CUDA GPU", file=sys.stderr)
        sys.exit(2)
    precompile(CASES)  # every case, so that the other benchmarks find their kernels compiled too
    report = machine_report()
    report["candidates"] = {name: [str(t) for t in c] for name, c in CANDIDATES.items()}
    report["results"] = sweep(SWEPT)
    write_json(Path(args.out or default_out("bench_tiles")).with_suffix(".json"), report)


if __name__ == "__main__":
    main()
