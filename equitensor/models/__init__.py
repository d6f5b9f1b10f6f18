"""MACE-style interatomic potentials on equitensor's backends, file I/O and an ASE calculator."""

from .calculator import EquitensorCalculator
from .convert import convert_backends
from .from_mace import from_mace
from .graph import atoms_to_graph
from .io import load_model, save_model
from .mace import MACE

__all__ = ["MACE", "EquitensorCalculator", "atoms_to_graph", "convert_backends", "from_mace", "load_model", "save_model"]
