"""Fewer queries than keys (chunked prefill, decoding with a cache): the kernel against SDPA's math
backend, the only one that takes an explicit bottom-right causal mask at any length.

    python bench/bench_decode.py [--out results/bench_decode_h200]

bf16 forward only, Tk = 8192 cached keys, Tq in {1, 16, 512} new queries that see every cached key
and, causally, the new ones before them (bottom-right aligned). B = 4, 32 query heads and 8
key/value heads (GQA) of dim 128. SDPA math gets the mask as a bool tensor and k, v repeated to 32
heads (not timed); for Tq = 1 no key is hidden. Timed with triton.testing.do_bench (median);
bandwidth counts the bytes of q, k, v read and out written once.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
import triton
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).parent))
from bench_attention import TIMING, default_out, machine_report, write_json  # noqa: E402

from minisoftpick.attention import causal_mask, repeat_kv  # noqa: E402
from minisoftpick.kernels.flash_softpick import flash_softpick_attention  # noqa: E402

B, HQ, HKV, D, TK = 4, 32, 8, 128, 8192
QUERY_LENGTHS = (1, 16, 512)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", default=None, help="path of the .json (suffix added) (default: results/bench_decode_<gpu>)"
    )
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("bench_decode.py needs a CUDA GPU", file=sys.stderr)
        sys.exit(2)
    g = torch.Generator(device="cuda").manual_seed(0)
    k, v = (torch.randn(B, HKV, TK, D, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(2))
    k_rep, v_rep = repeat_kv(k, HQ // HKV), repeat_kv(v, HQ // HKV)
    rows = []
    for tq in QUERY_LENGTHS:
        q = torch.randn(B, HQ, tq, D, device="cuda", dtype=torch.bfloat16, generator=g)
        mask = causal_mask(tq, TK, "cuda")
        moved = (q.numel() * 2 + (k.numel() + v.numel())) * q.element_size()  # q and out, k and v

        def math_sdpa(q=q, mask=mask):
            with sdpa_kernel(SDPBackend.MATH):
                return F.scaled_dot_product_attention(q, k_rep, v_rep, attn_mask=mask)

        timings = {
            "flash softpick (Triton)": triton.testing.do_bench(
                lambda q=q: flash_softpick_attention(q, k, v), **TIMING
            ),
            "SDPA math (softmax)": triton.testing.do_bench(math_sdpa, **TIMING),
        }
        for method, ms in timings.items():
            rows.append(dict(tq=tq, tk=TK, method=method, ms=ms, bytes_per_s=moved / (ms / 1e3)))
            print(
                f"Tq {tq:>4}, Tk {TK}: {method:<24} {ms * 1e3:9.1f} us  {moved / (ms / 1e3) / 1e12:6.2f} TB/s"
            )
        print(
            f"Tq {tq:>4}: SDPA math / kernel time = {timings['SDPA math (softmax)'] / timings['flash softpick (Triton)']:.1f}x"
        )
    report = machine_report()
    report["setup"] = dict(
        B=B,
        Hq=HQ,
        Hkv=HKV,
        D=D,
        dtype="bfloat16",
        causal="bottom-right",
        timing=f"triton.testing.do_bench({TIMING})",
    )
    report["results"] = rows
    write_json(Path(args.out or default_out("bench_decode")).with_suffix(".json"), report)


if __name__ == "__main__":
    main()
