"""Reference solutions to the notebooks' exercises, one module per notebook.

Open these on purpose, after trying: each is written the way a learner would write it, not the
way the package does, and the checks in ``minisoftpick.checks`` accept them.
"""

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


def __getattr__(name: str):
    """Notebook 04's and 05's launchers, imported on first use: their modules define Triton kernels."""
    if name in ("score_tile", "softpick_rows"):
        from . import triton_primer

        return getattr(triton_primer, name)
    if name == "flash_forward":
        from .flash_forward import flash_forward

        globals()["flash_forward"] = flash_forward  # the import bound this name to the submodule
        return flash_forward
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
