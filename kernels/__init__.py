"""Triton kernels, installed as ``minisoftpick.kernels``.

Without a CUDA GPU the kernels run through the Triton interpreter: importing this package sets
TRITON_INTERPRET=1 (unless already set) before any kernel is defined, since Triton reads it when
``@triton.jit`` decorates a function, its own library functions (tl.sum, tl.max, ...) included.
"""

import os
import sys

import torch

# Set here only when triton was already imported without it: then triton's own library functions
# were compiled for a GPU and the interpreter cannot run them (check_interpreter_ready says so).
_INTERPRETER_SET_AFTER_TRITON = False
if not torch.cuda.is_available() and "TRITON_INTERPRET" not in os.environ:
    _INTERPRETER_SET_AFTER_TRITON = "triton" in sys.modules
    os.environ["TRITON_INTERPRET"] = "1"


def interpreting() -> bool:
    """True when Triton kernels run through the interpreter (on the CPU): Triton's own switch (or,
    where triton is not installed, the environment variable it reads)."""
    try:
        import triton
    except ImportError:
        return os.environ.get("TRITON_INTERPRET", "0") == "1"
    return bool(triton.knobs.runtime.interpret)


def kernel_device() -> str:
    """Where tensors for the kernels must live here: "cpu" under the interpreter, else "cuda"."""
    return "cpu" if interpreting() else "cuda"


def check_interpreter_ready() -> None:
    """RuntimeError, before any launch, when the interpreter was switched on after triton's import."""
    if interpreting() and _INTERPRETER_SET_AFTER_TRITON:
        raise RuntimeError(
            "triton was imported before minisoftpick.kernels on a machine without a GPU, so the Triton "
            "interpreter cannot run the kernel: import minisoftpick first, or set TRITON_INTERPRET=1 "
            "before importing triton"
        )
