"""Where the data layer keeps derived files (frame indexes, decompressed .xz, the demo dataset).

Root: ``$EQUITENSOR_CACHE`` if set, else ``~/.cache/equitensor``. Entries derived from an input
file are keyed by its absolute path, size and modification time, so an edited file is re-indexed
and nothing is ever written next to the data (which may be read-only, e.g. shared datasets).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = ["atomic_write_bytes", "cache_root", "file_key"]


def cache_root() -> Path:
    """The cache folder (created on demand by callers)."""
    env = os.environ.get("EQUITENSOR_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "equitensor"


def file_key(path: str | Path) -> str:
    """A short hex key identifying this version of ``path`` (absolute path, size, mtime)."""
    path = Path(path).resolve()
    st = path.stat()
    text = f"{path}|{st.st_size}|{st.st_mtime_ns}"
    return hashlib.sha1(text.encode()).hexdigest()[:20]


def atomic_write_bytes(target: Path, write) -> Path:
    """Create ``target`` by calling ``write(fileobj)`` on a temp file, then renaming it in place
    (:func:`equitensor.atomic.atomic_write`).

    Renaming makes concurrent creators (DataLoader workers, parallel jobs) safe: readers see
    either no file or a complete one.
    """
    from ..atomic import atomic_write

    with atomic_write(target, "wb") as handle:
        write(handle)
    return Path(target)
