"""What the first cell of every notebook calls: seeds, versions, the interpreter, FAST mode.

This is the course layer (with ``checks`` and ``solutions``): the library never imports it.
"""

from __future__ import annotations

import platform
import random

import numpy as np
import torch

from . import kernels  # sets TRITON_INTERPRET=1 without a GPU, before any kernel is defined
from .checks.core import OUTCOMES, solutions_mode
from .settings import fast_mode

NOT_RUN = "not run"


def seed_everything(seed: int = 0) -> None:
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - seeds the global RNG learners call
    torch.manual_seed(seed)


def start(seed: int = 0) -> tuple[bool, torch.device]:
    """Seed everything, print the versions and modes in use; return (FAST, device)."""
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:  # no Triton wheels for macOS or Windows: notebooks 04-06 need Linux
        triton_version = "not installed"
    seed_everything(seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gpu = torch.cuda.get_device_name() if device.type == "cuda" else "none"
    interpreter = " | Triton interpreter on" if kernels.interpreting() else ""
    fast = fast_mode()
    print(f"python {platform.python_version()} | torch {torch.__version__} | triton {triton_version}")
    print(
        f"GPU: {gpu}{interpreter} | FAST={fast} | exercises: "
        f"{'reference solutions (MSP_SOLUTIONS=1)' if solutions_mode() else 'yours'}"
    )
    _show_check_failures_briefly()
    return fast, device


def _show_check_failures_briefly() -> None:
    """In IPython, print a failed exercise check as one red line instead of a traceback.

    The cell still ends in an error, so "Run all" stops there and nbval/pytest still fail.
    """
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None:
        return
    from .checks import CheckFailed

    def one_line(shell, etype, value, tb, tb_offset=None):
        message = f"\x1b[31mCheckFailed: {value}\x1b[0m"
        shell._showtraceback(etype, value, [message])
        return [message]

    shell.set_custom_exc((CheckFailed,), one_line)


def progress() -> dict[str, str]:
    """Print every exercise of the course, notebook by notebook, and what became of it in this session:
    passed, failed, fell back to the reference (the stub is unfinished), or not run. Returns the same."""
    from .checks import EXERCISES

    status = {name: OUTCOMES.get(name, NOT_RUN) for name in EXERCISES}
    width = max(map(len, EXERCISES))
    for name, notebook in EXERCISES.items():
        print(f"{notebook:26s} {name:{width}s}  {status[name]}")
    counts = {outcome: list(status.values()).count(outcome) for outcome in dict.fromkeys(status.values())}
    print(", ".join(f"{n} {outcome}" for outcome, n in counts.items()))
    return status
