"""MACE-style interatomic potentials on equitensor's backends, a registry of architectures, file
I/O and an ASE calculator."""

from .calculator import EquitensorCalculator
from .compiled import CompiledModel, compile_model
from .convert import convert_backends
from .from_mace import from_mace
from .graph import atoms_to_graph
from .io import load_model, save_model
from .mace import MACE
from .registry import get_model_class, register_model, registered_models

__all__ = [
    "MACE", "CompiledModel", "EquitensorCalculator", "atoms_to_graph", "compile_model", "convert_backends",
    "from_mace", "get_model_class", "load_model", "register_model", "registered_models", "save_model",
]
