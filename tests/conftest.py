"""Shared test set-up."""

import pytest


@pytest.fixture(autouse=True)
def learner_mode(monkeypatch):
    """Checks run the function given, not the reference solution that MSP_SOLUTIONS=1 (make test) picks."""
    monkeypatch.delenv("MSP_SOLUTIONS", raising=False)
