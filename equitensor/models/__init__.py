"""MACE-style interatomic potentials on equitensor's backends, file I/O and an ASE calculator."""

from .calculator import EquitensorCalculator
from .compiled import CompiledModel, compile_model
from .convert import convert_backends
from .from_mace import from_mace
from .graph import atoms_to_graph
from .io import load_model, save_model
from .mace import MACE

__all__ = [
    "MACE", "CompiledModel", "EquitensorCalculator", "atoms_to_graph", "compile_model", "convert_backends",
    "from_mace", "load_model", "save_model",
]
