"""Run-time policy read from the environment, in one place.

``MSP_FAST=1`` (set by ``make test`` and CI) asks for small presets in heavy notebook cells and quiet
progress bars. The library reads it only here; it never sets an environment variable itself.
"""

from __future__ import annotations

import os

FAST_ENV = "MSP_FAST"


def fast_mode() -> bool:
    """True when MSP_FAST=1: heavy cells pick small presets."""
    return os.environ.get(FAST_ENV, "0") == "1"


def progress_disabled() -> bool:
    """True when progress bars should stay quiet (FAST mode, as under CI)."""
    return fast_mode()
