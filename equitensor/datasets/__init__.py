"""Datasets: lazy readers of labelled ``ase.Atoms`` frames, graph conversion and neighbour lists.

Start with :func:`open_dataset` (any supported format -> reader) and :class:`GraphDataset`
(reader -> torch Dataset of graphs); see ``docs/datasets.md``.
"""

from .asedb import AseDBReader, TrajectoryReader, write_ase_db
from .base import FrameReader
from .demo import demo_dataset_path, make_demo_dataset
from .dispatch import ACCEPTED_FORMATS, detect_format, open_dataset
from .errors import DatasetError
from .extxyz import ExtXYZReader, write_extxyz
from .formats import FORMATS, DatasetFormat
from .frames import fixed_mask, frame_labels
from .graph import AtomsToGraph, GraphDataset, free_atom_mask
from .lmdb import PyGLmdbReader, write_pyg_lmdb
from .neighbors import neighbor_list
from .oc20 import S2EFReader, write_s2ef
from .sources import ConcatReader, expand_sources
from .tags import infer_tags

__all__ = [
    "ACCEPTED_FORMATS",
    "AseDBReader",
    "AtomsToGraph",
    "ConcatReader",
    "DatasetError",
    "DatasetFormat",
    "ExtXYZReader",
    "FORMATS",
    "FrameReader",
    "GraphDataset",
    "PyGLmdbReader",
    "S2EFReader",
    "TrajectoryReader",
    "demo_dataset_path",
    "detect_format",
    "expand_sources",
    "fixed_mask",
    "frame_labels",
    "free_atom_mask",
    "infer_tags",
    "make_demo_dataset",
    "neighbor_list",
    "open_dataset",
    "write_ase_db",
    "write_extxyz",
    "write_pyg_lmdb",
    "write_s2ef",
]
