"""Helpers for the dataset tests: shared reference files and exact edge-set comparison.

The real reference data lives in ``../shared/data`` relative to the repository root, or wherever
``EQUITENSOR_SHARED_DATA`` points. Tests that need it skip with a message when it is absent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from .conftest import shared_data_dir

SHARED_DATA = shared_data_dir()


def shared(relative: str) -> Path:
    """Path of a shared reference file; skips the calling test when it is missing."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"reference data {path} not found (set EQUITENSOR_SHARED_DATA to the shared data folder)")
    return path


def edge_set(i, j, S) -> list[tuple]:
    """Edges as sorted (i, j, Sx, Sy, Sz) tuples, for exact comparison of neighbour lists."""
    S = np.asarray(S).astype(np.int64)
    return sorted(zip(np.asarray(i).tolist(), np.asarray(j).tolist(), *S.T.tolist()))
