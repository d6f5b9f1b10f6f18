"""MACE-style interatomic potentials on equitensor's backends, file I/O and an ASE calculator."""

from .graph import atoms_to_graph
from .io import load_model, save_model
from .mace import MACE
from .calculator import EquitensorCalculator

__all__ = ["MACE", "EquitensorCalculator", "atoms_to_graph", "load_model", "save_model"]
