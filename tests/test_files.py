"""Files the package writes and reads: atomic writes under errors and Ctrl-C, damaged or foreign
checkpoints, resume of finished, interrupted and weights-only runs, damaged meta.json and token files."""

import json
import shutil

import numpy as np
import pytest
import torch

from minisoftpick import data, files, train
from minisoftpick.train import preset


def leftovers(folder):
    return [p for p in folder.rglob("*") if p.name.startswith(".tmp-")]


# ---- atomic writes -------------------------------------------------------------------------------


@pytest.mark.parametrize("error", [ValueError, KeyboardInterrupt])
def test_an_interrupted_write_leaves_the_old_file_and_no_temporary(tmp_path, error):
    target = tmp_path / "sub" / "result.json"
    files.write_text(target, "old")
    with pytest.raises(error), files.atomic_path(target) as tmp:
        tmp.write_text("half of the new")
        raise error
    assert target.read_text() == "old" and not leftovers(tmp_path)
    files.write_text(target, "new")
    assert target.read_text() == "new" and not leftovers(tmp_path)


def test_the_temporary_name_keeps_the_suffix_and_the_folder(tmp_path):
    tmp = files.temporary_name(tmp_path / "plot.png")
    assert tmp.parent == tmp_path and tmp.suffix == ".png" and tmp.name.startswith(".tmp-")


