"""equitensor: E(3)-equivariant deep learning on atoms with interchangeable tensor-product backends.

>>> from equitensor import TensorProduct
>>> tp = TensorProduct("4x0e+4x1o", "0e+1o+2e", "4x0e+4x1o+4x2e", mode="uvu", backend="cg")
>>> tp.weight_numel
28
"""

from .irreps import Irrep, Irreps
from .ops import ChannelwiseTensorProduct, FullyConnectedTensorProduct, Gate, Linear, TensorProduct
from .ops.backends import available_backends, register_backend

__version__ = "0.1.0"

__all__ = [
    "ChannelwiseTensorProduct",
    "FullyConnectedTensorProduct",
    "Gate",
    "Irrep",
    "Irreps",
    "Linear",
    "TensorProduct",
    "available_backends",
    "register_backend",
]
