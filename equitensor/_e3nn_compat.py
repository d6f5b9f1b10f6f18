"""Let e3nn 0.4.4 (mace-torch's pin) import under torch >= 2.6.

e3nn 0.4.4 reads its packaged ``constants.pt`` with ``torch.load`` at import time; the file holds
``slice`` objects, which torch >= 2.6's default ``weights_only=True`` loader refuses, so
``import e3nn.o3`` fails unless something (mace-torch does it by switching weights-only loading
off for the whole process) intervenes. Allow-listing the builtin ``slice`` is enough and keeps
weights-only loading on for everything else. Nothing happens under e3nn >= 0.5; under 0.4 an
import hook does it just before ``e3nn.o3`` is first imported, so ``import equitensor.so3`` still
does not import torch.
"""

from __future__ import annotations

import importlib.abc
import sys
from importlib import metadata


def installed_e3nn_version() -> tuple[int, int] | None:
    """``(major, minor)`` of the installed e3nn, or ``None`` when it is not installed."""
    try:
        version = metadata.version("e3nn")
    except metadata.PackageNotFoundError:
        return None
    major, minor = (int("".join(c for c in p if c.isdigit()) or 0) for p in version.split(".")[:2])
    return major, minor


class _AllowSliceBeforeE3nnO3(importlib.abc.MetaPathFinder):
    """Import hook: allow-lists ``slice`` the first time ``e3nn.o3`` is imported, then removes itself."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname == "e3nn.o3":
            import torch

            torch.serialization.add_safe_globals([slice])
            sys.meta_path.remove(self)
        return None  # the regular finders import the module


def allow_e3nn_04_constants() -> None:
    """Make ``import e3nn.o3`` work under torch >= 2.6 when e3nn < 0.5 is installed (see above)."""
    version = installed_e3nn_version()
    if version is None or version >= (0, 5) or "e3nn.o3" in sys.modules:
        return
    if not any(isinstance(finder, _AllowSliceBeforeE3nnO3) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AllowSliceBeforeE3nnO3())
