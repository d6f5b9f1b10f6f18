"""Building modules under a chosen default dtype."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[torch.dtype]:
    """Set ``torch``'s default floating dtype to ``dtype`` inside the block and restore the
    previous one on exit, also when the block raises; yields the previous dtype.

    Parameters and buffers created in the block (``torch.randn``, ``torch.tensor`` of floats,
    modules that build their tables in the default dtype) then come out in ``dtype``.
    """
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield previous
    finally:
        torch.set_default_dtype(previous)
