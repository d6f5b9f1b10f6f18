"""Shared test fixtures: the one tolerance table, seeded RNG, location of ../shared/data."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import equitensor  # noqa: F401  (first: under e3nn 0.4.4 it lets `from e3nn import o3` load its constants)
from equitensor._dtype import default_dtype

# The suite runs with one third-party backend installed the way a plugin package installs one:
# a module plus a ``.dist-info`` declaring the ``equitensor.backends`` entry point
# (``tests/plugins``). The backend contract suite must pick it up with no other edit.
PLUGINS = Path(__file__).resolve().parent / "plugins"
if str(PLUGINS) not in sys.path:
    sys.path.append(str(PLUGINS))

#: the one tolerance table (absolute, on O(1) quantities), keyed by dtype; every numerical test uses it.
TOL = {torch.float64: 1e-10, torch.float32: 1e-4}


def shared_data_dir() -> Path:
    """``../shared/data`` beside the repository, or ``$EQUITENSOR_SHARED_DATA``."""
    env = os.environ.get("EQUITENSOR_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"reference data not found at {path} (set EQUITENSOR_SHARED_DATA)")
    return path


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Keep indexes, decompressed files, CP factors and demo data out of the user's ~/.cache."""
    monkeypatch.setenv("EQUITENSOR_CACHE", str(tmp_path_factory.getbasetemp() / "equitensor-cache"))


@pytest.fixture(autouse=True)
def _seed_torch():
    torch.manual_seed(0)
    yield


@pytest.fixture
def default_float64():
    """Build modules (and e3nn's reference tables) in float64 for 1e-10 comparisons."""
    with default_dtype(torch.float64):
        yield
