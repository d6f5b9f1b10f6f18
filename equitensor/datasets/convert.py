"""Convert any readable dataset into any writable format of :data:`~equitensor.datasets.formats.FORMATS`."""

from __future__ import annotations

from pathlib import Path

from .dispatch import open_dataset
from .errors import DatasetError
from .formats import FORMATS, format_by_name, format_for_file
from .sources import SourceSpec

__all__ = ["OUTPUT_FORMATS", "convert", "output_format"]

#: writable format name -> description (from FORMATS)
OUTPUT_FORMATS = {fmt.name: fmt.description for fmt in FORMATS if fmt.writer}


def output_format(dst: str | Path) -> str:
    """Output format implied by the destination name (a name without suffix means an S2EF folder)."""
    fmt = format_for_file(dst)
    if fmt is not None and fmt.writer:
        return fmt.name
    if "." not in Path(dst).name:
        return "s2ef"
    raise DatasetError(
        dst,
        "cannot tell the output format from the name",
        hint="pass --format, one of " + ", ".join(OUTPUT_FORMATS),
    )


def convert(
    src: SourceSpec,
    dst: str | Path,
    fmt: str | None = None,
    frames_per_file: int = 5000,
    progress: bool = False,
    **read_opts,
) -> int:
    """Copy every frame of ``src`` into ``dst``; returns the number of frames written.

    ``src`` is anything :func:`open_dataset` reads (a folder of shards, a glob, a list concatenate
    in order). ``read_opts`` go to :func:`open_dataset` (``allow_pickle``, ``energy_key``, ...).
    Frames are read with ``require=()`` unless given, so unlabelled structures convert too;
    labels, tags, fixed atoms, ``sid``/``fid`` and S2EF reference energies are carried over.
    Energies are written as read (total energies unless ``referenced=True`` was passed; S2EF
    output converts referenced energies back to totals).
    """
    fmt = fmt or output_format(dst)
    if fmt not in OUTPUT_FORMATS:
        raise ValueError(f"unknown output format {fmt!r}; choose one of {', '.join(OUTPUT_FORMATS)}")
    dst = Path(dst)
    if dst.exists() and (dst.is_file() or any(dst.iterdir())):
        raise DatasetError(dst, "already exists", hint="choose a new destination; convert never overwrites")
    read_opts.setdefault("require", ())
    reader = open_dataset(src, **read_opts)
    frames = iter(reader)
    if progress:
        from tqdm import tqdm

        frames = tqdm(frames, total=len(reader), desc=f"-> {dst.name}", unit="frame")
    return format_by_name(fmt).write(dst, frames, frames_per_file)
