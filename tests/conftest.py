"""Shared test fixtures: tiny synthetic data on the CPU, a CLI runner, a temporary working folder."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def library_logging():
    """Every test starts with the ``stemtomo`` logger as a library leaves it (no handlers, propagating, level
    unset), whatever a CLI test before it set up; ``caplog`` then sees its records in any test order."""
    logger = logging.getLogger("stemtomo")
    logger.handlers.clear()
    logger.propagate = True
    logger.setLevel(logging.NOTSET)
    yield


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh folder that is also the current directory."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def cli():
    """Invoke the stemtomo CLI in-process: ``cli("info", "x.mrc")`` → click Result."""
    from typer.testing import CliRunner

    from stemtomo.cli.app import app

    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)

    return invoke


@pytest.fixture
def one_torch_thread():
    """One intra-op torch thread for the duration of a test: the recon, noise and align tests run many small
    tensor ops, for which two threads on a shared 2-core machine were measured up to ~10x slower. Modules opt in
    with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
