"""The output folder of a run (``train.out_dir``): what it holds, and when a run may write into it.

A folder that holds a run is never overwritten silently: a new run needs ``--overwrite``, a
continued one ``--resume``. The folder is proven writable before any data is read, and temporary
files left by a killed writer (see :mod:`equitensor.atomic`) are removed.
"""

from __future__ import annotations

from pathlib import Path

from ..atomic import check_writable, remove_stale_temporaries
from .config import ConfigError

__all__ = ["RUN_FILES", "prepare_out_dir", "remove_run_files"]

#: every file a training run writes into ``train.out_dir``
RUN_FILES = (
    "config.yaml",
    "checkpoint.pt",
    "best_model.pt",
    "metrics.csv",
    "learning_curve.png",
    "test_predictions.csv",
)


def prepare_out_dir(out_dir: str | Path, resume: bool, overwrite: bool) -> list[Path]:
    """Check ``out_dir`` can take this run; return the files of an earlier run that ``--overwrite``
    will replace (delete them with :func:`remove_run_files` once the run is ready to write).

    Raises:
        OutputError: ``out_dir`` cannot be created or written.
        ConfigError: ``out_dir`` holds a run and neither ``resume`` nor ``overwrite`` is set.
    """
    out_dir = Path(out_dir)
    check_writable(out_dir, "train.out_dir")
    remove_stale_temporaries(out_dir, RUN_FILES)
    existing = [out_dir / name for name in RUN_FILES if (out_dir / name).exists()]
    if resume or not existing:
        return []
    if not overwrite:
        names = ", ".join(path.name for path in existing)
        how = (
            "continue it with --resume, or " if (out_dir / "checkpoint.pt").exists() else ""
        ) + "replace it with --overwrite, or set another train.out_dir"
        raise ConfigError(f"train.out_dir={out_dir} already holds a run ({names}); {how}")
    return existing


def remove_run_files(paths: list[Path]) -> None:
    """Delete the files of the run being replaced (``--overwrite``) so none describes the new run."""
    for path in paths:
        if path.exists():
            path.unlink()
