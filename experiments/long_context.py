"""Passkey retrieval and attention mass as the context grows, for trained passkey models.

    python experiments/long_context.py runs/passkey-softmax runs/passkey-softpick ... \
        --lengths 256 512 1024 2048 4096 --n 128 --out results/long_context.json

For each run: exact-match passkey accuracy per length (``synthetic.passkey_accuracy``) and, per
layer, the mean total attention weight of the rows (``synthetic.attention_mass_by_length``)
averaged over heads and query positions, and at the last query (the one that must retrieve).
"""

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from minisoftpick import synthetic
from minisoftpick.cli import usage_errors
from minisoftpick.files import write_text
from minisoftpick.train import load_checkpoint


def row_mass(model, seq_len: int, generator: torch.Generator, batch_size: int = 4) -> dict:
    device = next(model.parameters()).device
    x, _ = synthetic.passkey_batch(batch_size, seq_len, generator=generator)
    with torch.no_grad():
        _, capture = model(x.to(device), capture=True)
    masses = [synthetic.attention_mass_by_length(w) for w in capture.attn]  # each [H, T]
    return {
        "mean": [m.mean().item() for m in masses],
        "last_query": [m[:, -1].mean().item() for m in masses],
    }


@usage_errors()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders or checkpoints of passkey models")
    parser.add_argument("--lengths", nargs="+", type=int, default=[256, 512, 1024, 2048, 4096])
    parser.add_argument("--n", type=int, default=128, help="sequences per length")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    report = {
        "command": "python experiments/long_context.py " + " ".join(map(str, args.runs)),
        "machine": torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu",
        "date": time.strftime("%Y-%m-%d"),
        "lengths": args.lengths,
        "models": {},
    }
    for run in args.runs:
        model = load_checkpoint(run, device)
        name = model.config.attention
        generator = torch.Generator().manual_seed(args.seed)
        accuracy = synthetic.passkey_accuracy(model, args.lengths, generator=generator, n=args.n)
        mass = {length: row_mass(model, length, generator) for length in args.lengths}
        report["models"][name] = {"run": str(run), "accuracy": accuracy, "row_mass": mass}
        print(name, {length: round(a, 3) for length, a in accuracy.items()})
    write_text(args.out, json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
