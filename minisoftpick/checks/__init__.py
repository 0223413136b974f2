"""Auto-checks for the notebooks' exercises: ``msp.checks.<exercise>(fn)``.

Each check prints one line per property and raises ``CheckFailed`` (an AssertionError) on the
first failure, naming the case, where the output differs, yours vs expected, and a hint.
"""

from .attention import naive_attention, online_softpick_attention, softpick
from .core import CheckFailed

__all__ = ["CheckFailed", "naive_attention", "online_softpick_attention", "softpick"]
