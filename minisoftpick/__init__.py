"""minisoftpick: softpick attention end to end (arXiv 2504.20966).

import minisoftpick as msp
msp.softpick(x, dim=-1, eps=1e-6, mask=None)
msp.naive_attention(q, k, v, causal=True, scale=None, normalizer="softpick", return_weights=False)
msp.online_softpick_attention(q, k, v, causal=True, block_size=64)
msp.flash_softpick_attention(q, k, v, causal=True, scale=None)     # Triton
"""

from . import checks, course
from .attention import causal_mask, naive_attention
from .normalizers import NORMALIZERS, masked_softmax, register_normalizer, sink_softmax, softmax1, softpick
from .online import online_softpick_attention

__version__ = "0.1.0"

__all__ = [
    "NORMALIZERS",
    "causal_mask",
    "checks",
    "course",
    "masked_softmax",
    "naive_attention",
    "online_softpick_attention",
    "register_normalizer",
    "sink_softmax",
    "softmax1",
    "softpick",
]


def __getattr__(name: str):
    """Import the Triton kernel on first use, so `import minisoftpick` works where Triton does not."""
    if name == "flash_softpick_attention":
        from .kernels.flash_softpick import flash_softpick_attention

        return flash_softpick_attention
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
