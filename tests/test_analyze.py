"""analyze.run_config: committed checkpoints trained on another machine read this checkout's data."""

from dataclasses import asdict

from minisoftpick.analyze import run_config
from minisoftpick.data import DATA_DIR
from minisoftpick.train import preset


def test_run_config_keeps_an_existing_data_dir(tmp_path):
    cfg = preset("smoke", attention="softmax", data_dir=str(tmp_path))
    assert run_config({"train_config": asdict(cfg)}) == cfg


def test_run_config_replaces_a_data_dir_missing_here(tmp_path):
    cfg = preset("smoke", attention="softmax", data_dir=str(tmp_path / "elsewhere"))
    got = run_config({"train_config": asdict(cfg)})
    assert got.data_dir == str(DATA_DIR)
    assert asdict(got) == {**asdict(cfg), "data_dir": str(DATA_DIR)}
