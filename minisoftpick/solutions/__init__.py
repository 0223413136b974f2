"""Reference solutions to the notebooks' exercises, one module per notebook.

Open these on purpose, after trying: each is written the way a learner would write it, not the
way the package does, and the checks in ``minisoftpick.checks`` accept them. They load on first use
(the kernel notebooks' modules define Triton kernels, which need TRITON_INTERPRET set first).
"""

from ..checks import EXERCISES, load_exercise


def __getattr__(name: str):
    return load_exercise(name, __name__, globals())


def __dir__() -> list[str]:
    return sorted([*globals(), *EXERCISES])


__all__ = list(EXERCISES)
