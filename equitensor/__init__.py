"""equitensor: E(3)-equivariant deep learning on atoms with interchangeable tensor-product backends."""

__version__ = "0.1.0"
