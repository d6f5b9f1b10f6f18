"""Crash-safe output files: every file equitensor writes for the user goes through :func:`atomic_write`.

A file is written to a temporary file in the same folder (``<name>.<random>.tmp``), flushed and
fsynced, then renamed over the target, and the folder is fsynced so the rename itself survives a
power cut. A reader therefore sees either the previous complete file or the new complete file,
never a truncated one, whenever the writer is killed. Temporary files left by a killed writer
are removed by :func:`remove_stale_temporaries` on the next start.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

__all__ = ["OutputError", "atomic_write", "check_writable", "remove_stale_temporaries", "save_torch", "write_csv"]

TMP_SUFFIX = ".tmp"


def _process_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: permissions of a new output file: what ``open()`` would give (0o666 less the umask), where
#: ``mkstemp`` alone would leave it readable by its owner only. Read once: setting the umask to
#: read it is not thread-safe.
NEW_FILE_MODE = 0o666 & ~_process_umask()


class OutputError(OSError):
    """An output file could not be written; the previous version of the file (if any) is intact."""


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # platforms without directory file descriptors (Windows)
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w", **open_kwargs) -> Iterator[IO]:
    """Open a temporary file next to ``path`` for writing; on success it replaces ``path`` atomically.

    Args:
        path: the target file; its folder is created if missing.
        mode: ``"w"`` (text) or ``"wb"`` (binary); ``open_kwargs`` go to ``open`` (``newline``, ...).

    Raises:
        OutputError: the folder cannot be created or the file cannot be written (disk full,
            permissions); names the file and keeps its previous version.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=TMP_SUFFIX)
        # a replaced file keeps its permissions, a new one gets open()'s
        os.chmod(tmp, path.stat().st_mode & 0o7777 if path.exists() else NEW_FILE_MODE)
        with os.fdopen(fd, mode, **open_kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        tmp = None
        _fsync_directory(path.parent)
    except OSError as error:
        kept = "the previous version is kept" if path.exists() else "nothing was written"
        raise OutputError(f"could not write {path}: {error.strerror or error} ({kept})") from error
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def save_torch(obj, path: str | Path) -> Path:
    """``torch.save(obj)`` through :func:`atomic_write`."""
    import torch

    with atomic_write(path, "wb") as handle:
        torch.save(obj, handle)
    return Path(path)


def write_csv(path: str | Path, rows: list[dict], fieldnames=None, **writer_options) -> Path:
    """``rows`` as a CSV with a header through :func:`atomic_write`; columns ``fieldnames``
    (default: the first row's keys); ``writer_options`` go to ``csv.DictWriter`` (``restval``,
    ``extrasaction``)."""
    import csv

    with atomic_write(path, newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(fieldnames or rows[0]), **writer_options)
        writer.writeheader()
        writer.writerows(rows)
    return Path(path)


def remove_stale_temporaries(directory: str | Path, names: Iterable[str]) -> list[Path]:
    """Delete the temporary files :func:`atomic_write` left in ``directory`` for the files ``names``.

    Only ``<name>.<anything>.tmp`` files of the given names are touched; returns what was removed.
    """
    directory = Path(directory)
    removed = []
    if not directory.is_dir():
        return removed
    for name in names:
        for tmp in directory.glob(f"{name}.*{TMP_SUFFIX}"):
            if tmp.is_file():
                tmp.unlink()
                removed.append(tmp)
    return removed


def check_writable(directory: str | Path, what: str) -> Path:
    """Create ``directory`` if needed and prove a file can be written in it; :class:`OutputError` if not.

    ``what`` names the setting the folder comes from in the message (e.g. ``train.out_dir``).
    """
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory) as handle:
            handle.write(b"0")
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as error:
        raise OutputError(
            f"{what}: cannot write to {directory}: {error.strerror or error}; choose a writable folder"
        ) from error
    return directory
