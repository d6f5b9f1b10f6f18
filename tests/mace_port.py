"""Test-only: copy a mace-torch ``ScaleShiftMACE`` state_dict written by ``tests/mace_reference.py``
in another venv into our MACE, with the phases of that venv's e3nn ``wigner_3j`` tables.

The conversion itself is ``equitensor.models.from_mace`` (see its module docstring); this path
exercises it on a model that lives in another process.
"""

from __future__ import annotations

from equitensor.models.from_mace import port_state_dict, wigner_3j_sign_from_tables


def port_mace_state_dict(model, state: dict, w3j_mace: dict) -> dict:
    """Load mace-torch weights ``state`` into our ``model`` (same hyper-parameters); see ``port_state_dict``."""
    return port_state_dict(model, state, wigner_3j_sign_from_tables(w3j_mace))
