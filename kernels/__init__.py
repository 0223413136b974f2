"""Triton kernels, installed as ``minisoftpick.kernels``.

Without a CUDA GPU the kernels run through the Triton interpreter: importing this package sets
TRITON_INTERPRET=1 (unless already set) before any kernel is defined, since Triton reads it when
``@triton.jit`` decorates a function.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def interpreting() -> bool:
    """True when Triton kernels run through the interpreter (on the CPU)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def kernel_device() -> str:
    """Where tensors for the kernels must live here: "cpu" under the interpreter, else "cuda"."""
    return "cpu" if interpreting() else "cuda"
