"""minisoftpick: softpick attention end to end (arXiv 2504.20966).

import minisoftpick as msp
msp.softpick(x, dim=-1, eps=msp.DEFAULT_EPS, mask=None)
msp.naive_attention(q, k, v, causal=True, scale=None, eps=msp.DEFAULT_EPS, normalizer="softpick",
                    return_weights=False)
msp.online_softpick_attention(q, k, v, causal=True, scale=None, eps=msp.DEFAULT_EPS, block_size=64)
msp.flash_softpick_attention(q, k, v, causal=True, scale=None)     # Triton
@msp.register_normalizer("mine") def mine(scores, mask): ...      # then attention="mine" anywhere
"""

import importlib

from .attention import causal_mask, naive_attention
from .normalizers import (
    DEFAULT_EPS,
    NORMALIZERS,
    masked_softmax,
    register_normalizer,
    sink_softmax,
    softmax1,
    softpick,
)
from .online import online_softpick_attention

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_EPS",
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


# Loaded on first use, so that `import minisoftpick` stays light (no Triton, no checks, no environment
# variables set) and works where Triton does not: the course layer (checks, course, solutions) loads
# when a notebook asks for it, the kernel when it is first called.
_LAZY_MODULES = ("checks", "course", "solutions")


def __getattr__(name: str):
    if name in _LAZY_MODULES:
        return importlib.import_module(f".{name}", __name__)
    if name == "flash_softpick_attention":
        from .kernels.flash_softpick import flash_softpick_attention

        return flash_softpick_attention
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