def test_a_prepare_interrupted_while_writing_leaves_nothing_partial(tmp_path, monkeypatch, tiny_data_dir):
    works = {name: f"{name}\n" + "To be, or not to be.\n" * 5 for name in [*data.VAL_WORKS, "hamlet"]}
    real_write = files.Path.write_bytes
    calls = []

    def ctrl_c_on_the_third_file(self, blob):
        calls.append(self)
        if len(calls) == 3:
            real_write(self, blob[: len(blob) // 2])
            raise KeyboardInterrupt
        return real_write(self, blob)

    monkeypatch.setattr(files.Path, "write_bytes", ctrl_c_on_the_third_file)
    with pytest.raises(KeyboardInterrupt):
        data.write_dataset(works, tmp_path)
    assert not leftovers(tmp_path) and not (tmp_path / "meta.json").exists()
    monkeypatch.undo()
    with pytest.raises(FileNotFoundError, match="meta.json is missing"):
        data.check(tmp_path)


# ---- checkpoints -----------------------------------------------------------------------------------


def smoke(data_dir, out, **overrides):
    return preset("smoke", data_dir=str(data_dir), out=str(out), device="cpu", **overrides)


@pytest.fixture(scope="module")
def finished_run(tiny_data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("finished")
    train.train(smoke(tiny_data_dir, out, max_steps=4, eval_interval=2, checkpoint_interval=2))
    return out


def write_damaged_files(folder, run):
    """Files that are not checkpoints, each the way a user might end up with one."""
    good = (run / train.CHECKPOINT).read_bytes()
    state = train.read_checkpoint(run)
    (folder / "empty.pt").write_bytes(b"")
    (folder / "truncated.pt").write_bytes(good[: len(good) // 2])
    (folder / "tokens.bin").write_bytes(np.arange(1000, dtype=np.uint16).tobytes())  # a token file
    torch.save(state["model"], folder / "state_dict.pt")
    torch.save(torch.zeros(3), folder / "tensor.pt")
    torch.save({"model": state["model"], "step": 4}, folder / "partial_dict.pt")
    torch.save([1, 2], folder / "list.pt")


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("empty.pt", "is empty"),
        ("truncated.pt", "not a checkpoint written by minisoftpick.train"),
        ("tokens.bin", "not a checkpoint written by minisoftpick.train"),
        ("state_dict.pt", "bare state_dict"),
        ("tensor.pt", "holds a Tensor"),
        ("partial_dict.pt", "a dict without"),
        ("list.pt", "holds a list"),
    ],
)
def test_a_damaged_or_foreign_checkpoint_names_the_file_and_the_fix(finished_run, tmp_path, name, says):
    write_damaged_files(tmp_path, finished_run)
    with pytest.raises(ValueError, match=says) as error:
        train.load_checkpoint(tmp_path / name)
    message = str(error.value)
    assert str(tmp_path / name) in message and "-m minisoftpick.train --out DIR" in message
    assert "\n" not in message


def test_an_interrupted_checkpoint_write_keeps_the_previous_checkpoint(finished_run, tmp_path, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    before = (run / train.CHECKPOINT).read_bytes()

    def save_then_ctrl_c(obj, path):
        open(path, "wb").write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(train.torch, "save", save_then_ctrl_c)
    model = train.load_checkpoint(run)
    with pytest.raises(KeyboardInterrupt):
        train.save_weights(run, run / train.CHECKPOINT)
    with pytest.raises(KeyboardInterrupt):
        train._save_checkpoint(
            run / train.CHECKPOINT,
            model,
            torch.optim.AdamW(model.parameters()),
            smoke("d", run),
            4,
            0.0,
            True,
        )
    assert (run / train.CHECKPOINT).read_bytes() == before and not leftovers(run)


def test_resuming_a_finished_run_is_a_no_op_that_says_so(finished_run, tmp_path, tiny_data_dir, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    model = train.train(
        smoke(tiny_data_dir, run, max_steps=4, eval_interval=2, checkpoint_interval=2, resume=True)
    )
    assert "already finished at step 4" in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
    for name, weight in train.read_checkpoint(run)["model"].items():
        assert torch.equal(model.state_dict()[name], weight)


def test_resume_rewrites_the_log_after_the_checkpoint_and_drops_a_cut_line(
    tiny_data_dir, tmp_path, monkeypatch
):
    cfg = dict(max_steps=4, log_interval=1, eval_interval=2, checkpoint_interval=2)
    straight = tmp_path / "straight"
    train.train(smoke(tiny_data_dir, straight, **cfg))
    real_generator = train.step_generator

    def ctrl_c_at_step_3(seed, step):
        if step == 3:
            raise KeyboardInterrupt
        return real_generator(seed, step)

    run = tmp_path / "run"
    monkeypatch.setattr(train, "step_generator", ctrl_c_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        train.train(smoke(tiny_data_dir, run, **cfg))
    monkeypatch.undo()
    log = run / train.LOG
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2, 3]  # checkpoint: 2
    with open(log, "a") as f:
        f.write('{"step": 4, "lo')  # a line cut short by a crash
    train.train(smoke(tiny_data_dir, run, resume=True, **cfg))
    steps = [json.loads(line)["step"] for line in log.read_text().splitlines()]
    losses = [json.loads(line)["loss"] for line in log.read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    assert losses == [json.loads(line)["loss"] for line in (straight / train.LOG).read_text().splitlines()]


def test_a_checkpoint_of_an_older_version_still_resumes(tiny_data_dir, tmp_path):
    """Before --parallel the optimizer state was saved by position (torch's own format)."""
    cfg = dict(max_steps=3, log_interval=1, checkpoint_interval=2)
    straight, old = tmp_path / "straight", tmp_path / "old"
    train.train(smoke(tiny_data_dir, straight, **cfg))
    train.train(smoke(tiny_data_dir, old, **{**cfg, "max_steps": 2}))
    state = train.read_checkpoint(old)
    model = train.load_checkpoint(old)
    optimizer = train._optimizer(model, smoke(tiny_data_dir, old), torch.device("cpu"))
    train.set_optimizer_state_dict(model, optimizer, state["optimizer"])
    state["optimizer"] = optimizer.state_dict()
    assert list(state["optimizer"]["state"])[0] == 0  # by position
    torch.save(state, old / train.CHECKPOINT)
    train.train(smoke(tiny_data_dir, old, resume=True, **cfg))
    for name, weight in train.read_checkpoint(straight)["model"].items():
        torch.testing.assert_close(train.read_checkpoint(old)["model"][name], weight, rtol=0, atol=0)


def test_resume_from_a_weights_only_copy_says_what_it_needs(finished_run, tmp_path, tiny_data_dir):
    run = tmp_path / "run"
    train.save_weights(finished_run, run / train.CHECKPOINT)
    with pytest.raises(ValueError, match="weights-only copy"):
        train.train(smoke(tiny_data_dir, run, max_steps=8, resume=True))


# ---- meta.json and token files ---------------------------------------------------------------------


@pytest.fixture
def data_copy(tiny_data_dir, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(tiny_data_dir, copy)
    return copy


def test_a_whole_data_folder_checks_out(data_copy):
    data.check(data_copy)
    assert data.read_meta(data_copy)["tokenizers"]["char"]["vocab_size"] > 0


def test_a_truncated_meta_json_names_the_command_that_rebuilds_it(data_copy):
    meta = data_copy / "meta.json"
    meta.write_bytes(meta.read_bytes()[:200])
    with pytest.raises(ValueError, match=r"meta.json is damaged \(not JSON.*minisoftpick.data prepare --out"):
        data.load_tokens("train", "char", data_copy)


@pytest.mark.parametrize(
    "damage",
    [
        lambda meta: meta["tokenizers"].pop("bpe"),
        lambda meta: meta["tokenizers"]["char"]["files"].pop("val.bin"),
        lambda meta: meta["tokenizers"]["char"]["files"]["train.bin"].pop("sha256"),
        lambda meta: meta["tokenizers"]["char"].update(vocab_size="84"),
        lambda meta: meta.clear(),
    ],
    ids=["no bpe", "no val.bin", "no sha256", "vocab size a string", "empty"],
)
def test_an_incomplete_meta_json_is_refused(data_copy, damage):
    path = data_copy / "meta.json"
    meta = json.loads(path.read_text())
    damage(meta)
    path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="meta.json is incomplete.*minisoftpick.data prepare --out"):
        data.read_meta(data_copy)


def test_a_json_list_is_not_a_meta_json(data_copy):
    (data_copy / "meta.json").write_text("[]")
    with pytest.raises(ValueError, match="incomplete"):
        data.read_meta(data_copy)


@pytest.mark.parametrize("filename", ["train.bin", "val.bin", "tokenizer.json"])
def test_check_notices_a_missing_or_corrupt_token_file_beside_a_good_meta_json(data_copy, filename):
    path = data_copy / "bpe" / filename
    blob = path.read_bytes()
    path.write_bytes(blob[:-1] + bytes([blob[-1] ^ 1]))
    with pytest.raises(ValueError, match=f"bpe/{filename} is corrupt"):
        data.check(data_copy)
    path.unlink()
    with pytest.raises(FileNotFoundError, match=f"bpe/{filename} is missing"):
        data.check(data_copy)


def test_the_default_folder_names_make_data(monkeypatch, tmp_path):
    monkeypatch.setattr(data, "DATA_DIR", tmp_path)
    assert "make data" in data.how_to_fix(tmp_path)
    assert "make data" not in data.how_to_fix(tmp_path / "elsewhere")
