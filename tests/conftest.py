"""Shared test set-up."""

import pytest


@pytest.fixture(autouse=True)
def learner_mode(monkeypatch):
    """Checks run the function given, not the reference solution that MSP_SOLUTIONS=1 (make test) picks."""
    monkeypatch.delenv("MSP_SOLUTIONS", raising=False)


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory):
    """A stand-in corpus prepared like the real one (the trainer's tests never need `make data`)."""
    from minisoftpick import data

    line = "What light through yonder window breaks? It is the east, and Juliet is the sun.\n"
    works = {name: f"{name.upper()}\n\n" + line * 12 for name in [*data.VAL_WORKS, "hamlet", "lear"]}
    out = tmp_path_factory.mktemp("tiny_data")
    data.write_dataset(works, out)
    return out
