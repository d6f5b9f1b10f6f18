"""Shared by the cached table builders of ``so3``."""

from __future__ import annotations

import numpy as np


def read_only(array: np.ndarray) -> np.ndarray:
    """Mark a cached table immutable, so that no caller can change what the next one receives."""
    array.setflags(write=False)
    return array
