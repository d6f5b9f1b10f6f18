"""Shared helpers for the dataset tests (imported explicitly; not an auto-loaded conftest).

The real reference data lives in ``../shared/data`` relative to the repository root, or wherever
``EQUITENSOR_SHARED_DATA`` points. Tests that need it skip with a message when it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

SHARED_DATA = Path(
    os.environ.get("EQUITENSOR_SHARED_DATA", Path(__file__).parents[1].parent / "shared" / "data")
)


def shared(relative: str) -> Path:
    """Path of a shared reference file; skips the calling test when it is missing."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"reference data {path} not found (set EQUITENSOR_SHARED_DATA to the shared data folder)")
    return path


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Keep indexes, decompressed files and demo data out of the user's ~/.cache."""
    monkeypatch.setenv("EQUITENSOR_CACHE", str(tmp_path_factory.getbasetemp() / "equitensor-cache"))


def edge_set(i, j, S) -> list[tuple]:
    """Edges as sorted (i, j, Sx, Sy, Sz) tuples, for exact comparison of neighbour lists."""
    S = np.asarray(S).astype(np.int64)
    return sorted(zip(np.asarray(i).tolist(), np.asarray(j).tolist(), *S.T.tolist()))
