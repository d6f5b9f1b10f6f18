"""``ProductBasis``: MACE's many-body product basis with interchangeable backends (``backend="cg" | ...``)."""

from __future__ import annotations

import torch

from ..irreps import Irreps, check_last_dim
from .backends.registry import get_product_basis


class ProductBasis(torch.nn.Module):
    """Element-dependent polynomial of degree ``correlation`` in the node features (equivariant).

    Args:
        irreps_in: node features, one multiplicity for all blocks (e.g. ``128x0e+128x1o+128x2e+128x3o``).
        irreps_out: output irreps with the same multiplicity (e.g. ``128x0e+128x1o``).
        correlation: highest order ``nu`` (body order minus one), >= 1.
        num_elements: number of chemical elements (length of the one-hot).
        backend: a name from :func:`~equitensor.ops.backends.registry.available_product_bases`
            (``"cg"``: MACE's symmetric contraction; others from the registry).
        **options: passed to the backend.

    Call ``pb(x [N, irreps_in.dim], element_onehot [N, num_elements]) -> [N, irreps_out.dim]``
    (mul_ir layout).
    """

    def __init__(
        self, irreps_in, irreps_out, correlation: int, num_elements: int, backend: str = "cg", **options
    ):
        super().__init__()
        backend_cls = get_product_basis(backend)
        self.backend_name = backend
        self.impl = backend_cls(irreps_in, irreps_out, correlation, num_elements, **options)
        self.num_elements = int(num_elements)
        self._dim_in = self.impl.irreps_in.dim  # an int for forward (traced code must not touch Irrep objects)

    @property
    def irreps_in(self) -> Irreps:
        return self.impl.irreps_in

    @property
    def irreps_out(self) -> Irreps:
        return self.impl.irreps_out

    @property
    def paths(self):
        return getattr(self.impl, "paths", ())

    def forward(self, x: torch.Tensor, element_onehot: torch.Tensor) -> torch.Tensor:
        check_last_dim(x, self.irreps_in, "x", self._dim_in)
        if element_onehot.shape != (x.shape[0], self.num_elements):
            raise ValueError(
                f"element_onehot has shape {tuple(element_onehot.shape)}; expected [{x.shape[0]}, {self.num_elements}]"
            )
        return self.impl(x, element_onehot)

    def extra_repr(self) -> str:
        return f"backend={self.backend_name!r}"
