"""Tensor-product and product-basis backends and their registries."""

from .base import Path, ProductBasisBackend, TensorProductBackend
from .registry import (
    available_backends,
    available_product_bases,
    get_backend,
    get_product_basis,
    register_backend,
    register_product_basis,
)

__all__ = [
    "Path",
    "ProductBasisBackend",
    "TensorProductBackend",
    "available_backends",
    "available_product_bases",
    "get_backend",
    "get_product_basis",
    "register_backend",
    "register_product_basis",
]
