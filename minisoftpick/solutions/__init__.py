"""Reference solutions to the notebooks' exercises, one module per notebook.

Open these on purpose, after trying: each is written the way a learner would write it, not the
way the package does, and the checks in ``minisoftpick.checks`` accept them.
"""

from .naive_attention import naive_attention
from .online_softpick import online_softpick_attention
from .softpick_math import softpick

__all__ = ["naive_attention", "online_softpick_attention", "softpick"]
