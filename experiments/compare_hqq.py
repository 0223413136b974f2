"""minisoftpick's quantize_hqq against the hqq library's quantizer, on the same trained weights.

The hqq package (0.2.8.post1) ships only as a source distribution whose build wants CUDA and
transformers, so it is not a dependency; its quantizer runs on a CPU from the unpacked sources:

    pip download --no-deps hqq==0.2.8.post1 && tar xzf hqq-0.2.8.post1.tar.gz
    pip install --target /tmp/hqq-extra termcolor
    PYTHONPATH=hqq-0.2.8.post1:/tmp/hqq-extra python experiments/compare_hqq.py results/study/study-softmax.pt

For every linear layer (lm_head excepted) and 4, 3 and 2 bits, group 64: the mean |w - w_hat| of
RTN, of the library's HQQ (Quantizer.quantize with optimize=True, then dequantize) and of ours,
and how far our w_hat is from the library's (relative Frobenius norm).
"""

import argparse

import torch
from hqq.core.quantize import Quantizer

from minisoftpick.cli import usage_errors
from minisoftpick.quant import quantize_hqq, quantize_rtn, quantized_linears
from minisoftpick.train import load_checkpoint


def library_hqq(w: torch.Tensor, bits: int, group_size: int) -> torch.Tensor:
    q, meta = Quantizer.quantize(w, nbits=bits, group_size=group_size, optimize=True, axis=1, device="cpu")
    return Quantizer.dequantize(q, meta).reshape(w.shape).float()


@usage_errors()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--group-size", type=int, default=64)
    args = parser.parse_args()
    model = load_checkpoint(args.checkpoint)
    print(f"{args.checkpoint}, group {args.group_size}: mean |w - w_hat| over all quantized linear layers")
    print(
        "bits | RTN       | HQQ (hqq library) | HQQ (minisoftpick) | layers where ours <= library | ours vs library, rel. diff"
    )
    for bits in (4, 3, 2):
        errors, wins, diffs = {"rtn": [], "lib": [], "ours": []}, 0, []
        for _, linear in quantized_linears(model):
            w = linear.weight.detach().float()
            results = {
                "rtn": quantize_rtn(w, bits, args.group_size),
                "lib": library_hqq(w, bits, args.group_size),
                "ours": quantize_hqq(w, bits, args.group_size),
            }
            for key, w_hat in results.items():
                errors[key].append((w - w_hat).abs().mean().item())
            wins += errors["ours"][-1] <= errors["lib"][-1]
            diffs.append(((results["ours"] - results["lib"]).norm() / results["lib"].norm()).item())
        mean = {key: sum(v) / len(v) for key, v in errors.items()}
        print(
            f"{bits:4d} | {mean['rtn']:.3e} | {mean['lib']:.3e}         | {mean['ours']:.3e}          | "
            f"{wins} of {len(diffs)}                     | {min(diffs):.3f} to {max(diffs):.3f}"
        )


if __name__ == "__main__":
    main()
