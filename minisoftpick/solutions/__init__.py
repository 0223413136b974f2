"""Reference solutions to the notebooks' exercises, one module per notebook.

Open these on purpose, after trying: each is written the way a learner would write it, not the
way the package does, and the checks in ``minisoftpick.checks`` accept them. They load on first use
(the kernel notebooks' modules define Triton kernels, which need TRITON_INTERPRET set first).
"""

import importlib

from ..checks import EXERCISES, module_of


def __getattr__(name: str):
    if name not in EXERCISES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f".{module_of(name)}", __name__)
    for (
        other,
        notebook,
    ) in EXERCISES.items():  # every exercise of the notebook: one may share the module's name
        if notebook == EXERCISES[name]:
            globals()[other] = getattr(module, other)
    solution = globals()[name]
    return solution


def __dir__() -> list[str]:
    return sorted([*globals(), *EXERCISES])


__all__ = list(EXERCISES)
