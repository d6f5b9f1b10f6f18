"""MACE-style interatomic potentials on equitensor's backends, file I/O and an ASE calculator."""

from .calculator import EquitensorCalculator
from .compiled import CompiledModel, compile_model
from .graph import atoms_to_graph
from .io import load_model, save_model
from .mace import MACE

__all__ = ["MACE", "CompiledModel", "EquitensorCalculator", "compile_model", "atoms_to_graph", "load_model", "save_model"]
