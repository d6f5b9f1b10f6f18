"""Name -> backend class, for tensor products and for many-body product bases.

Built-in backends are imported lazily (importing ``equitensor`` does not build any table).
Third-party packages register theirs under the entry-point group ``equitensor.backends``::

    [project.entry-points."equitensor.backends"]
    my_backend = "my_package.module:MyBackend"

A backend class subclasses :class:`~equitensor.ops.backends.base.TensorProductBackend`.
Product-basis (many-body) backends register the same way under ``equitensor.product_basis``
and subclass :class:`~equitensor.ops.backends.base.ProductBasisBackend`.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from importlib import metadata

#: built-in backends that need an optional package: name -> (module it needs, how to install it).
OPTIONAL_BACKENDS = {
    "cueq": (
        "cuequivariance_torch",
        'pip install "equitensor[cueq]" (on a GPU machine also pip install cuequivariance-ops-torch-cu12 '
        "for the CUDA kernels)",
    ),
}


def _importable(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it (``sys.modules[module] = None`` hides it)."""
    if module in sys.modules:
        return sys.modules[module] is not None
    return importlib.util.find_spec(module) is not None


class _Registry:
    """Built-in names (imported lazily), registered classes and entry points of one kind."""

    def __init__(self, kind: str, group: str, builtin: dict[str, str]):
        self.kind, self.group, self.builtin = kind, group, builtin
        self.registered: dict[str, type] = {}

    def register(self, name: str, cls: type | None = None):
        def add(backend_cls):
            if name in self.registered and self.registered[name] is not backend_cls:
                raise ValueError(f"a different {self.kind} backend is already registered as {name!r}")
            self.registered[name] = backend_cls
            return backend_cls

        return add if cls is None else add(cls)

    def entry_points(self) -> dict[str, metadata.EntryPoint]:
        return {ep.name: ep for ep in metadata.entry_points(group=self.group)}

    def available_builtin(self) -> set[str]:
        """Built-in names whose optional package (if any) is installed."""
        return {
            name
            for name in self.builtin
            if name not in OPTIONAL_BACKENDS or _importable(OPTIONAL_BACKENDS[name][0])
        }

    def names(self) -> list[str]:
        return sorted(self.available_builtin() | set(self.registered) | set(self.entry_points()))

    def get(self, name: str) -> type:
        if not isinstance(name, str):
            raise ValueError(f"{self.kind} backend must be a name (str), got {type(name).__name__}")
        if name in self.registered:
            return self.registered[name]
        if name in self.builtin:
            if name in OPTIONAL_BACKENDS and not _importable(OPTIONAL_BACKENDS[name][0]):
                needed, install = OPTIONAL_BACKENDS[name]
                raise ImportError(
                    f"{self.kind} backend {name!r} needs the optional package {needed!r}, which is not "
                    f"installed: {install}"
                )
            module, attr = self.builtin[name].split(":")
            cls = getattr(importlib.import_module(module), attr)
        else:
            entry = self.entry_points().get(name)
            if entry is None:
                raise ValueError(
                    f"unknown {self.kind} backend {name!r}; available: {', '.join(self.names())}"
                )
            cls = entry.load()
        self.registered[name] = cls
        return cls


ENTRY_POINT_GROUP = "equitensor.backends"
PRODUCT_BASIS_ENTRY_POINT_GROUP = "equitensor.product_basis"

TENSOR_PRODUCTS = _Registry(
    "tensor-product",
    ENTRY_POINT_GROUP,
    {
        "cg": "equitensor.ops.backends.cg:CGBackend",
        "e3nn": "equitensor.ops.backends.e3nn_adapter:E3nnBackend",
        "gaunt_grid": "equitensor.ops.backends.gaunt_grid:GauntGridBackend",
        "gaunt_fft": "equitensor.ops.backends.gaunt_fft:GauntFFTBackend",
        "cp": "equitensor.ops.backends.cp:CPBackend",
        "cueq": "equitensor.ops.backends.cueq:CueqBackend",
        "vsh": "equitensor.ops.backends.vsh:VSHBackend",
    },
)
PRODUCT_BASES = _Registry(
    "product-basis",
    PRODUCT_BASIS_ENTRY_POINT_GROUP,
    {
        "cg": "equitensor.ops.backends.symmetric_contraction:SymmetricContractionBackend",
        "gaunt_grid": "equitensor.ops.backends.gaunt_product_basis:GauntGridProductBasis",
        "gaunt_fft": "equitensor.ops.backends.gaunt_product_basis:GauntFFTProductBasis",
        "cp": "equitensor.ops.backends.gaunt_product_basis:CPProductBasis",
        "cueq": "equitensor.ops.backends.cueq_product_basis:CueqSymmetricContraction",
    },
)


def register_backend(name: str, cls: type | None = None):
    """Register a tensor-product backend (usable as a decorator: ``@register_backend("mine")``)."""
    return TENSOR_PRODUCTS.register(name, cls)


def available_backends() -> list[str]:
    """Names accepted by ``TensorProduct(..., backend=name)``."""
    return TENSOR_PRODUCTS.names()


def get_backend(name: str) -> type:
    """The tensor-product backend class ``name``; ``ValueError`` listing the known names otherwise."""
    return TENSOR_PRODUCTS.get(name)


def register_product_basis(name: str, cls: type | None = None):
    """Register a many-body product-basis backend."""
    return PRODUCT_BASES.register(name, cls)


def available_product_bases() -> list[str]:
    """Names accepted by ``ProductBasis(..., backend=name)`` / ``MACE(product_backend=name)``."""
    return PRODUCT_BASES.names()


def get_product_basis(name: str) -> type:
    """The product-basis backend class ``name``; ``ValueError`` listing the known names otherwise."""
    return PRODUCT_BASES.get(name)
