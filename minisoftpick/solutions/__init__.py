"""Reference solutions to the notebooks' exercises, one module per notebook.

Open these on purpose, after trying: each is written the way a learner would write it, not the
way the package does, and the checks in ``minisoftpick.checks`` accept them.
"""

import importlib

from .flash_backward import softpick_score_grad
from .naive_attention import naive_attention
from .online_softpick import online_softpick_attention
from .quantization import quantize_rtn
from .sinks_and_activations import kurtosis, sink_rate
from .softpick_math import softpick, softpick_jacobian
from .training import learning_rate

__all__ = [
    "kurtosis",
    "learning_rate",
    "naive_attention",
    "online_softpick_attention",
    "quantize_rtn",
    "sink_rate",
    "softpick",
    "softpick_jacobian",
    "softpick_score_grad",
]


# Notebook 04's and 05's launchers, imported on first use: their modules define Triton kernels.
LAZY = {"score_tile": "triton_primer", "softpick_rows": "triton_primer", "flash_forward": "flash_forward"}


def __getattr__(name: str):
    if name not in LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    solution = getattr(importlib.import_module(f".{LAZY[name]}", __name__), name)
    globals()[name] = solution  # also replaces a submodule of the same name that the import bound here
    return solution
