"""Shared test set-up: learner mode, seeded generators, a tiny corpus, and ``assert_rejected`` for the checks."""

import pytest
import torch

from minisoftpick.checks import CheckFailed


@pytest.fixture(autouse=True)
def learner_mode(monkeypatch):
    """Checks run the function given, not the reference solution that MSP_SOLUTIONS=1 (make test) picks."""
    monkeypatch.delenv("MSP_SOLUTIONS", raising=False)


@pytest.fixture
def rng():
    """A torch.Generator seeded with 0: a test draws the same numbers whatever ran before it."""
    return torch.Generator().manual_seed(0)


@pytest.fixture
def assert_rejected(capsys):
    """assert_rejected(check, wrong, property_name): the check fails ``wrong`` at that property, in one line."""

    def rejected(check, wrong, property_name: str) -> str:
        capsys.readouterr()
        with pytest.raises(CheckFailed) as failure:
            check(wrong)
        message = str(failure.value)
        assert message.startswith(f"{check.__name__}: {property_name} failed on "), message
        assert "Hint: " in message and "\n" not in message, message
        assert f"\u2717 {property_name}" in capsys.readouterr().out
        return message

    return rejected


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory):
    """A stand-in corpus prepared like the real one (the trainer's tests never need `make data`)."""
    from minisoftpick import data

    line = "What light through yonder window breaks? It is the east, and Juliet is the sun.\n"
    works = {name: f"{name.upper()}\n\n" + line * 12 for name in [*data.VAL_WORKS, "hamlet", "lear"]}
    out = tmp_path_factory.mktemp("tiny_data")
    data.write_dataset(works, out)
    return out
