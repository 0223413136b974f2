"""The runner with Triton launchers: an unfinished kernel falls back (that `import minisoftpick` loads no
Triton is tests/test_layering.py's import-weight test)."""

import pytest
import torch

import minisoftpick as msp
import minisoftpick.kernels  # noqa: F401  (sets TRITON_INTERPRET=1 without a GPU, before triton is imported)
from minisoftpick import solutions

triton = pytest.importorskip("triton")
tl = pytest.importorskip("triton.language")


@triton.jit
def unfinished_kernel(X, Y, n_cols, x_row_stride, y_row_stride, BLOCK: tl.constexpr):
    raise NotImplementedError("write the kernel body, then delete this line")


def launch_unfinished(x):
    y = torch.empty_like(x)
    unfinished_kernel[(x.shape[0],)](x, y, x.shape[1], x.stride(0), y.stride(0), BLOCK=16)
    return y


def raises_in_the_launcher(*args):
    raise NotImplementedError("write the launcher")


@pytest.mark.parametrize("stub", [launch_unfinished, raises_in_the_launcher])
def test_an_unfinished_kernel_or_launcher_falls_back_to_the_solution(stub, capsys):
    assert msp.checks.softpick_rows(stub) is solutions.softpick_rows
    assert "not implemented yet" in capsys.readouterr().out


def test_solutions_mode_checks_the_solution(monkeypatch):
    monkeypatch.setenv("MSP_SOLUTIONS", "1")
    assert msp.checks.score_tile(raises_in_the_launcher) is solutions.score_tile
