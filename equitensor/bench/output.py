"""Result files of the benchmark harnesses: written to a temp file, flushed, fsynced and renamed."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_write(path: Path, mode: str = "w", **open_kwargs):
    """Open a temp file beside ``path`` for writing; on success it replaces ``path`` in one rename.

    An interrupted run leaves the previous file (or none) in place, never a truncated one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, mode, **open_kwargs) as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise


def save_figure(figure, path: Path, **savefig_kwargs) -> None:
    """``figure.savefig`` through :func:`atomic_write` (the format follows ``path``'s suffix)."""
    path = Path(path)
    with atomic_write(path, "wb") as stream:
        figure.savefig(stream, format=path.suffix.lstrip(".") or "png", **savefig_kwargs)


def with_default_out(argv: list[str], folder: Path) -> list[str]:
    """``argv`` plus ``--out folder`` unless it names an output already (``--out``, ``--output``).

    The scripts under ``benchmarks/`` use it so a run from the repository lands in
    ``benchmarks/results/``, while the ``equitensor bench`` commands write to the current directory.
    """
    names = ("--out", "--output")
    if any(arg in names or arg.startswith(tuple(f"{n}=" for n in names)) for arg in argv):
        return list(argv)
    return [*argv, "--out", str(folder)]
