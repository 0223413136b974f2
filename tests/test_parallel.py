"""Several processes (torchrun, gloo on the CPU): DDP and FSDP2 follow the loss curve of one process
with the same global batch, and checkpoints resume on another number of processes (2 -> 1, 1 -> 2).

Tolerance: losses agree to a relative 1e-4 and weights to rtol 1e-4 / atol 1e-5. Two processes sum
gradients in another order than one process does (float rounding), and nothing else differs.
Every two-process training runs inside one torchrun launch (one process group), to keep this file short.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from minisoftpick import train

# Steps 0-2 lie inside the smoke preset's 4-step warm-up, where the learning rate does not depend on
# max_steps: a run stopped at step 3 and resumed to 6 then equals a straight run of 6 steps.
STEPS, STOP = 6, 3
assert STOP < train.PRESETS["smoke"].warmup_steps
TOLERANCE = dict(rtol=1e-4, atol=1e-5)

WORKER = """
    import json, sys
    import torch.distributed as dist
    from minisoftpick.train import parse_args, train
    dist.init_process_group("gloo")  # once: train() uses it and leaves it open
    for flags in json.loads(sys.argv[1]):
        train(parse_args(flags))
    dist.destroy_process_group()
"""


def flags(data_dir, out, steps, *extra):
    return [
        *("--preset", "smoke", "--device", "cpu", "--data-dir", str(data_dir), "--out", str(out)),
        *("--max-steps", str(steps), "--log-interval", "1", "--checkpoint-interval", "100"),
        *extra,
    ]


def curve(out):
    return [json.loads(line)["loss"] for line in (out / train.LOG).read_text().splitlines()]


def assert_same_run(out, reference):
    """Same loss at every step and (nearly) the same final weights and optimizer moments."""
    assert len(curve(out)) == len(curve(reference)) == STEPS
    assert curve(out) == pytest.approx(curve(reference), rel=TOLERANCE["rtol"])
    a, b = train.read_checkpoint(out), train.read_checkpoint(reference)
    assert a["step"] == b["step"] == STEPS
    assert a["model"].keys() == b["model"].keys()
    for name, weight in b["model"].items():
        torch.testing.assert_close(a["model"][name], weight, **TOLERANCE, msg=name)
    for name, moments in b["optimizer"]["state"].items():
        torch.testing.assert_close(a["optimizer"]["state"][name]["exp_avg"], moments["exp_avg"], **TOLERANCE)


@pytest.fixture(scope="module")
def runs(tiny_data_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("parallel")
    train.main(flags(tiny_data_dir, root / "single", STEPS))
    train.main(flags(tiny_data_dir, root / "one_then_two", STOP))
    two_process_runs = [
        flags(tiny_data_dir, root / "ddp", STEPS, "--parallel", "ddp"),
        flags(tiny_data_dir, root / "fsdp", STEPS, "--parallel", "fsdp"),
        flags(tiny_data_dir, root / "two_then_one", STOP, "--parallel", "fsdp"),
        flags(tiny_data_dir, root / "one_then_two", STEPS, "--parallel", "fsdp", "--resume"),
    ]
    script = root / "worker.py"
    script.write_text(textwrap.dedent(WORKER))
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    env = {**os.environ, "MSP_FAST": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [*launch, str(script), json.dumps(two_process_runs)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    train.main(flags(tiny_data_dir, root / "two_then_one", STEPS, "--resume"))
    return root


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_two_processes_follow_one_process(runs, mode):
    assert_same_run(runs / mode, runs / "single")
    single = train.read_checkpoint(runs / "single")
    assert single["train_config"]["parallel"] == "ddp"
    assert train.read_checkpoint(runs / mode)["train_config"]["parallel"] == mode


def test_a_sharded_run_resumes_on_one_process(runs):
    assert_same_run(runs / "two_then_one", runs / "single")


def test_a_one_process_run_resumes_sharded_on_two(runs):
    assert_same_run(runs / "one_then_two", runs / "single")


def test_the_checkpoint_holds_full_unsharded_tensors(runs):
    state = train.read_checkpoint(runs / "fsdp")
    single = train.read_checkpoint(runs / "single")
    for name, weight in single["model"].items():
        assert type(state["model"][name]) is torch.Tensor and state["model"][name].shape == weight.shape
    model = train.load_checkpoint(runs / "fsdp")  # loads like any checkpoint
    assert model.num_params() == sum(w.numel() for w in single["model"].values())
