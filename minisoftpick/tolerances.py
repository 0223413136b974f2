"""How close is close enough: the one tolerance table that tests, exercise checks and notebooks read.

An entry is an elementwise ``|yours - expected| <= atol + rtol * |expected|`` (``torch.isclose``). Why
each is what it is:

- ``CHECK``: an exercise's answer against a float64 reference: loose enough that where eps enters a
  shifted denominator (a change of about eps / D) does not matter, tight enough for any real mistake.
- ``EXACT``: structural zeros (a score <= 0 gets weight exactly 0) are exact in any precision.
- ``FLOAT64``: a float64 computation against a float64 reference, different order of operations.
- ``FLOAT32``: float32 against a float64 reference, a few roundings of 2^-24 per output, sums of
  tens of terms.
- ``HALF``: float16 output against the float16-rounded reference (one rounding of 2^-11, twice).
- ``KERNEL_INTERPRETER``: a Triton kernel in float32 through the interpreter, where ``tl.dot`` is
  IEEE float32 (a sum of up to D products per score, then the online rescales).
- ``KERNEL_TF32``: the same kernel on an NVIDIA GPU, where float32 ``tl.dot`` reads its inputs with
  TF32's 10-bit mantissa (relative error about 2^-11 per product); attention outputs average those
  errors over many keys. ``SCORES_TF32``: raw scores q.k of such a dot, where they do not average.
- ``SCHEDULE``: a learning rate computed in Python floats, same formula, different order.
- ``STATISTIC``: a float64 statistic of many numbers (kurtosis), relative only. ``STATISTIC_OF_1E5``:
  the same over 100,000 numbers, where dividing by n or n - 1 differs by about 1e-5 and must not matter.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tolerance:
    atol: float
    rtol: float

    def kwargs(self) -> dict[str, float]:
        """As keyword arguments of torch.isclose / torch.testing.assert_close."""
        return {"atol": self.atol, "rtol": self.rtol}


CHECK = Tolerance(1e-5, 1e-4)
EXACT = Tolerance(0.0, 0.0)
FLOAT64 = Tolerance(1e-9, 1e-7)
FLOAT32 = Tolerance(1e-5, 1e-4)
HALF = Tolerance(2e-3, 2e-3)
KERNEL_INTERPRETER = Tolerance(1e-4, 1e-4)
KERNEL_TF32 = Tolerance(5e-3, 5e-3)
SCORES_TF32 = Tolerance(2e-2, 2e-2)
SCHEDULE = Tolerance(1e-12, 1e-9)
STATISTIC = Tolerance(0.0, 1e-6)
STATISTIC_OF_1E5 = Tolerance(0.0, 1e-3)


def kernel(interpreting: bool, raw_scores: bool = False) -> Tolerance:
    """The tolerance for a float32 Triton kernel: IEEE dots in the interpreter, TF32 dots on a GPU."""
    if interpreting:
        return KERNEL_INTERPRETER
    return SCORES_TF32 if raw_scores else KERNEL_TF32
