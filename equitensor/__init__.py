"""equitensor: E(3)-equivariant deep learning on atoms with interchangeable tensor-product backends.

>>> from equitensor import TensorProduct
>>> tp = TensorProduct("4x0e+4x1o", "0e+1o+2e", "4x0e+4x1o+4x2e", mode="uvu", backend="cg")
>>> tp.weight_numel
28

The torch-facing names are imported on first use, so ``import equitensor.so3`` (pure numpy
tables) does not pull in torch.
"""

from __future__ import annotations

import importlib

from ._e3nn_compat import allow_e3nn_04_constants

allow_e3nn_04_constants()  # before any e3nn import: e3nn 0.4.4 loads pickled constants at import

__version__ = "0.1.0"

_LAZY = {
    "Irrep": "equitensor.irreps",
    "Irreps": "equitensor.irreps",
    "TensorProduct": "equitensor.ops",
    "FullyConnectedTensorProduct": "equitensor.ops",
    "ChannelwiseTensorProduct": "equitensor.ops",
    "Linear": "equitensor.ops",
    "Gate": "equitensor.ops",
    "available_backends": "equitensor.ops.backends",
    "register_backend": "equitensor.ops.backends",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'equitensor' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
