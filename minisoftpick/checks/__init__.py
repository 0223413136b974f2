"""Auto-checks for the notebooks' exercises: ``msp.checks.<exercise>(fn)``.

Each check prints one line per property and raises ``CheckFailed`` (an AssertionError) on the
first failure, naming the case, where the output differs, yours vs expected, and a hint.
"""

from .attention import naive_attention, online_softpick_attention, softpick, softpick_jacobian
from .core import CheckFailed
from .flash import flash_forward, softpick_score_grad
from .metrics import kurtosis, sink_rate
from .quant import quantize_rtn
from .training import learning_rate
from .triton_primer import score_tile, softpick_rows

__all__ = [
    "CheckFailed",
    "flash_forward",
    "kurtosis",
    "learning_rate",
    "naive_attention",
    "online_softpick_attention",
    "quantize_rtn",
    "score_tile",
    "sink_rate",
    "softpick",
    "softpick_jacobian",
    "softpick_rows",
    "softpick_score_grad",
]
