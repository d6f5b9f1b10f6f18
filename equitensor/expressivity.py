"""Which couplings a backend realises, and how many bilinear maps it can express (Xie et al. 2025).

Expressivity of a bilinear equivariant map ``T: X x Y -> Z`` is the dimension of the set

    { Lin_Z ∘ T_w ∘ (Lin_X, Lin_Y) }      (all weights of T and of the three linear layers)

of bilinear maps reachable by wrapping ``T`` in equivariant linear layers. It is computed
numerically as the rank of the Jacobian of the (sampled) bilinear map with respect to all
parameters at a random point, in float64: the map is evaluated at ``samples`` random input
pairs (enough that ``samples * dim Z`` is at least ``4 x`` the parameter count, so the sampling
keeps the rank), the Jacobian is taken by forward-mode autodiff, and its rank counts singular
values above ``RANK_RTOL * largest``. The setting is MIMO with multiplicity 1 and natural parity
(Xie et al.): ``X = Y = 0e + 1o + ... + L``, ``Z = 0e + 1o + ... + 2L``; with multiplicity 1 an
equivariant linear layer is one scalar per degree (Schur's lemma).

Analytic counts follow from a backend's declared ``parameterization``: ``"per_path"`` backends
(``cg``, ``e3nn``) have one free weight per parity-allowed path, so their expressivity is the
number of paths ``sum_{l1, l2 <= L} (min(l1, l2) + 1) = 1^2 + 2^2 + ... + (L + 1)^2`` (5, 14, 30,
55, 91 for L = 1..5, Xie et al.'s MIMO figures); ``"per_degree"`` backends (``gaunt_*``, ``cp``)
have weights ``a_l1 b_l2 c_l3``: ``(L + 1) + (L + 1) + (2L + 1)`` scalars minus two rescalings,
``4L + 1``. Each backend is built with its ``analysis_options`` (exact, forward-mode
differentiable: ``cp`` at full rank, ``cg`` with its per-path einsum).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ._dtype import default_dtype
from .irreps import Irreps, natural_irreps
from .ops.backends.registry import get_backend
from .ops.tensor_product import TensorProduct

#: singular values below ``RANK_RTOL * sigma_max`` count as zero (the float64 Jacobian's true
#: zeros sit at ~1e-15 relative, the smallest genuine ones at >~1e-4 for L <= 6).
RANK_RTOL = 1e-9


def _analysis_options(backend: str, options: dict) -> dict:
    """The backend's ``analysis_options`` overridden by the caller's."""
    return {**getattr(get_backend(backend), "analysis_options", {}), **options}


def all_parity_irreps(lmax: int) -> Irreps:
    """``0e + 0o + 1o + 1e + ...`` up to ``lmax`` (both parities of every degree)."""
    return Irreps("+".join(f"{l}{p}" for l in range(lmax + 1) for p in "eo"))


def analytic_expressivity(backend: str, lmax: int) -> int:
    """Expected expressivity in the MIMO setting, from the backend's ``parameterization``."""
    parameterization = getattr(get_backend(backend), "parameterization", None)
    if parameterization == "per_path":
        return sum((k + 1) ** 2 for k in range(lmax + 1))
    if parameterization == "per_degree":
        return 4 * lmax + 1
    raise ValueError(
        f"no analytic expressivity for backend {backend!r}: its parameterization is {parameterization!r}, "
        "expected 'per_path' or 'per_degree'"
    )


def mimo_tensor_product(backend: str, lmax: int, **options) -> TensorProduct:
    """The MIMO product ``X x Y -> Z`` of Xie et al. (multiplicity 1, every allowed path, uvu)."""
    options = _analysis_options(backend, options)
    with default_dtype(torch.float64):
        return TensorProduct(
            natural_irreps(lmax), natural_irreps(lmax), natural_irreps(2 * lmax), mode="uvu", backend=backend,
            shared_weights=True, internal_weights=False, **options,
        ).double()  # fmt: skip


@dataclass(frozen=True)
class Expressivity:
    backend: str
    lmax: int
    dimension: int
    analytic: int
    num_parameters: int
    singular_values: np.ndarray

    @property
    def matches(self) -> bool:
        return self.dimension == self.analytic


