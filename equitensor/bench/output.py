"""Result files of the benchmark harnesses, written through :mod:`equitensor.atomic` (a temp
file, flushed, fsynced and renamed: an interrupted run never leaves a truncated file)."""

from __future__ import annotations

from pathlib import Path

from ..atomic import atomic_write, write_csv

__all__ = ["atomic_write", "save_figure", "with_default_out", "write_csv"]


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
