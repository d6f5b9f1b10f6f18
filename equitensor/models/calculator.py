"""ASE calculator for equitensor models."""

from __future__ import annotations

import numpy as np
import torch
from ase.calculators.calculator import Calculator, all_changes
from ase.stress import full_3x3_to_voigt_6_stress
from torch_geometric.data import Batch

from .compiled import compile_model
from .graph import atoms_to_graph, unknown_element_error
from .io import DTYPES as _DTYPES
from .io import load_model


class EquitensorCalculator(Calculator):
    """Energy (eV), forces (eV/Å), stress (Voigt, eV/Å^3, periodic systems) and per-atom energies.

    Args:
        model_or_path: a :class:`~equitensor.models.MACE` or a file written by ``save_model``.
        device: torch device the model runs on.
        default_dtype: ``"float64"`` (default, for relaxations and MD) or ``"float32"``; the model
            is cast to it.
        compile: ``True`` runs the model through :func:`~equitensor.models.compile_model`
            (``torch.compile``, fullgraph, dynamic atom and edge counts: one compilation for a
            whole MD run), or a dict of options for it (e.g. ``{"backend": "aot_eager"}``).

    The structure is validated on the host when its graph is built (finite positions, a
    regular periodic cell, known elements), so the model runs without host-device syncs.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "energies"]

    def __init__(
        self,
        model_or_path,
        device: str = "cpu",
        default_dtype: str = "float64",
        compile: bool | dict = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if default_dtype not in _DTYPES:
            raise ValueError(f"default_dtype must be one of {sorted(_DTYPES)}, got {default_dtype!r}")
        is_path = isinstance(model_or_path, str) or hasattr(model_or_path, "__fspath__")
        model = load_model(model_or_path) if is_path else model_or_path
        self.dtype = _DTYPES[default_dtype]
        self.device = torch.device(device)
        self.model = model.to(device=self.device, dtype=self.dtype).eval()  # casts a passed model in place
        self._run = self._checked_model
        if compile:
            self._run = compile_model(self.model, **(compile if isinstance(compile, dict) else {}))

    def _checked_model(self, batch, compute_forces: bool, compute_stress: bool):
        # atoms_to_graph and the element check above validated the structure
        return self.model(batch, compute_forces=compute_forces, compute_stress=compute_stress, check_inputs=False)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        graph = atoms_to_graph(self.atoms, self.model.r_max, dtype=self.dtype)
        batch = Batch.from_data_list([graph]).to(self.device)
        periodic = bool(np.any(self.atoms.pbc))
        known = np.isin(self.atoms.numbers, self.model.atomic_numbers)
        if not known.all():
            k = int(np.flatnonzero(~known)[0])
            raise unknown_element_error(k, int(self.atoms.numbers[k]), self.model.atomic_numbers)
        out = self._run(batch, compute_forces=True, compute_stress=periodic)
        energy = float(out["energy"].detach().cpu()[0])
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "forces": out["forces"].detach().cpu().numpy().astype(np.float64),
            "energies": out["node_energy"].detach().cpu().numpy().astype(np.float64),
        }
        if periodic:
            self.results["stress"] = full_3x3_to_voigt_6_stress(out["stress"].detach().cpu().numpy()[0])