def expressivity(backend: str, lmax: int, seed: int = 0, rtol: float = RANK_RTOL, **options) -> Expressivity:
    """Numerical expressivity of ``backend`` in the MIMO setting at degree ``lmax``."""
    tp = mimo_tensor_product(backend, lmax, **options)
    irreps_x, irreps_y, irreps_z = tp.irreps_in1, tp.irreps_in2, tp.irreps_out
    generator = torch.Generator().manual_seed(seed)
    n_tp, n_x, n_y, n_z = tp.weight_numel, len(irreps_x), len(irreps_y), len(irreps_z)
    num_parameters = n_tp + n_x + n_y + n_z
    samples = max(8, -(-4 * num_parameters // irreps_z.dim))
    x = torch.randn(samples, irreps_x.dim, generator=generator, dtype=torch.float64)
    y = torch.randn(samples, irreps_y.dim, generator=generator, dtype=torch.float64)
    theta0 = torch.randn(num_parameters, generator=generator, dtype=torch.float64)

    def per_block(scales, irreps):
        return torch.cat([scales[k].expand(ir.dim) for k, (_, ir) in enumerate(irreps)])

    def sampled_map(theta):
        w_tp, s_x, s_y, s_z = torch.split(theta, [n_tp, n_x, n_y, n_z])
        out = tp(x * per_block(s_x, irreps_x), y * per_block(s_y, irreps_y), w_tp if n_tp else None)
        return (out * per_block(s_z, irreps_z)).reshape(-1)

    jacobian = torch.func.jacfwd(sampled_map)(theta0)  # [samples * dim Z, num_parameters]
    singular_values = torch.linalg.svdvals(jacobian).numpy()
    dimension = int((singular_values > rtol * singular_values[0]).sum()) if singular_values.size else 0
    return Expressivity(
        backend, lmax, dimension, analytic_expressivity(backend, lmax), num_parameters, singular_values
    )


@dataclass(frozen=True)
class PathRow:
    backend: str
    ir_in1: str
    ir_in2: str
    ir_out: str
    listed: bool  # in the backend's ``paths``
    nonzero: bool  # verified numerically


def path_table(backend: str, lmax: int, seed: int = 0, **options) -> list[PathRow]:
    """Every parity-allowed coupling between ``all_parity_irreps(lmax)`` (outputs up to ``2 lmax``):
    whether ``backend`` lists it in ``paths`` and whether it is numerically non-zero.

    Backends that do not realise odd couplings (``realises_odd_paths = False``) are built with
    ``allow_subset=True``.
    """
    import warnings

    options = _analysis_options(backend, options)
    if not getattr(get_backend(backend), "realises_odd_paths", True):
        options.setdefault("allow_subset", True)
    a, b, c = all_parity_irreps(lmax), all_parity_irreps(lmax), all_parity_irreps(2 * lmax)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tp = TensorProduct(
            a, b, c, mode="uvu", backend=backend, shared_weights=True, internal_weights=False, **options
        ).double()
    listed = {(p.i_in1, p.i_in2, p.i_out) for p in tp.paths}
    generator = torch.Generator().manual_seed(seed)
    weight = (
        torch.rand(tp.weight_numel, generator=generator, dtype=torch.float64) + 0.5
        if tp.weight_numel
        else None
    )
    s1, s2, so = list(a.slices()), list(b.slices()), list(c.slices())
    rows = []
    for i1, (_, ir1) in enumerate(a):
        for i2, (_, ir2) in enumerate(b):
            x1 = torch.zeros(4, a.dim, dtype=torch.float64)
            x2 = torch.zeros(4, b.dim, dtype=torch.float64)
            x1[:, s1[i1]] = torch.randn(4, ir1.dim, generator=generator, dtype=torch.float64)
            x2[:, s2[i2]] = torch.randn(4, ir2.dim, generator=generator, dtype=torch.float64)
            out = tp(x1, x2, weight)
            for io, (_, ir3) in enumerate(c):
                if ir3 in ir1 * ir2:
                    nonzero = out[:, so[io]].abs().max().item() > 1e-10
                    rows.append(
                        PathRow(backend, str(ir1), str(ir2), str(ir3), (i1, i2, io) in listed, nonzero)
                    )
    return rows
